"""Real upstream processes on loopback ports for the upstream tests: the scripted fake OpenAI
server (tests/upstream/fake_openai.py) and llama-cpp-python's own server. They are launched,
waited for and stopped by `toolrpc.testing`, as every server process of the tests is; every
wait is bounded."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from toolrpc.testing import ServerProcess, free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT_S = 60.0
POLL_S = 0.05


@dataclass(frozen=True)
class Upstream:
    """One upstream process and the command that started it (to start it again)."""

    server: ServerProcess
    command: list[str]

    @property
    def url(self) -> str:
        """The base of its OpenAI routes, `http://127.0.0.1:PORT/v1`."""
        return f"{self.server.url}/v1"

    @property
    def log(self) -> Path:
        """Where its output goes."""
        return self.server.log_path

    def stats(self) -> dict[str, Any]:
        """What a fake server saw (its `GET /stats`)."""
        stats: dict[str, Any] = httpx.get(f"{self.server.url}/stats", timeout=5).json()
        return stats

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the process (bounded), killing it if it does not stop."""
        stop_server(self.server)


def _launch(command: list[str], port: int, log: Path, timeout_s: float) -> Upstream:
    env = {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    server = start_server(
        command, port, log, ready_path="/v1/models", timeout_s=timeout_s, env=env, cwd=ROOT
    )
    return Upstream(server, command)


def start_fake(log_dir: Path, name: str, port: int | None = None) -> Upstream:
    """Start the scripted fake OpenAI server called `name` (on `port`, or a free one)."""
    port = port or free_port()
    command = [sys.executable, "-m", "tests.upstream.fake_openai", "--port", str(port)]
    return _launch([*command, "--name", name], port, log_dir / f"fake-{name}.log", 30.0)


def restart(upstream: Upstream) -> Upstream:
    """Start `upstream`'s command again on the same port."""
    return _launch(upstream.command, upstream.server.port, upstream.log, STARTUP_TIMEOUT_S)


def start_llama_cpp_server(log_dir: Path, model: Path) -> Upstream:
    """Start `python -m llama_cpp.server` on `model` (one slot, 2048 tokens of context). Its
    default `--interrupt_requests True` ends a running generation whenever another request
    (even `GET /v1/models`) waits for the model; a server behind a router must not do that."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "False",
        "--interrupt_requests", "False",
    ]  # fmt: skip
    return _launch(command, port, log_dir / "llama-cpp-server.log", STARTUP_TIMEOUT_S)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; raise `TimeoutError` naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"not within {timeout_s} s: {what}")
