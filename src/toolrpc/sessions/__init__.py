"""Server-side sessions: conversations the server keeps, in one SQLite file.

A session is a history of `protocol.Message`s owned by one caller (an API key's hash, or ""
without keys). This layer stores and loads them, commits one turn at a time in one transaction
and expires idle ones; it knows the wire models (`protocol`) and nothing of HTTP, JSON-RPC, the
chat layer or engines. The service (`service.py` through `session_steps.py`) decides when a turn
is committed: when the step's result arrives, so a crash mid-step leaves the session as it was.
"""

from toolrpc.sessions.store import SessionPage, SessionStore, SessionSummary, StoredSession

__all__ = ["SessionPage", "SessionStore", "SessionSummary", "StoredSession"]
