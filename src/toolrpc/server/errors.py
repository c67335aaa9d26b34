"""The one mapping of `ToolRpcError` to a plain HTTP error response (`/stream`, limits)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from toolrpc.errors import Overloaded, ToolRpcError
from toolrpc.types import JSONValue


def error_response(exc: ToolRpcError) -> JSONResponse:
    """`{"error": {code, message, data?}}` with the error's HTTP status (and Retry-After)."""
    error: dict[str, JSONValue] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse({"error": error}, status_code=exc.http_status, headers=headers)


def too_large_response(message: str) -> JSONResponse:
    """HTTP 413 for a body over the limit."""
    return JSONResponse({"error": {"code": 413, "message": message}}, status_code=413)
