"""Sessions and shutdown against real server processes (the embedded model, loopback port).

SIGKILL in the middle of a streamed step: the completed turns are in the file, the interrupted
one is not, and the conversation goes on after a restart. SIGTERM: the running stream ends with
-32003 after --shutdown-timeout and the process exits 0; a second SIGTERM exits at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.slow

EXIT_BOUND_S = 20.0
LONG = {"max_new_tokens": 1500, "temperature": 0.8, "seed": 1}


def rpc(server: RunningServer, method: str, params: dict[str, Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    answer: dict[str, Any] = httpx.post(f"{server.url}/rpc", json=body, timeout=180).json()
    return answer


def events_after_first_delta(server: RunningServer, params: dict[str, Any], then: Any) -> list[Any]:
    """Stream `params`; once the first delta arrives call `then()`; return every event read."""
    events: list[Any] = []
    try:
        with httpx.stream("POST", f"{server.url}/stream", json=params, timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line[5:]))
                if len(events) == 1:
                    then()
    except httpx.TransportError:
        pass  # the process was killed under us
    return events


def test_a_sigkill_mid_stream_leaves_only_the_completed_turns(tmp_path: Path) -> None:
    database = tmp_path / "sessions.db"
    flags = ("--parallel", "1", "--ctx-size", "2048", "--sessions-db", str(database))
    server = start_server(tmp_path / "first.log", *flags)
    try:
        first = rpc(
            server, "create_message", {"session_id": "c", "message": "Hi", "max_new_tokens": 8}
        )
        assert "result" in first
        params = {"session_id": "c", "message": "Tell me a long story.", **LONG}
        events = events_after_first_delta(server, params, server.process.kill)
        server.process.wait(timeout=EXIT_BOUND_S)
    finally:
        stop_server(server)
    assert events and not any("done" in event for event in events)

    restarted = start_server(tmp_path / "second.log", *flags)
    try:
        stored = rpc(restarted, "session_get", {"session_id": "c"})["result"]
        after = rpc(
            restarted, "create_message", {"session_id": "c", "message": "Bye", "max_new_tokens": 8}
        )
        again = rpc(restarted, "session_get", {"session_id": "c"})["result"]
    finally:
        stop_server(restarted)

    assert stored["turns"] == 1
    assert stored["history"] == first["result"]["history"]
    assert "result" in after
    assert again["turns"] == 2
    assert again["history"][:2] == first["result"]["history"]


def test_sigterm_lets_a_stream_run_until_the_timeout_then_answers_32003_and_exits_0(
    tmp_path: Path,
) -> None:
    server = start_server(
        tmp_path / "server.log", "--parallel", "1", "--ctx-size", "2048", "--shutdown-timeout", "1"
    )
    try:
        terminate = lambda: server.process.send_signal(signal.SIGTERM)  # noqa: E731
        events = events_after_first_delta(
            server, {"message": "Tell me a long story.", **LONG}, terminate
        )
        code = server.process.wait(timeout=EXIT_BOUND_S)
    finally:
        if server.process.poll() is None:
            stop_server(server)

    assert len(events) > 1
    assert events[-1]["code"] == -32003
    assert code == 0


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "server.log",
        "--parallel",
        "1",
        "--ctx-size",
        "2048",
        "--shutdown-timeout",
        "600",
    )

    def terminate_twice() -> None:
        server.process.send_signal(signal.SIGTERM)
        server.process.send_signal(signal.SIGTERM)

    try:
        events_after_first_delta(
            server, {"message": "Tell me a long story.", **LONG}, terminate_twice
        )
        server.process.wait(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_BOUND_S} s after a second SIGTERM")
    finally:
        if server.process.poll() is None:
            stop_server(server)
