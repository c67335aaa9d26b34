"""Conversation steps on a server-side session: load the history, run the step, commit the turn.

Part of the service layer (it joins `sessions/` to the chat step). The rules, decided here:
- A new `session_id` with a `message` starts a session; an unknown one without a message is
  `SessionNotFound` (-32004), as is another API key's session (ids are scoped by owner, so its
  existence is never revealed).
- `history` sent with a `session_id` must equal the stored history, or it is `InvalidParams`
  (-32602): the server's copy is the truth and a client that disagrees has lost track.
- Turns of one session never interleave: a second request while a turn runs is refused at once
  with `SessionBusy` (-32000, HTTP 409, `retry_after_s`) rather than queued. Waiting would hold a
  connection for a whole generation, and a client that sent two turns at once has a bug the
  server should show, not hide by ordering them arbitrarily.
- The turn (new message, tool results, the answer) is committed when the step's `DoneEvent`
  arrives, in one transaction and before the event is passed on: a client that saw `done` can
  rely on the turn being stored, and a step that dies before it leaves no trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from toolrpc.chat.conversation import DoneEvent, StepEvent, StepRequest
from toolrpc.errors import InvalidParams, ParamError, SessionBusy, SessionNotFound
from toolrpc.protocol import (
    CreateMessageParams,
    Message,
    SessionDeleteResult,
    SessionListParams,
    SessionListResult,
    SessionParams,
    SessionResult,
    SessionSummaryResult,
)
from toolrpc.sessions import SessionStore, StoredSession

logger = logging.getLogger(__name__)

BUSY_RETRY_AFTER_S = 1.0


class SessionSteps:
    """Session-backed steps and the session methods over one `SessionStore`."""

    def __init__(self, store: SessionStore, *, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._busy: set[tuple[str, str]] = set()

    async def step(
        self,
        owner: str,
        session_id: str,
        params: CreateMessageParams,
        build: Callable[[CreateMessageParams], StepRequest],
        run: Callable[[StepRequest], AsyncGenerator[StepEvent, None]],
    ) -> AsyncGenerator[StepEvent, None]:
        """Run one step on `owner`'s session `session_id`, committing the turn when it is done.

        Raises `SessionBusy`, `SessionNotFound`, `InvalidParams` (history disagrees) before the
        first event, and whatever the step raises.
        """
        key = (owner, session_id)
        if key in self._busy:
            raise SessionBusy(f"session {session_id!r} is running another turn", BUSY_RETRY_AFTER_S)
        self._busy.add(key)
        try:
            stored = await self.store.load(owner, session_id)
            history = _history_for(session_id, params, stored)
            request = build(params.model_copy(update={"history": history, "session_id": None}))
            async with aclosing(run(request)) as events:
                async for event in events:
                    if isinstance(event, DoneEvent):
                        await self.store.commit_turn(
                            owner, session_id, stored, event.result.history
                        )
                    yield event
        finally:
            self._busy.discard(key)

    async def get(self, owner: str, params: SessionParams) -> SessionResult:
        """`session_get`. Raises `SessionNotFound`."""
        stored = await self.store.load(owner, params.session_id)
        if stored is None:
            raise SessionNotFound(f"no session {params.session_id!r}")
        return SessionResult(
            session_id=stored.session_id,
            history=list(stored.history),
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            turns=stored.turns,
        )

    async def list_page(self, owner: str, params: SessionListParams) -> SessionListResult:
        """`session_list`: the caller's sessions, by id, one page."""
        page = await self.store.list_page(owner, params.cursor, params.limit)
        return SessionListResult(
            sessions=[
                SessionSummaryResult(
                    session_id=s.session_id,
                    created_at=s.created_at,
                    updated_at=s.updated_at,
                    turns=s.turns,
                    num_messages=s.num_messages,
                )
                for s in page.sessions
            ],
            next_cursor=page.next_cursor,
        )

    async def delete(self, owner: str, params: SessionParams) -> SessionDeleteResult:
        """`session_delete`. Raises `SessionNotFound` for a session the caller does not have."""
        if not await self.store.delete(owner, params.session_id):
            raise SessionNotFound(f"no session {params.session_id!r}")
        return SessionDeleteResult(deleted=True)

    async def expire_forever(self, every_s: float) -> None:
        """Delete idle sessions every `every_s` seconds until cancelled (the app's lifespan)."""
        while True:
            await asyncio.sleep(every_s)
            removed = await self.store.delete_idle(self.ttl_s)
            if removed:
                logger.info("expired %d idle session(s)", removed)


def _history_for(
    session_id: str, params: CreateMessageParams, stored: StoredSession | None
) -> list[Message]:
    """The history the step continues: the stored one. Raises `SessionNotFound` for an unknown
    session without a message, `InvalidParams` when `history` was sent and disagrees."""
    if stored is None and params.message is None:
        raise SessionNotFound(f"no session {session_id!r}")
    kept = list(stored.history) if stored is not None else []
    if params.history and params.history != kept:
        raise InvalidParams(
            "'history' differs from the session's stored history; send only the new message",
            [ParamError(("history",), "must be omitted or equal the stored history")],
        )
    return list(kept)
