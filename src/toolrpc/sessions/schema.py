"""The sessions database's schema, as numbered migrations applied by `PRAGMA user_version`.

Migration N brings a file from version N-1 to N inside one transaction, so a crash during a
migration leaves the previous version intact. Append new steps; never edit an applied one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: sessions are keyed by (owner, id): two API keys may use the same id without either
    # learning that the other did. Messages are rows, so a turn appends instead of rewriting.
    """
    CREATE TABLE sessions (
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        turns INTEGER NOT NULL,
        PRIMARY KEY (owner, id)
    );
    CREATE INDEX sessions_by_update ON sessions (updated_at);
    CREATE TABLE messages (
        owner TEXT NOT NULL,
        session_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (owner, session_id, position),
        FOREIGN KEY (owner, session_id) REFERENCES sessions (owner, id) ON DELETE CASCADE
    );
    """,
)


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the database to the newest schema; returns its version.

    Raises `ValueError` when the file was written by a newer toolrpc (a version we do not know).
    """
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise ValueError(
            f"sessions database has schema version {version}; this toolrpc knows up to "
            f"{len(MIGRATIONS)}"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
