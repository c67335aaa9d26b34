"""The gate every HTTP request passes first: shutdown, API key, per-key concurrency.

A pure ASGI middleware rather than a FastAPI dependency, so that it covers every route there is
or will be (the /v1 routes, the docs, /metrics) without each route opting in, and so that a
stream counts as running until its last byte is sent, not until its handler returns.

In order: while the server shuts down, every request but `GET /health` gets 503 (-32000); then
with API keys configured every request but `GET /health` needs `Authorization: Bearer KEY`, or
gets 401 (-32001); then past `--max-concurrent-per-key` running requests of one key (or, without
keys, of all callers together) on /rpc, /stream and /v1, a request gets 429 (-32000,
`retry_after_s`). Each refusal speaks its route's error shape: a JSON-RPC error object on /rpc,
OpenAI's `{"error": {message, type, param, code}}` on /v1, `{"error": {code, message, data?}}`
elsewhere.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from toolrpc.caller import ANONYMOUS, set_owner
from toolrpc.errors import Overloaded, ToolRpcError, TooManyRequests, Unauthorized
from toolrpc.rpc import error_body, error_object
from toolrpc.server.keys import ApiKeys
from toolrpc.shutdown import Shutdown

LIMITED_PREFIXES = ("/rpc", "/stream", "/v1/")
RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class GatePolicy:
    """What the gate enforces."""

    keys: ApiKeys
    shutdown: Shutdown
    max_concurrent_per_key: int | None = None


class Gate:
    """ASGI middleware applying a `GatePolicy` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: GatePolicy) -> None:
        self.app = app
        self.policy = policy
        self._running: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request with its route's error shape, or pass it on as its owner."""
        if scope["type"] != "http" or _is_health(scope):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        owner = ANONYMOUS
        refusal: ToolRpcError | None = None
        if self.policy.shutdown.is_draining:
            refusal = Overloaded("the server is shutting down", RETRY_AFTER_S)
        elif self.policy.keys.is_enabled:
            found = self.policy.keys.owner_of(_header(scope, b"authorization"))
            if found is None:
                refusal = Unauthorized("a valid API key is required: Authorization: Bearer KEY")
            else:
                owner = found
        limit = self.policy.max_concurrent_per_key
        counted = limit is not None and path.startswith(LIMITED_PREFIXES)
        if refusal is None and counted and limit is not None and self._running[owner] >= limit:
            refusal = TooManyRequests(
                f"this API key already has {limit} requests running", RETRY_AFTER_S
            )
        if refusal is not None:
            await _refuse(path, refusal, send)
            return
        set_owner(owner)
        if not counted:
            await self.app(scope, receive, send)
            return
        self._running[owner] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._running[owner] -= 1
            if self._running[owner] <= 0:
                del self._running[owner]


def _is_health(scope: Scope) -> bool:
    return scope["path"] == "/health" and scope["method"] in ("GET", "HEAD")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def refusal_body(path: str, exc: ToolRpcError) -> dict[str, object]:
    """The error body for `exc` in the shape of the route at `path`."""
    if path.startswith("/rpc"):
        return dict(error_object(exc, None))
    if path.startswith("/v1/"):
        code = "invalid_api_key" if isinstance(exc, Unauthorized) else "rate_limit_exceeded"
        kind = "invalid_request_error" if isinstance(exc, Unauthorized) else "rate_limit_error"
        if not isinstance(exc, Unauthorized | TooManyRequests):
            code, kind = "server_overloaded", "server_error"
        return {"error": {"message": exc.message, "type": kind, "param": None, "code": code}}
    return {"error": error_body(exc)}


async def _refuse(path: str, exc: ToolRpcError, send: Send) -> None:
    body = json.dumps(refusal_body(path, exc)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(exc, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, Overloaded):
        headers.append((b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
