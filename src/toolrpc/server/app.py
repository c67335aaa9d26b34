"""The HTTP application: `/rpc`, `/stream`, `/health` (FastAPI lives only in this package).

`create_app(settings, engine=...)` builds everything a server needs and keeps it on
`app.state`; nothing is global, so tests build a fresh app each. Given an `engine`, the app is
ready at once (in-process test clients need no lifespan); without one it loads the configured
model when it starts, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from toolrpc.chat.conversation import ChatSession
from toolrpc.chat.router import ToolRouter
from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE, ChatTemplate
from toolrpc.config import Settings
from toolrpc.engines.base import Engine
from toolrpc.errors import InvalidParams, ParamError, ToolRpcError
from toolrpc.protocol import CreateMessageParams
from toolrpc.rpc import Dispatcher
from toolrpc.server.body import BodyTooLarge, read_body
from toolrpc.server.errors import error_response, too_large_response
from toolrpc.server.metrics import CONTENT_TYPE, ServerMetrics
from toolrpc.server.sse import stream_response
from toolrpc.service import ToolRpcService, load_tools

logger = logging.getLogger(__name__)

EngineLoader = Callable[[Settings], Engine]


@dataclass
class AppState:
    """What the routes use, built once the engine is ready."""

    engine: Engine
    service: ToolRpcService
    dispatcher: Dispatcher


def build_state(settings: Settings, engine: Engine) -> AppState:
    """Wire the chat layer, service and dispatcher around an engine."""
    info = engine.info
    template = ChatTemplate(
        info.chat_template or DEFAULT_CHATML_TEMPLATE,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
    )
    tools = load_tools(settings.tools) if settings.tools else []
    use_router = settings.tool_router == "on" or (
        settings.tool_router == "auto" and not template.renders_tools
    )
    router = ToolRouter(engine, bias=settings.tool_router_bias) if use_router else None
    service = ToolRpcService(
        ChatSession(
            engine,
            template,
            router=router,
            ground_arguments=use_router and settings.ground_arguments,
        ),
        tools=tools,
        max_new_tokens_limit=settings.max_new_tokens_limit,
    )
    dispatcher = Dispatcher(service.methods(), max_batch_size=settings.max_batch_requests)
    return AppState(engine=engine, service=service, dispatcher=dispatcher)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    load_engine: EngineLoader | None = None,
    close_engine: bool = False,
) -> FastAPI:
    """Build the application; see the module docstring."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: AppState | None = app.state.toolrpc
        if state is None:
            from toolrpc.engines.factory import load_engine as default_loader

            loader = load_engine or default_loader
            state = build_state(settings, await asyncio.to_thread(loader, settings))
            app.state.toolrpc = state
        logger.info("toolrpc ready: model %s", state.engine.info.model_name)
        try:
            yield
        finally:
            if engine is None or close_engine:
                await state.engine.aclose()

    app = FastAPI(title="toolrpc", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.toolrpc = build_state(settings, engine) if engine is not None else None
    app.state.settings = settings
    metrics = ServerMetrics(lambda: app.state.toolrpc.engine.stats() if app.state.toolrpc else None)

    def state_of(request: Request) -> AppState:
        state: AppState | None = request.app.state.toolrpc
        if state is None:
            raise ToolRpcError("the model is still loading")
        return state

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        state: AppState | None = request.app.state.toolrpc
        if state is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        info = state.engine.info
        return JSONResponse(
            {"status": "ok", "model": info.model_name, "context_length": info.context_length}
        )

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

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
            return too_large_response(str(exc))
        answer = await state_of(request).dispatcher.handle(body)
        if answer is None:
            return Response(status_code=204)
        return Response(json.dumps(answer), media_type="application/json")

    async def _stream(request: Request) -> Response:
        try:
            body = await read_body(request, settings.max_body_bytes)
            params = _stream_params(body)
            events = state_of(request).service.stream_message(params)
        except BodyTooLarge as exc:
            return too_large_response(str(exc))
        except ToolRpcError as exc:
            return error_response(exc)
        return await stream_response(request, events)

    return app


def _stream_params(body: bytes) -> CreateMessageParams:
    """Parse a `/stream` body: plain `create_message` params. Raises InvalidParams."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidParams("the body is not valid JSON", [ParamError((), str(exc))]) from None
    if not isinstance(data, dict):
        raise InvalidParams("the body must be a JSON object of create_message params")
    try:
        return CreateMessageParams.model_validate(data)
    except ValidationError as exc:
        raise InvalidParams.from_validation(exc) from None
