"""A real `toolrpc serve` process for end-to-end tests and benchmarks.

`start_server` launches a server process on a loopback port (a free one unless told) and waits,
bounded, until it answers 200 on its ready path (`/health` for toolrpc); `stop_server` ends it,
terminating first and killing it when it does not stop. `running_server` does both around a
block. The end-to-end tests and both server benchmarks start their servers here, so a launch
that hangs or dies says the same thing everywhere (the log path and, for the tests, the log).

Imports only the standard library and httpx: nothing of the server is loaded in the process
that starts it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.1
"""Between two `/health` probes while a server starts (its startup takes seconds)."""


@dataclass(frozen=True)
class ServerProcess:
    """A started server: its process, where it listens, its log and how long it took to answer."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    startup_s: float

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:18100."""
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int) -> None:
    """Raise `RuntimeError` when something already listens on the loopback `port`.

    With SO_REUSEADDR, as uvicorn binds: connections of a server that just died (TIME_WAIT) do
    not make the port busy for the server restarted on it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise RuntimeError(f"port {port} on {HOST} is busy") from exc


def toolrpc_argv(port: int, *flags: str, python: str = sys.executable) -> list[str]:
    """The command line of `python -m toolrpc serve` on the loopback `port`, with `flags`."""
    return [python, "-m", "toolrpc", "serve", "--host", HOST, "--port", str(port), *flags]


def start_server(
    argv: Sequence[str],
    port: int,
    log_path: Path,
    *,
    ready_path: str = "/health",
    timeout_s: float = 90.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Launch `argv` (a server that listens on `port`), its output appended to `log_path`, and
    wait until `ready_path` answers 200.

    Raises `RuntimeError` when the port is busy or the process exits before it is ready, and
    `TimeoutError` when it is not ready within `timeout_s` (the process is killed then).
    """
    ensure_port_free(port)
    with log_path.open("ab") as log:
        log.write(f"\n=== {' '.join(argv)}\n".encode())
        log.flush()
        start = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env is not None else None,
            cwd=cwd,
        )
    server = ServerProcess(process, port, log_path, 0.0)
    try:
        _wait_ready(server, ready_path, start + timeout_s)
    except BaseException:
        stop_server(server)
        raise
    return ServerProcess(process, port, log_path, time.perf_counter() - start)


def _wait_ready(server: ServerProcess, ready_path: str, deadline: float) -> None:
    """Probe `ready_path` until it answers 200, the process exits, or `deadline` passes."""
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.perf_counter() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited ({server.process.returncode}); see {server.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(server.url + ready_path).status_code == 200:
                    return
            time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"the server was not ready in time; see {server.log_path}")


def stop_server(server: ServerProcess, grace_s: float = 15.0) -> None:
    """Terminate the server, and kill it when it has not stopped within `grace_s`."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=grace_s)


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    port: int,
    log_path: Path,
    *,
    ready_path: str = "/health",
    timeout_s: float = 90.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[ServerProcess]:
    """`start_server` around a block, always stopped on the way out (raises like it)."""
    server = start_server(
        argv, port, log_path, ready_path=ready_path, timeout_s=timeout_s, env=env, cwd=cwd
    )
    try:
        yield server
    finally:
        stop_server(server)
