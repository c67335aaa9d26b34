"""The HTTP application: `/rpc`, `/stream`, `/v1` (OpenAI-compatible, server/openai),
`/health`, `/metrics` (FastAPI lives only here).

`create_app(settings, engine=...)` builds the service over a loaded engine
(`ToolRpcService.from_settings`, the composition root) and keeps it on `app.state`; nothing is
global, so tests build a fresh app each. The routes only route: read the body within its limit,
hand it to the JSON-RPC dispatcher or the service, encode what comes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from toolrpc.config import Settings
from toolrpc.engines.base import Engine
from toolrpc.engines.upstream import UpstreamPool
from toolrpc.errors import BodyTooLarge, ToolRpcError
from toolrpc.protocol import CreateMessageParams
from toolrpc.rpc import Dispatcher, error_object, parse_params
from toolrpc.server.body import read_body
from toolrpc.server.errors import error_response
from toolrpc.server.gate import Gate, GatePolicy
from toolrpc.server.keys import ApiKeys
from toolrpc.server.metrics import CONTENT_TYPE, ServerMetrics
from toolrpc.server.openai import add_openai_routes
from toolrpc.server.playground import add_playground
from toolrpc.server.sse import stream_response
from toolrpc.server.upstream_health import UpstreamCollector, upstream_health
from toolrpc.service import ToolRpcService, served_model_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppState:
    """What the routes use."""

    engine: Engine
    service: ToolRpcService
    dispatcher: Dispatcher


def create_app(settings: Settings, *, engine: Engine, close_engine: bool = False) -> FastAPI:
    """The application over a loaded `engine`; with `close_engine` it closes the engine when
    the app shuts down. Raises `ValueError` when the settings' tools file, API keys file or
    sessions database cannot be read."""
    keys = ApiKeys.of(settings.api_key, settings.api_keys_file)
    service = ToolRpcService.from_settings(engine, settings)
    sessions = service.sessions
    metrics = ServerMetrics(
        engine.stats, (lambda: sessions.store.num_sessions) if sessions is not None else None
    )
    service.observer = metrics
    state = AppState(
        engine=engine,
        service=service,
        dispatcher=Dispatcher(
            service.methods(), max_batch_size=settings.max_batch_requests, on_call=metrics.rpc_call
        ),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        logger.info("toolrpc ready: model %s", engine.info.model_name)
        if isinstance(engine, UpstreamPool):
            engine.start()
        expiry = None
        if service.sessions is not None:
            every_s = min(60.0, service.sessions.ttl_s / 4)
            expiry = asyncio.create_task(service.sessions.expire_forever(every_s))
        try:
            yield
        finally:
            service.shutdown.expire()
            if expiry is not None:
                expiry.cancel()
                await asyncio.gather(expiry, return_exceptions=True)
            await service.aclose()
            if close_engine:
                await engine.aclose()

    app = FastAPI(title="toolrpc", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.toolrpc = state
    if isinstance(engine, UpstreamPool):
        metrics.registry.register(UpstreamCollector(engine.replica_stats))
    add_playground(app)
    policy = GatePolicy(keys, service.shutdown, settings.max_concurrent_per_key)
    app.add_middleware(Gate, policy=policy)

    @app.get("/health")
    async def health() -> JSONResponse:
        info = engine.info
        payload: dict[str, object] = {
            "status": "ok",
            "model": info.model_name,
            "context_length": info.context_length,
        }
        status = 200
        if isinstance(engine, UpstreamPool):
            status, fields = upstream_health(engine.replica_stats())
            payload.update(fields)
        return JSONResponse(payload, status_code=status)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    add_openai_routes(
        app,
        service,
        metrics,
        served_model=served_model_name(engine, settings),
        max_body_bytes=settings.max_body_bytes,
    )

    @app.post("/rpc")
    async def rpc(request: Request) -> Response:
        return await metrics.measure("/rpc", _rpc(request))

    @app.post("/stream")
    async def stream(request: Request) -> Response:
        return await metrics.measure("/stream", _stream(request))

    async def _rpc(request: Request) -> Response:
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyTooLarge as exc:
            return _json(error_object(exc, None), exc.http_status)
        answer = await state.dispatcher.handle(body)
        if answer is None:
            return Response(status_code=204)
        return _json(answer, 200)

    async def _stream(request: Request) -> Response:
        try:
            body = await read_body(request, settings.max_body_bytes)
            params = parse_params(body, CreateMessageParams)
            events = state.service.stream_message(params)
        except ToolRpcError as exc:
            return error_response(exc)
        return await stream_response(request, events)

    return app


def _json(payload: object, status: int) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")
