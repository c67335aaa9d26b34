"""A real toolrpc server process on a free loopback port, serving the embedded model."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from toolrpc import testing
from toolrpc.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class RunningServer:
    """A started server and the engine kind it serves."""

    started: ServerProcess
    kind: str = "gguf"

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.started.url

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The server's process (to signal or kill it)."""
        return self.started.process

    @property
    def log(self) -> Path:
        """Where the server's output goes."""
        return self.started.log_path

    @property
    def context_length(self) -> int:
        """The context window the server reports on /health."""
        length: int = httpx.get(f"{self.url}/health", timeout=5).json()["context_length"]
        return length


def start_server(log: Path, *flags: str, kind: str = "gguf") -> RunningServer:
    """Start `python -m toolrpc serve` with `flags` on a free port; wait (bounded) for /health.
    Sessions go next to the log unless the flags name a file: never the user's own."""
    port = testing.free_port()
    env = {"PYTHONPATH": str(ROOT / "src"), "TOOLRPC_SESSIONS_DB": str(log.parent / "sessions.db")}
    try:
        started = testing.start_server(
            testing.toolrpc_argv(port, *flags), port, log, timeout_s=STARTUP_TIMEOUT_S, env=env
        )
    except (RuntimeError, TimeoutError) as exc:  # the server's own words say why
        raise RuntimeError(f"{exc}:\n{log.read_text()}") from exc
    return RunningServer(started, kind)


def stop_server(server: RunningServer) -> None:
    """Terminate the process (bounded), killing it if it does not stop."""
    testing.stop_server(server.started)


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
