"""The one error tree of toolrpc.

Every error a client can cause, and every failure the server reports, is a subclass of
`ToolRpcError`. Each class knows its JSON-RPC code (docs/protocol.md) and the HTTP status used
where the transport is plain HTTP (`/stream` before the stream starts, a body over the limit).
The mapping to a wire format lives in one function per format (`rpc.error_object` for
JSON-RPC, `server.errors.error_response` for plain HTTP, `server.openai.errors.openai_error`
for `/v1`), so no layer below the server ever builds an error response itself. For `/v1` each
class also knows OpenAI's error `type` and `code` and, where a client of that API expects
another status (params: 400, not 422), its `openai_status`.

    ToolRpcError                  -32603 / 500  (internal: a bug, never for bad input)
    ├── ParseError                -32700 / 400
    ├── InvalidRequest            -32600 / 400
    │   └── BodyTooLarge          -32600 / 413  (refused before it is read whole)
    ├── MethodNotFound            -32601 / 404
    ├── InvalidParams             -32602 / 422
    ├── Overloaded                -32000 / 503  (data: retry_after_s)
    │   ├── TooManyRequests       -32000 / 429  (this API key's concurrency limit)
    │   └── SessionBusy           -32000 / 409  (the session is running another turn)
    ├── Unauthorized              -32001 / 401
    ├── ContextLengthExceeded     -32002 / 400  (data: prompt_tokens, context_length)
    ├── GenerationCancelled       -32003 / 408
    ├── SessionNotFound           -32004 / 404
    ├── ToolProtocolError         -32005 / 400
    └── ModelNotFound             -32006 / 404  (/v1: a `model` the server does not serve)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import ValidationError

from toolrpc.types import JSONValue


@dataclass(frozen=True)
class ParamError:
    """One problem with request params: where (`loc`) and what (`msg`)."""

    loc: tuple[str | int, ...]
    msg: str

    def to_json(self) -> dict[str, JSONValue]:
        """The `{loc, msg}` object that goes into an error's `data` list."""
        return {"loc": list(self.loc), "msg": self.msg}


class ToolRpcError(Exception):
    """Base of every toolrpc error; on its own it means an internal error (a bug)."""

    code: ClassVar[int] = -32603
    http_status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None
    openai_status: ClassVar[int | None] = None
    """The HTTP status on `/v1` when it is not `http_status`."""

    def __init__(self, message: str, data: JSONValue = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ParseError(ToolRpcError):
    """The request body is not valid JSON."""

    code = -32700
    http_status = 400
    openai_type = "invalid_request_error"


class InvalidRequest(ToolRpcError):
    """The JSON is not a valid JSON-RPC request object."""

    code = -32600
    http_status = 400
    openai_type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    """The request body is over the configured limit; refused before it is parsed."""

    http_status = 413


class MethodNotFound(ToolRpcError):
    """The method does not exist."""

    code = -32601
    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "not_found"


class InvalidParams(ToolRpcError):
    """The params do not fit the method; `data` lists each problem as `{loc, msg}`."""

    code = -32602
    http_status = 422
    openai_type = "invalid_request_error"
    openai_status = 400

    def __init__(self, message: str, errors: Sequence[ParamError] = ()) -> None:
        super().__init__(message, [e.to_json() for e in errors] if errors else None)
        self.errors = tuple(errors)

    @classmethod
    def from_validation(cls, exc: ValidationError) -> InvalidParams:
        """One `{loc, msg}` per problem pydantic found."""
        errors = exc.errors(include_url=False, include_input=False)
        return cls("Invalid params", [ParamError(tuple(e["loc"]), e["msg"]) for e in errors])


class Overloaded(ToolRpcError):
    """The request queue is full; the client should retry after `retry_after_s`."""

    code = -32000
    http_status = 503
    openai_code = "overloaded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, {"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class TooManyRequests(Overloaded):
    """This API key already has `--max-concurrent-per-key` requests running."""

    http_status = 429


class SessionBusy(Overloaded):
    """The session is running another turn; turns of one session never interleave."""

    http_status = 409


class Unauthorized(ToolRpcError):
    """A missing or wrong API key."""

    code = -32001
    http_status = 401
    openai_type = "authentication_error"
    openai_code = "invalid_api_key"


class ContextLengthExceeded(ToolRpcError):
    """The prompt (plus room to answer) does not fit the model's context window."""

    code = -32002
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens; the context window is {context_length} tokens",
            {"prompt_tokens": prompt_tokens, "context_length": context_length},
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class GenerationCancelled(ToolRpcError):
    """Generation was cancelled (client left, server shutting down) or ran past its time limit."""

    code = -32003
    http_status = 408
    openai_type = "timeout_error"


class SessionNotFound(ToolRpcError):
    """A call without a message named a session the server does not know."""

    code = -32004
    http_status = 404
    openai_type = "invalid_request_error"


class ToolProtocolError(ToolRpcError):
    """Tool results that do not match the tool calls they answer."""

    code = -32005
    http_status = 400
    openai_type = "invalid_request_error"


class ModelNotFound(ToolRpcError):
    """`/v1`: the request names a model this server does not serve (as vLLM answers one)."""

    code = -32006
    http_status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"
