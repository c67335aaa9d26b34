"""Sessions and shutdown against real server processes (the embedded model, loopback port).

SIGKILL in the middle of a streamed step: the completed turns are in the file, the interrupted
one is not, and the conversation goes on after a restart. SIGTERM: the running stream ends with
-32003 after --shutdown-timeout and the process exits 0; a second SIGTERM exits at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.slow

EXIT_BOUND_S = 20.0
LONG = {
    "message": "Write a long, detailed essay of at least 3000 words about the history of Rome.",
    "max_new_tokens": 1500,
    "temperature": 0.0,
}
"""A stream that outlasts the shutdown timeout: greedy, the embedded model writes this essay for
hundreds of tokens (a sampled "Tell me a long story." ended after 41 tokens, 0.4 s on a fast
day: under the 1 s timeout of the SIGTERM test)."""


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
        params = {"session_id": "c", **LONG}
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
        events = events_after_first_delta(server, LONG, terminate)
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

    def terminate_until_gone() -> None:
        # Two signals sent back to back may reach Python as one (a pending signal is a flag),
        # so keep signalling: every SIGTERM after the first one handled must end the process.
        deadline = time.monotonic() + EXIT_BOUND_S
        while time.monotonic() < deadline:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout=0.5)
                return
            except subprocess.TimeoutExpired:
                continue

    try:
        events_after_first_delta(server, LONG, terminate_until_gone)
        code = server.process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_BOUND_S} s after repeated SIGTERMs")
    finally:
        if server.process.poll() is None:
            stop_server(server)

    assert code == 1


def test_a_session_follow_up_reuses_as_many_cached_tokens_as_the_same_history(
    tmp_path: Path,
) -> None:
    flags = ("--parallel", "1", "--ctx-size", "2048", "--tool-router", "off")
    server = start_server(tmp_path / "server.log", *flags)
    greedy = {"max_new_tokens": 12, "temperature": 0}
    try:
        rpc(server, "create_message", {"session_id": "p", "message": "Name a colour.", **greedy})
        by_session = rpc(server, "create_message", {"session_id": "p", "message": "Why?", **greedy})
        first = rpc(server, "create_message", {"message": "Name a colour.", **greedy})
        history = first["result"]["history"]
        by_history = rpc(
            server, "create_message", {"history": history, "message": "Why?", **greedy}
        )
    finally:
        stop_server(server)

    session_usage = by_session["result"]["usage"]
    history_usage = by_history["result"]["usage"]
    assert session_usage["cached_tokens"] > 0
    assert session_usage["cached_tokens"] == history_usage["cached_tokens"]
    assert session_usage["prompt_tokens"] == history_usage["prompt_tokens"]
