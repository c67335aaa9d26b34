"""Graceful shutdown of the steps that are running when the server is told to stop.

`Shutdown.begin()` (on the first SIGTERM or Ctrl-C) starts a grace period of
`--shutdown-timeout` seconds. Steps running then may finish within it; at its end every step
still running ends with `GenerationCancelled` (-32003): /rpc answers it as a JSON-RPC error and
/stream as its last event, so no client is left with a cut connection and no word why. A step
that finishes in time commits its session turn as usual; a cancelled one commits nothing.
The HTTP side (stop accepting, refuse new requests with 503, exit at once on a second signal) is
in server/shutdown.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

from toolrpc.errors import GenerationCancelled

T = TypeVar("T")


class Shutdown:
    """The grace period of one server: not started, running, or over."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.is_draining = False
        self._expired = asyncio.Event()
        self._deadline: float | None = None
        self._waits: set[asyncio.Timeout] = set()

    @property
    def is_expired(self) -> bool:
        """True once the grace period is over."""
        return self._expired.is_set()

    def begin(self) -> None:
        """Start the grace period (call on the event loop; a second call changes nothing)."""
        if self.is_draining:
            return
        self.is_draining = True
        loop = asyncio.get_running_loop()
        loop.call_later(self.timeout_s, self._expired.set)
        self._move_deadline(loop.time() + self.timeout_s)

    def expire(self) -> None:
        """End the grace period now (a second signal, or the app's own shutdown)."""
        self.is_draining = True
        self._expired.set()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing waits
            self._move_deadline(asyncio.get_running_loop().time())

    def _move_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        for wait in self._waits:
            wait.reschedule(deadline)

    async def guard(self, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """`events`, ended with `GenerationCancelled` if the grace period runs out first.

        Each wait for the next item is bounded by the deadline in the consumer's own task
        (`asyncio.timeout`, rescheduled when the grace period begins), never across a `yield`:
        an item read in another task would break generators whose context is bound to their
        task (anyio cancel scopes in an httpx stream to an upstream: closing such a stream from
        another task left the upstream request open).
        """
        async with aclosing(events):
            while True:
                if self.is_expired:
                    raise GenerationCancelled("the server is shutting down")
                wait = asyncio.timeout_at(self._deadline)
                try:
                    async with wait:
                        self._waits.add(wait)
                        try:
                            value = await anext(events)
                        finally:
                            self._waits.discard(wait)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if wait.expired():  # the deadline's, not a timeout of the step's own
                        raise GenerationCancelled("the server is shutting down") from None
                    raise
                yield value
