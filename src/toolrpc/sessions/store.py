"""`SessionStore`: sessions in one SQLite file (WAL), used from asyncio through one worker thread.

Why `sqlite3` in a single worker thread rather than a connection per call or `aiosqlite`: one
connection owned by one thread needs no locking of our own (every write is serialized by the
worker), adds no dependency, and keeps the event loop free while SQLite fsyncs a commit.
`synchronous=FULL`: a committed turn must survive a power cut, not only a process crash; its
cost is one fsync per turn, small beside the generation that produced the turn.

A turn is committed with `commit_turn` in one `BEGIN IMMEDIATE` transaction: the session row and
every new message land together or not at all, so a SIGKILL at any moment leaves the file at the
last completed turn (SQLite's journal makes that so; tests/e2e/test_sessions_crash.py checks it).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from toolrpc.protocol import Message
from toolrpc.sessions.schema import migrate

T = TypeVar("T")

MEMORY = ":memory:"


@dataclass(frozen=True)
class StoredSession:
    """One session as stored: its history and when it was created and last used."""

    session_id: str
    history: tuple[Message, ...]
    created_at: float
    updated_at: float
    turns: int


@dataclass(frozen=True)
class SessionSummary:
    """One line of `session_list`: a session without its history."""

    session_id: str
    created_at: float
    updated_at: float
    turns: int
    num_messages: int


@dataclass(frozen=True)
class SessionPage:
    """A page of a caller's sessions, by id; `next_cursor` is None on the last page."""

    sessions: tuple[SessionSummary, ...]
    next_cursor: str | None


class SessionStore:
    """The sessions of every caller in one SQLite database (a file, or `:memory:`).

    Every method runs its SQL on the store's one worker thread. Methods raise `sqlite3.Error`
    only for a broken file or disk (a server fault, never a client's).
    """

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating if needed) and migrate the database at `path`.

        Raises `ValueError` when the file is not a sessions database this toolrpc can use.
        """
        self.path = str(path)
        self.clock = clock
        self.num_sessions = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolrpc-sessions")
        try:
            self._connection = self._worker.submit(_connect, self.path).result()
            self.num_sessions = self._worker.submit(self._count).result()
        except (sqlite3.Error, ValueError) as exc:
            self._worker.shutdown(wait=False)
            raise ValueError(f"cannot use {self.path} as the sessions database: {exc}") from exc

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(work, *args))

    async def load(self, owner: str, session_id: str) -> StoredSession | None:
        """The session `session_id` of `owner`, or None when there is none."""
        return await self._run(self._load, owner, session_id)

    async def commit_turn(
        self,
        owner: str,
        session_id: str,
        previous: StoredSession | None,
        history: Sequence[Message],
    ) -> None:
        """Store `history` as the session's history after one more turn, in one transaction.

        When `history` extends `previous.history` only the new messages are written; otherwise
        (a system prompt added in front, say) the stored history is replaced.
        """
        await self._run(self._commit_turn, owner, session_id, previous, tuple(history))

    async def list_page(self, owner: str, cursor: str | None, limit: int) -> SessionPage:
        """Up to `limit` of `owner`'s sessions with ids after `cursor`, by id."""
        return await self._run(self._list, owner, cursor, limit)

    async def delete(self, owner: str, session_id: str) -> bool:
        """Delete one session; False when `owner` has no such session."""
        return await self._run(self._delete, owner, session_id)

    async def delete_idle(self, idle_s: float) -> int:
        """Delete every session unused for more than `idle_s` seconds; returns how many."""
        return await self._run(self._delete_idle, self.clock() - idle_s)

    async def aclose(self) -> None:
        """Checkpoint the WAL into the file and close it; the store is unusable after."""
        await self._run(self._close)
        self._worker.shutdown(wait=True)

    def _count(self) -> int:
        row = self._connection.execute("SELECT COUNT(*) FROM sessions").fetchone()
        return int(row[0])

    def _load(self, owner: str, session_id: str) -> StoredSession | None:
        row = self._connection.execute(
            "SELECT created_at, updated_at, turns FROM sessions WHERE owner = ? AND id = ?",
            (owner, session_id),
        ).fetchone()
        if row is None:
            return None
        bodies = self._connection.execute(
            "SELECT body FROM messages WHERE owner = ? AND session_id = ? ORDER BY position",
            (owner, session_id),
        ).fetchall()
        history = tuple(Message.model_validate_json(body) for (body,) in bodies)
        return StoredSession(session_id, history, row[0], row[1], row[2])

    def _commit_turn(
        self,
        owner: str,
        session_id: str,
        previous: StoredSession | None,
        history: tuple[Message, ...],
    ) -> None:
        now = self.clock()
        old = previous.history if previous is not None else ()
        start = len(old) if history[: len(old)] == old else 0
        rows = [
            (owner, session_id, position, message.model_dump_json(exclude_none=True))
            for position, message in enumerate(history[start:], start=start)
        ]
        db = self._connection
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO sessions (owner, id, created_at, updated_at, turns) "
                "VALUES (?, ?, ?, ?, 1) ON CONFLICT (owner, id) "
                "DO UPDATE SET updated_at = excluded.updated_at, turns = turns + 1",
                (owner, session_id, now, now),
            )
            db.execute(
                "DELETE FROM messages WHERE owner = ? AND session_id = ? AND position >= ?",
                (owner, session_id, start),
            )
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.num_sessions = self._count()

    def _list(self, owner: str, cursor: str | None, limit: int) -> SessionPage:
        rows = self._connection.execute(
            "SELECT s.id, s.created_at, s.updated_at, s.turns, "
            "(SELECT COUNT(*) FROM messages m WHERE m.owner = s.owner AND m.session_id = s.id) "
            "FROM sessions s WHERE s.owner = ? AND s.id > ? ORDER BY s.id LIMIT ?",
            (owner, cursor or "", limit + 1),
        ).fetchall()
        sessions = tuple(SessionSummary(*row) for row in rows[:limit])
        next_cursor = sessions[-1].session_id if len(rows) > limit else None
        return SessionPage(sessions, next_cursor)

    def _delete(self, owner: str, session_id: str) -> bool:
        with self._transaction():
            cursor = self._connection.execute(
                "DELETE FROM sessions WHERE owner = ? AND id = ?", (owner, session_id)
            )
        self.num_sessions = self._count()
        return cursor.rowcount > 0

    def _delete_idle(self, before: float) -> int:
        with self._transaction():
            cursor = self._connection.execute(
                "DELETE FROM sessions WHERE updated_at < ?", (before,)
            )
        self.num_sessions = self._count()
        return cursor.rowcount

    def _transaction(self) -> sqlite3.Connection:
        # `with connection:` commits or rolls back; BEGIN first since autocommit mode is on.
        self._connection.execute("BEGIN IMMEDIATE")
        return self._connection

    def _close(self) -> None:
        if self.path != MEMORY:
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._connection.close()


def _connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys on."""
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    migrate(connection)
    return connection
