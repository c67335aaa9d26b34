"""Real upstream processes on loopback ports for the upstream tests: the scripted fake OpenAI
server (tests/upstream/fake_openai.py) and llama-cpp-python's own server. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from toolrpc.testing import free_port

ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT_S = 60.0
POLL_S = 0.05


@dataclass
class Upstream:
    """One upstream process: its base URL (`.../v1`), port, and how it was started."""

    url: str
    port: int
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def root(self) -> str:
        """The URL without `/v1`."""
        return self.url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        """What a fake server saw (its `GET /stats`)."""
        stats: dict[str, Any] = httpx.get(f"{self.root}/stats", timeout=5).json()
        return stats

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the process (bounded), killing it if it does not stop."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def _launch(command: list[str], port: int, log: Path, timeout_s: float) -> Upstream:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    upstream = Upstream(f"http://127.0.0.1:{port}/v1", port, command, log, process)
    wait_until(lambda: _answers(upstream), timeout_s, f"upstream on port {port}: {log}")
    return upstream


def _answers(upstream: Upstream) -> bool:
    if upstream.process.poll() is not None:
        raise RuntimeError(f"upstream exited early:\n{upstream.log.read_text()}")
    try:
        return httpx.get(f"{upstream.url}/models", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def start_fake(log_dir: Path, name: str, port: int | None = None) -> Upstream:
    """Start the scripted fake OpenAI server called `name` (on `port`, or a free one)."""
    port = port or free_port()
    command = [sys.executable, "-m", "tests.upstream.fake_openai", "--port", str(port)]
    return _launch([*command, "--name", name], port, log_dir / f"fake-{name}.log", 30.0)


def restart(upstream: Upstream) -> Upstream:
    """Start `upstream`'s command again on the same port."""
    return _launch(upstream.command, upstream.port, upstream.log, STARTUP_TIMEOUT_S)


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
