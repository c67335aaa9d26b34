"""A full queue is refused at once: -32000 on /rpc, HTTP 503 with Retry-After on /stream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.slow

LONG = {
    "message": "Write a long, detailed essay of at least 3000 words about the Roman Empire.",
    "temperature": 0,
    "max_new_tokens": 1500,
}


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One slot and no waiting room: a second request while one streams is refused."""
    log = tmp_path_factory.mktemp("busy") / "server.log"
    server = start_server(log, "--parallel", "1", "--max-queue", "0", "--ctx-size", "1024")
    yield server
    stop_server(server)


def test_a_request_beyond_the_queue_is_refused_at_once(busy_server: RunningServer) -> None:
    with httpx.stream("POST", f"{busy_server.url}/stream", json=LONG, timeout=60) as streaming:
        lines = streaming.iter_lines()  # kept referenced: a collected iterator closes the stream
        for line in lines:
            if line.startswith("data:"):
                break

        started = time.monotonic()
        rpc = httpx.post(
            f"{busy_server.url}/rpc",
            json={"jsonrpc": "2.0", "id": 1, "method": "create_message", "params": LONG},
            timeout=30,
        )
        sse = httpx.post(f"{busy_server.url}/stream", json=LONG, timeout=30)
        elapsed = time.monotonic() - started

    assert rpc.status_code == 200
    assert rpc.json()["error"]["code"] == -32000
    assert rpc.json()["error"]["data"]["retry_after_s"] > 0
    assert sse.status_code == 503
    assert int(sse.headers["Retry-After"]) >= 1
    assert sse.json()["error"]["code"] == -32000
    assert elapsed < 2.0  # refused at once, not after the running essay
