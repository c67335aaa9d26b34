"""`/v1` streams as OpenAI sends them: `data: {chunk}` events, then `data: [DONE]`.

Errors before the first chunk (queue full, prompt too long, bad tool results) are plain HTTP
errors in OpenAI's shape, as with `/stream`; an error after it is one `data: {"error": ...}`
event before `[DONE]` (what vLLM sends). The role chunk goes out only once the step's first
event has come, so it never precedes an error. A client that disconnects cancels the stream,
which closes the step and the engine's generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from toolrpc.chat.conversation import DoneEvent, StepEvent
from toolrpc.engines.base import Chunk
from toolrpc.errors import ToolRpcError
from toolrpc.openai_protocol import TextChoice, TextCompletion
from toolrpc.server.openai.errors import error_payload, openai_error
from toolrpc.server.openai.translate import ChunkStream, Completion, completion_usage
from toolrpc.server.sse import CLIENT_CLOSED_REQUEST, first_event
from toolrpc.types import JSONObject

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def encode(payload: JSONObject) -> bytes:
    """One `data:` event."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def chat_chunks(
    events: AsyncGenerator[StepEvent, None], chunks: ChunkStream, *, include_usage: bool
) -> AsyncGenerator[JSONObject, None]:
    """The `chat.completion.chunk` payloads of a step: the role chunk once the first event
    came, each event's chunks, and with `include_usage` the usage chunk last."""
    is_first = True
    try:
        async for event in events:
            if is_first:
                yield chunks.role().to_json(with_usage_field=include_usage)
                is_first = False
            for chunk in chunks.of_event(event):
                yield chunk.to_json(with_usage_field=include_usage)
            if include_usage and isinstance(event, DoneEvent):
                yield chunks.usage(event.result.usage).to_json(with_usage_field=True)
    finally:
        await events.aclose()


async def text_chunks(
    pieces: AsyncGenerator[Chunk, None], completion: Completion, *, include_usage: bool
) -> AsyncGenerator[JSONObject, None]:
    """The `text_completion` payloads of a plain-text generation, the usage last if asked."""
    c = completion
    try:
        async for piece in pieces:
            if piece.text or piece.finish_reason is not None:
                choice = TextChoice(text=piece.text, finish_reason=piece.finish_reason)
                payload = TextCompletion(
                    id=c.id, created=c.created, model=c.model, choices=[choice]
                ).model_dump(mode="json")
                if not include_usage:
                    del payload["usage"]
                yield payload
            if include_usage and piece.usage is not None:
                usage = completion_usage(piece.usage)
                yield TextCompletion(
                    id=c.id, created=c.created, model=c.model, choices=[], usage=usage
                ).model_dump(mode="json")
    finally:
        await pieces.aclose()


async def sse_response(request: Request, payloads: AsyncGenerator[JSONObject, None]) -> Response:
    """Wait for the first payload (or the client leaving), then stream the rest."""
    try:
        first = await first_event(request, payloads)
    except ToolRpcError as exc:
        await payloads.aclose()
        return openai_error(exc)
    if first is None:
        await payloads.aclose()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return StreamingResponse(
        _encoded(first, payloads), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _encoded(
    first: JSONObject, payloads: AsyncGenerator[JSONObject, None]
) -> AsyncGenerator[bytes, None]:
    try:
        yield encode(first)
        async for payload in payloads:
            yield encode(payload)
    except ToolRpcError as exc:
        yield encode(error_payload(exc))
    except Exception:
        logger.exception("stream failed")
        yield encode(error_payload(ToolRpcError("internal error")))
    finally:
        await payloads.aclose()
    yield DONE
