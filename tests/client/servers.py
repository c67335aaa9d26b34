"""Servers for the client tests: an app over a scripted FakeEngine, served in-process through
httpx's ASGI transport or by uvicorn on a loopback port in a thread (real streaming, and a
server a subprocess or a browser can reach)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_S = 30.0


def tool_call(tool_name: str, /, **arguments: object) -> str:
    """The markup of one call as the fake model writes it (Hermes format)."""
    call = json.dumps({"name": tool_name, "arguments": arguments})
    return f"<tool_call>\n{call}\n</tool_call>"


class _ReadyServer(uvicorn.Server):
    """A uvicorn server that says when it listens, so nothing waits by polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def serving_on_loopback(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yields its base URL. Raises
    `RuntimeError` when it does not start within STARTUP_TIMEOUT_S."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = _ReadyServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not server.ready.wait(STARTUP_TIMEOUT_S):
        server.should_exit = True
        raise RuntimeError("the test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)
