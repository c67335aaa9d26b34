"""Behaviour of the SQLite session store (no HTTP, no model)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from toolrpc.protocol import Message
from toolrpc.sessions import SessionStore
from toolrpc.sessions.schema import MIGRATIONS

HELLO = (Message(role="user", content="hi"), Message(role="assistant", content="hello"))
MORE = (*HELLO, Message(role="user", content="more"), Message(role="assistant", content="ok"))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_committed_turn_is_there_after_reopening_the_file(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    await store.commit_turn("", "s1", None, HELLO)
    first = await store.load("", "s1")
    await store.commit_turn("", "s1", first, MORE)
    await store.aclose()

    reopened = SessionStore(tmp_path / "s.db")
    stored = await reopened.load("", "s1")
    await reopened.aclose()

    assert stored is not None
    assert stored.history == MORE
    assert stored.turns == 2


async def test_sessions_are_scoped_by_owner() -> None:
    store = SessionStore(":memory:")
    await store.commit_turn("alice", "s1", None, HELLO)

    assert await store.load("bob", "s1") is None
    assert (await store.list_page("bob", None, 10)).sessions == ()
    assert await store.delete("bob", "s1") is False
    assert await store.load("alice", "s1") is not None
    await store.aclose()


async def test_a_history_that_does_not_extend_the_stored_one_replaces_it() -> None:
    store = SessionStore(":memory:")
    await store.commit_turn("", "s1", None, MORE)
    previous = await store.load("", "s1")
    replaced = (Message(role="system", content="be brief"), *HELLO)
    await store.commit_turn("", "s1", previous, replaced)

    stored = await store.load("", "s1")
    await store.aclose()

    assert stored is not None
    assert stored.history == replaced


async def test_listing_pages_through_every_session_once() -> None:
    store = SessionStore(":memory:")
    for number in range(7):
        await store.commit_turn("", f"s{number}", None, HELLO)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.list_page("", cursor, 3)
        seen += [s.session_id for s in page.sessions]
        cursor = page.next_cursor
        if cursor is None:
            break
    await store.aclose()

    assert seen == [f"s{n}" for n in range(7)]


async def test_idle_sessions_expire_and_used_ones_stay() -> None:
    clock = Clock()
    store = SessionStore(":memory:", clock=clock)
    await store.commit_turn("", "old", None, HELLO)
    clock.now += 100
    await store.commit_turn("", "new", None, HELLO)
    clock.now += 60

    removed = await store.delete_idle(120)

    assert removed == 1
    assert await store.load("", "old") is None
    assert await store.load("", "new") is not None
    assert store.num_sessions == 1
    await store.aclose()


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")

    with pytest.raises(ValueError):
        SessionStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(ValueError):
        SessionStore(path)
