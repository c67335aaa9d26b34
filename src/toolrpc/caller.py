"""Who is calling: the owner of the request being served, for the layers that scope data by it.

The owner is the API key's SHA-256 (hex), or "" on a server without keys. The server's auth
middleware sets it for the request's context; the service reads it when it loads or lists
sessions. A context variable rather than a parameter because the JSON-RPC dispatcher between
them knows method names and params only, and a caller is neither; the value lives in the
request's own context (asyncio copies it into the tasks the request starts), never in a global.
"""

from __future__ import annotations

from contextvars import ContextVar

ANONYMOUS = ""

_OWNER: ContextVar[str] = ContextVar("toolrpc_owner", default=ANONYMOUS)


def current_owner() -> str:
    """The owner of the request being served ("" without API keys)."""
    return _OWNER.get()


def set_owner(owner: str) -> None:
    """Make `owner` the owner of the current context (the auth middleware, once per request)."""
    _OWNER.set(owner)
