"""The one mapping of `ToolRpcError` to a plain HTTP error response (`/stream`, body limits)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from toolrpc.errors import Overloaded, ToolRpcError
from toolrpc.rpc import error_body


def error_response(exc: ToolRpcError) -> JSONResponse:
    """`{"error": {code, message, data?}}` with the error's HTTP status (and Retry-After)."""
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse({"error": error_body(exc)}, status_code=exc.http_status, headers=headers)
