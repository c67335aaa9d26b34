"""A real toolrpc server process on a free loopback port, serving the embedded model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


@dataclass
class RunningServer:
    """A server process and its base URL."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    kind: str = "gguf"

    @property
    def context_length(self) -> int:
        """The context window the server reports on /health."""
        length: int = httpx.get(f"{self.url}/health", timeout=5).json()["context_length"]
        return length


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(log: Path, *flags: str, kind: str = "gguf") -> RunningServer:
    """Start `python -m toolrpc serve` and wait (bounded) until `/health` answers 200."""
    port = free_port()
    # Sessions go next to the log unless the flags name a file: never the user's own.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TOOLRPC_SESSIONS_DB": str(log.parent / "sessions.db"),
    }
    command = [sys.executable, "-m", "toolrpc", "serve", "--port", str(port), *flags]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return RunningServer(url, process, log, kind)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server not healthy after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def stop_server(server: RunningServer) -> None:
    """Terminate the process (bounded), killing it if it does not stop."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


@pytest.fixture(scope="package", params=["gguf", "hf"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One slot, so a request that is not cancelled blocks the next. `gguf`: the embedded model
    through llama.cpp; `hf`: a tiny random Qwen2 model folder built by the test, through
    transformers (the same protocol suite runs against both)."""
    folder = tmp_path_factory.mktemp(request.param)
    flags = ["--parallel", "1", "--ctx-size", "2048"]
    if request.param == "hf":
        from tests.engines.tiny_hf import build_tiny_model

        flags += ["--model", str(build_tiny_model(folder / "model"))]
    server = start_server(folder / "server.log", *flags, kind=request.param)
    yield server
    stop_server(server)
