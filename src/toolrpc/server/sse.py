"""`/stream` as Server-Sent Events: the one place step events become SSE.

Events (docs/protocol.md): `{"delta"}` for text, `{"tool_calls"}` when the model asks for tools,
`{"error", "code"}` on a failure after the stream started, and last `{"done", "result"}`.
Errors before the first event (queue full, prompt too long, bad tool results) are plain HTTP
errors instead, so a client can tell them apart without reading a stream. A client that
disconnects cancels the step, which closes the engine's generation and frees its slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import Request, Response
from fastapi.sse import EventSourceResponse, format_sse_event

from toolrpc.chat.conversation import DeltaEvent, StepEvent, ToolCallsEvent
from toolrpc.errors import ToolRpcError
from toolrpc.server.errors import error_response
from toolrpc.types import JSONObject

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
T = TypeVar("T")


def event_payload(event: StepEvent) -> JSONObject:
    """The JSON object sent for one step event."""
    if isinstance(event, DeltaEvent):
        return {"delta": event.text}
    if isinstance(event, ToolCallsEvent):
        return {"tool_calls": [call.model_dump(mode="json") for call in event.calls]}
    return {"done": True, "result": event.result.model_dump(mode="json", exclude_none=True)}


def encode(payload: JSONObject) -> bytes:
    """One SSE `data:` event."""
    return format_sse_event(data_str=json.dumps(payload))


async def stream_response(request: Request, events: AsyncIterator[StepEvent]) -> Response:
    """Wait for the first event (or the client leaving), then stream the rest as SSE."""
    try:
        first = await first_event(request, events)
    except ToolRpcError as exc:
        await _close(events)
        return error_response(exc)
    if first is None:
        await _close(events)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return EventSourceResponse(
        _encoded(first, events), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def first_event(request: Request, events: AsyncIterator[T]) -> T | None:
    """The first event, or None when the client disconnected before it came (`/stream` and
    `/v1` streams both wait for it before they answer)."""
    first = asyncio.ensure_future(anext(events))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not first.done():
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        return None
    return first.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _encoded(first: StepEvent, events: AsyncIterator[StepEvent]) -> AsyncIterator[bytes]:
    try:
        yield encode(event_payload(first))
        async for event in events:
            yield encode(event_payload(event))
    except ToolRpcError as exc:
        yield encode({"error": exc.message, "code": exc.code})
    except Exception:
        logger.exception("stream failed")
        yield encode({"error": "internal error", "code": ToolRpcError.code})
    finally:
        await _close(events)


async def _close(events: AsyncIterator[StepEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
