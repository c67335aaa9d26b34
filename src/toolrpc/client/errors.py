"""Errors the server sends, turned back into the classes of `toolrpc.errors`.

`error_from_wire` is the one function that maps a JSON-RPC error object (from `/rpc`, from a
`/stream` error event, or from the JSON body of a plain HTTP error) to the class that raised it on
the server, with its data restored (`Overloaded.retry_after_s`, `InvalidParams.errors`,
`ContextLengthExceeded.prompt_tokens`). `ServerUnreachable` is the client's own: the one
translation of a transport failure (httpx's exceptions), raised `from` the original.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

import httpx

from toolrpc.errors import (
    ContextLengthExceeded,
    GenerationCancelled,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    Overloaded,
    ParamError,
    ParseError,
    SessionNotFound,
    ToolProtocolError,
    ToolRpcError,
    Unauthorized,
)
from toolrpc.types import JSONValue

ERROR_CLASSES: Mapping[int, type[ToolRpcError]] = MappingProxyType(
    {
        cls.code: cls
        for cls in (
            ParseError,
            InvalidRequest,
            MethodNotFound,
            InvalidParams,
            Overloaded,
            Unauthorized,
            ContextLengthExceeded,
            GenerationCancelled,
            SessionNotFound,
            ToolProtocolError,
        )
    }
)
"""JSON-RPC code -> the class of `toolrpc.errors` that has it (-32603 and unknown codes: the
base class)."""


class ServerUnreachable(ToolRpcError):
    """The server could not be reached, or the connection broke before an answer came."""


class UnexpectedResponse(ToolRpcError):
    """The server answered with something that is not toolrpc's protocol (a proxy's HTML page,
    a truncated body); `data` holds the HTTP status."""


def error_from_wire(error: Mapping[str, JSONValue]) -> ToolRpcError:
    """The exception for one `{code, message, data?}` error object."""
    code = error.get("code")
    message = str(error.get("message", "server error"))
    data = error.get("data")
    cls = ERROR_CLASSES.get(code, ToolRpcError) if isinstance(code, int) else ToolRpcError
    if cls is Overloaded:
        retry_after = data.get("retry_after_s") if isinstance(data, dict) else None
        if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
            return Overloaded(message, float(retry_after))
        return Overloaded(message, 1.0)
    if cls is InvalidParams:
        return InvalidParams(message, _param_errors(data))
    if cls is ContextLengthExceeded and isinstance(data, dict):
        prompt, context = data.get("prompt_tokens"), data.get("context_length")
        if isinstance(prompt, int) and isinstance(context, int):
            return ContextLengthExceeded(prompt, context)
    return cls(message, data)


def error_from_http(status: int, body: JSONValue) -> ToolRpcError:
    """The exception for a plain HTTP error response: its `{"error": {...}}` body when it has
    one, else `UnexpectedResponse` naming the status."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error_from_wire(error)
    return UnexpectedResponse(f"the server answered HTTP {status}", {"http_status": status})


def _param_errors(data: JSONValue) -> list[ParamError]:
    if not isinstance(data, list):
        return []
    found = []
    for item in data:
        loc = item.get("loc") if isinstance(item, dict) else None
        if isinstance(item, dict) and isinstance(loc, list):
            parts = tuple(part for part in loc if isinstance(part, str | int))
            found.append(ParamError(parts, str(item.get("msg", ""))))
    return found


@contextmanager
def translated_transport_errors() -> Iterator[None]:
    """The one place httpx's exceptions become toolrpc's: a transport failure (refused,
    reset, timed out) is raised as `ServerUnreachable` from the original."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from exc
