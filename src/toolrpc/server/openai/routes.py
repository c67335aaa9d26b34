"""The `/v1` routes: read the body within its limit, parse it, check the model, hand it to the
service, lay out what comes back (translate.py, stream.py). Nothing else happens here."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from toolrpc.chat.conversation import DoneEvent, StepEvent
from toolrpc.engines.base import Chunk
from toolrpc.errors import MethodNotFound, ToolRpcError
from toolrpc.openai_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    CompletionUsage,
    ModelCard,
    ModelList,
    TextChoice,
    TextCompletion,
)
from toolrpc.rpc import parse_params
from toolrpc.server.body import read_body
from toolrpc.server.metrics import ServerMetrics
from toolrpc.server.openai.errors import openai_error
from toolrpc.server.openai.stream import chat_chunks, sse_response, text_chunks
from toolrpc.server.openai.translate import (
    ChunkStream,
    Completion,
    chat_completion,
    check_model,
    completion_options,
    completion_usage,
    step_request,
)
from toolrpc.server.sse import CLIENT_CLOSED_REQUEST, first_event
from toolrpc.service import ToolRpcService
from toolrpc.types import JSONObject


def add_openai_routes(
    app: FastAPI,
    service: ToolRpcService,
    metrics: ServerMetrics,
    *,
    served_model: str,
    max_body_bytes: int,
) -> None:
    """Mount `/v1/models`, `/v1/chat/completions`, `/v1/completions` and a `/v1` 404 on `app`,
    serving the model under the name `served_model`."""
    created = int(time.time())
    card = ModelCard(id=served_model, created=created)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(ModelList(data=[card]).model_dump(mode="json"))

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Response:
        try:
            check_model(model_id, served_model)
        except ToolRpcError as exc:
            return openai_error(exc)
        return JSONResponse(card.model_dump(mode="json"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await metrics.measure("/v1/chat/completions", _chat(request))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await metrics.measure("/v1/completions", _text(request))

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown(request: Request, path: str) -> Response:
        return openai_error(MethodNotFound(f"no route {request.method} /v1/{path}"))

    async def _chat(request: Request) -> Response:
        try:
            body = await read_body(request, max_body_bytes)
            params = parse_params(body, ChatCompletionRequest)
            check_model(params.model, served_model)
            limit = service.max_new_tokens_limit
            events = service.step(step_request(params, max_new_tokens_limit=limit))
        except ToolRpcError as exc:
            return openai_error(exc)
        completion = Completion(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), served_model)
        if params.stream:
            payloads = chat_chunks(
                events, ChunkStream(completion), include_usage=params.includes_usage
            )
            return await sse_response(request, payloads)
        try:
            done = await first_event(request, _last_of(events))
        except ToolRpcError as exc:
            return openai_error(exc)
        if done is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return JSONResponse(chat_completion(done.result, completion).model_dump(mode="json"))

    async def _text(request: Request) -> Response:
        try:
            body = await read_body(request, max_body_bytes)
            params = parse_params(body, CompletionRequest)
            check_model(params.model, served_model)
            options = completion_options(params, service.max_new_tokens_limit)
            pieces = service.complete_text(params.prompt_text(), options)
        except ToolRpcError as exc:
            return openai_error(exc)
        completion = Completion(f"cmpl-{uuid.uuid4().hex}", int(time.time()), served_model)
        if params.stream:
            payloads = text_chunks(pieces, completion, include_usage=params.includes_usage)
            return await sse_response(request, payloads)
        try:
            whole = await first_event(request, _whole_text(pieces, completion))
        except ToolRpcError as exc:
            return openai_error(exc)
        if whole is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return JSONResponse(whole)


async def _last_of(events: AsyncGenerator[StepEvent, None]) -> AsyncGenerator[DoneEvent, None]:
    """The step's `DoneEvent`, as a one-item stream (so a disconnect can cancel the wait)."""
    try:
        async for event in events:
            if isinstance(event, DoneEvent):
                yield event
                return
    finally:
        await events.aclose()
    raise ToolRpcError("the conversation step ended without a result")


async def _whole_text(
    pieces: AsyncGenerator[Chunk, None], completion: Completion
) -> AsyncGenerator[JSONObject, None]:
    """A plain-text generation gathered into one `text_completion`, as a one-item stream."""
    text: list[str] = []
    last = Chunk("")
    try:
        async for piece in pieces:
            text.append(piece.text)
            last = piece
    finally:
        await pieces.aclose()
    usage = completion_usage(last.usage) if last.usage is not None else None
    choice = TextChoice(text="".join(text), finish_reason=last.finish_reason or "stop")
    yield TextCompletion(
        id=completion.id,
        created=completion.created,
        model=completion.model,
        choices=[choice],
        usage=usage or CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
    ).model_dump(mode="json")
