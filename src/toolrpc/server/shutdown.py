"""`GracefulServer`: uvicorn's server with toolrpc's shutdown rules.

uvicorn already stops accepting on SIGTERM/SIGINT and waits for running requests; two things it
does not do are added here. The first signal also starts the app's grace period
(`toolrpc.shutdown.Shutdown`), so generations still running at `--shutdown-timeout` are answered
with -32003 instead of being cut; uvicorn's own wait is that timeout plus `ANSWER_MARGIN_S`,
the time those answers get to go out. A second SIGTERM (not only a second Ctrl-C, as in uvicorn)
exits at once (status 1). And the process exits 0 after a graceful stop: uvicorn re-raises the
signal it caught once it is done, which makes the exit status 143 (killed by SIGTERM) even when
every request was answered and every session flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from toolrpc.shutdown import Shutdown

ANSWER_MARGIN_S = 5.0
FORCED_EXIT_STATUS = 1
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose signals drive a `Shutdown` too."""

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown) -> None:
        super().__init__(config)
        self.shutdown_state = shutdown
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until a signal; see the module docstring for what each signal does."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM while serving; restore the old handlers after, re-raising
        nothing (a graceful stop exits 0)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: stop gracefully. Any later one: exit now, with status 1.

        "Now" is `os._exit`: uvicorn's own forced exit still waits for the event loop's tasks
        and the engine's thread, which finish the generation they are in (measured: a
        1,500-token stream kept the process alive for its whole length). Nothing is lost that
        was promised: every committed session turn is already durable in SQLite's WAL.
        """
        if self.should_exit:
            os._exit(FORCED_EXIT_STATUS)
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.shutdown_state.begin)


def graceful_server(app: object, shutdown: Shutdown, **config: object) -> GracefulServer:
    """A `GracefulServer` for `app` with uvicorn `config` (host, port, log_level, ...)."""
    settings = uvicorn.Config(
        app,  # type: ignore[arg-type]
        timeout_graceful_shutdown=int(shutdown.timeout_s + ANSWER_MARGIN_S),
        **config,  # type: ignore[arg-type]
    )
    return GracefulServer(settings, shutdown)
