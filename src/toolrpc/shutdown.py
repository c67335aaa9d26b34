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

    @property
    def is_expired(self) -> bool:
        """True once the grace period is over."""
        return self._expired.is_set()

    def begin(self) -> None:
        """Start the grace period (call on the event loop; a second call changes nothing)."""
        if self.is_draining:
            return
        self.is_draining = True
        asyncio.get_running_loop().call_later(self.timeout_s, self._expired.set)

    def expire(self) -> None:
        """End the grace period now (a second signal, or the app's own shutdown)."""
        self.is_draining = True
        self._expired.set()

    async def guard(self, events: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """`events`, ended with `GenerationCancelled` if the grace period runs out first.

        Each item is awaited in its own task raced against the deadline; the scheduler bounds
        its waits per item, never across a yield, so reading from another task is safe.
        """
        expired = asyncio.ensure_future(self._expired.wait())
        try:
            async with aclosing(events):
                while True:
                    item = asyncio.ensure_future(anext(events))
                    try:
                        await asyncio.wait({item, expired}, return_when=asyncio.FIRST_COMPLETED)
                    finally:  # the deadline, or our consumer cancelled: stop reading first
                        if not item.done():
                            item.cancel()
                            await asyncio.gather(item, return_exceptions=True)
                    if item.cancelled():
                        raise GenerationCancelled("the server is shutting down")
                    try:
                        value = item.result()
                    except StopAsyncIteration:
                        return
                    yield value
        finally:
            expired.cancel()
