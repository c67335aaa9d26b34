"""Load and faults against a real server process (the embedded model, loopback port).

Load: 64 clients at once against `--parallel 4 --max-queue 8`: every request completes or is
refused at once (-32000), and afterwards /metrics shows nothing running or waiting. Faults: a
stream cut mid-generation, a client that stalls mid-body, a client that never reads its stream:
none of them keeps another client from its answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.slow

NUM_CLIENTS = 64
REFUSAL_BOUND_S = 5.0
ANSWER_BOUND_S = 180.0
SHORT = {"message": "Say hi.", "max_new_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("load")
    flags = ["--parallel", "4", "--max-queue", "8", "--ctx-size", "1024", "--tool-router", "off"]
    server = start_server(folder / "server.log", *flags)
    yield server
    stop_server(server)


def gauges(server: RunningServer) -> dict[str, float]:
    """The running and waiting gauges of /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("toolrpc_running_sequences", "toolrpc_waiting_sequences"):
            found[name] = float(value)
    return found


async def one_client(client: httpx.AsyncClient, number: int) -> tuple[str, float]:
    body = {"jsonrpc": "2.0", "method": "create_message", "params": SHORT, "id": number}
    started = time.perf_counter()
    async with asyncio.timeout(ANSWER_BOUND_S):
        answer = (await client.post("/rpc", json=body)).json()
    elapsed = time.perf_counter() - started
    if "result" in answer:
        return "completed", elapsed
    return f"error {answer['error']['code']}", elapsed


@pytest.fixture(scope="module")
def crowd(busy_server: RunningServer) -> list[tuple[str, float]]:
    """The outcome and time of each of `NUM_CLIENTS` requests sent at once."""

    async def send_all() -> list[tuple[str, float]]:
        limits = httpx.Limits(max_connections=NUM_CLIENTS)
        async with httpx.AsyncClient(
            base_url=busy_server.url, limits=limits, timeout=ANSWER_BOUND_S
        ) as client:
            return await asyncio.gather(*(one_client(client, n) for n in range(NUM_CLIENTS)))

    outcomes = asyncio.run(send_all())
    refusals = [round(t, 2) for kind, t in outcomes if kind == "error -32000"]
    completed = [round(t, 2) for kind, t in outcomes if kind == "completed"]
    print(
        f"load: {NUM_CLIENTS} clients, {len(completed)} completed, {len(refusals)} refused; "
        f"refusal times (s) {sorted(refusals)}; completion times (s) {sorted(completed)}; "
        f"after: {gauges(busy_server)}"
    )
    return outcomes


def test_64_clients_each_complete_or_are_refused_and_nothing_leaks(
    busy_server: RunningServer, crowd: list[tuple[str, float]]
) -> None:
    kinds = [kind for kind, _ in crowd]

    assert set(kinds) <= {"completed", "error -32000"}
    assert kinds.count("completed") >= 12  # 4 running + 8 queued are always taken
    assert gauges(busy_server) == {
        "toolrpc_running_sequences": 0.0,
        "toolrpc_waiting_sequences": 0.0,
    }


def test_64_clients_past_the_queue_are_refused_at_once(crowd: list[tuple[str, float]]) -> None:
    refusals = [elapsed for kind, elapsed in crowd if kind == "error -32000"]

    assert all(elapsed < REFUSAL_BOUND_S for elapsed in refusals)


def raw_post(server: RunningServer, path: str, body: bytes, *, declared: int) -> socket.socket:
    """A socket that sent the headers of a POST declaring `declared` bytes and then `body`."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def test_cut_stalled_and_unread_clients_do_not_block_another_client(
    busy_server: RunningServer,
) -> None:
    long: dict[str, Any] = {"message": "Tell me a long story.", "max_new_tokens": 400}
    payload = json.dumps(long).encode()
    stalled = raw_post(busy_server, "/rpc", payload[:10], declared=len(payload) + 100)
    unread = raw_post(busy_server, "/stream", payload, declared=len(payload))
    with httpx.stream(
        "POST", f"{busy_server.url}/stream", json=long, timeout=ANSWER_BOUND_S
    ) as cut:
        next(line for line in cut.iter_lines() if line.startswith("data:"))
    try:
        started = time.perf_counter()
        body = {"jsonrpc": "2.0", "method": "create_message", "params": SHORT, "id": 1}
        answer = httpx.post(f"{busy_server.url}/rpc", json=body, timeout=ANSWER_BOUND_S).json()
        print(f"faults: another client answered in {time.perf_counter() - started:.2f} s")
    finally:
        stalled.close()
        unread.close()

    assert "result" in answer
