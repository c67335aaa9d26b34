"""The one mapping of `ToolRpcError` to OpenAI's error shape, for every `/v1` response.

`{"error": {"message", "type", "param", "code"}}` with the status an OpenAI client expects, so
the `openai` SDK raises its own exception types (`BadRequestError` for 400, `NotFoundError` for
404, `APIStatusError` with 503 and `Retry-After` for a full queue, ...). Each error class knows
its OpenAI `type`, `code` and status (errors.py); this function only lays them out.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from toolrpc.errors import InvalidParams, Overloaded, ParamError, ToolRpcError
from toolrpc.openai_protocol import ErrorDetail
from toolrpc.types import JSONObject


def param_path(loc: tuple[str | int, ...]) -> str | None:
    """A location as OpenAI writes a `param`: `messages[1].content`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or None


def error_detail(exc: ToolRpcError) -> ErrorDetail:
    """The `error` object of `exc`; invalid params name the first bad field and say what is
    wrong with each."""
    message, param = exc.message, None
    if isinstance(exc, InvalidParams) and exc.errors:
        param = param_path(exc.errors[0].loc)
        message = "; ".join(_described(e) for e in exc.errors)
    return ErrorDetail(message=message, type=exc.openai_type, param=param, code=exc.openai_code)


def error_payload(exc: ToolRpcError) -> JSONObject:
    """`{"error": {...}}` of `exc` (also sent as an event when a stream fails midway)."""
    return {"error": error_detail(exc).model_dump(mode="json")}


def openai_error(exc: ToolRpcError) -> JSONResponse:
    """The HTTP response of `exc` on `/v1` (with `Retry-After` when the queue is full)."""
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    status = exc.openai_status or exc.http_status
    return JSONResponse(error_payload(exc), status_code=status, headers=headers)


def _described(error: ParamError) -> str:
    path = param_path(error.loc)
    return f"{path}: {error.msg}" if path else error.msg
