"""toolrpc in front of two real replicas (the scripted fake OpenAI server, as processes on
loopback): balancing, affinity, disconnect propagation, a replica killed and restarted, all
replicas down, an unreachable upstream at start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.upstream.processes import ROOT, Upstream, restart, start_fake, wait_until

WAIT_S = 20.0
WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@contextmanager
def two_replicas_behind_toolrpc(folder: Path) -> Iterator[tuple[RunningServer, list[Upstream]]]:
    """Two fake replicas, A and B, and toolrpc in front, probing them every 0.1 s."""
    started = [start_fake(folder, "A"), start_fake(folder, "B")]
    flags = [flag for upstream in started for flag in ("--upstream", upstream.url)]
    try:
        server = start_server(folder / "front.log", *flags, "--upstream-health-interval-s", "0.1")
        yield server, started
        stop_server(server)
    finally:
        for upstream in started:
            upstream.stop()


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, list[Upstream]]]:
    """One set for the tests that leave every replica running (starting three processes takes
    seconds on a busy machine)."""
    with two_replicas_behind_toolrpc(tmp_path_factory.mktemp("shared")) as started:
        yield started


@pytest.fixture
def front(shared: tuple[RunningServer, list[Upstream]]) -> RunningServer:
    return shared[0]


@pytest.fixture
def replicas(shared: tuple[RunningServer, list[Upstream]]) -> list[Upstream]:
    return shared[1]


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[RunningServer, list[Upstream]]]:
    """A set of its own, for a test that kills replicas."""
    with two_replicas_behind_toolrpc(tmp_path) as started:
        yield started


def create_message(server: RunningServer, **params: Any) -> dict[str, Any]:
    """One `/rpc` create_message; its `result` or `error` object."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "create_message", "params": params}
    answer: dict[str, Any] = httpx.post(f"{server.url}/rpc", json=body, timeout=WAIT_S).json()
    return answer


def served_by(answer: dict[str, Any]) -> str:
    """Which fake replica wrote a final answer ("A" or "B")."""
    content: str = answer["result"]["content"]
    return content.removeprefix("replica ")[0]


def health(server: RunningServer) -> httpx.Response:
    return httpx.get(f"{server.url}/health", timeout=5)


def test_requests_of_different_conversations_are_spread_over_both_replicas(
    front: RunningServer, replicas: list[Upstream]
) -> None:
    answers = [create_message(front, message=f"question {i}") for i in range(8)]

    assert {served_by(answer) for answer in answers} == {"A", "B"}
    served = [upstream.stats()["requests"] for upstream in replicas]
    assert abs(served[0] - served[1]) <= 1  # the earlier tests' imbalance is evened out
    assert all(upstream["healthy"] for upstream in health(front).json()["upstreams"])
    metrics = httpx.get(f"{front.url}/metrics", timeout=5).text
    assert f'toolrpc_upstream_requests_total{{url="{replicas[0].url}"}} {served[0]}.0' in metrics


def test_every_turn_of_a_conversation_goes_to_the_replica_of_its_first_turn(
    front: RunningServer,
) -> None:
    first = create_message(front, message="hello", system="s")
    replica = served_by(first)
    history = first["result"]["history"]
    create_message(front, message="another conversation")  # the other replica is now behind

    for turn in range(3):
        answer = create_message(front, message=f"turn {turn}", history=history)
        assert served_by(answer) == replica
        history = answer["result"]["history"]


def test_a_forced_call_through_the_upstream_is_validated_and_returned(
    front: RunningServer, replicas: list[Upstream]
) -> None:
    valid = create_message(
        front,
        message='call get_weather {"city": "Paris"}',
        tools=[WEATHER],
        tool_choice={"name": "get_weather"},
    )

    result = valid["result"]
    assert result["type"] == "tool_calls"
    assert result["content"][0]["arguments"] == {"city": "Paris"}
    bodies = [upstream.stats()["last_body"] or {} for upstream in replicas]
    sent = next(body for body in bodies if "tools" in body)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_the_openai_sdk_gets_answers_and_streamed_calls_through_the_front(
    front: RunningServer,
) -> None:
    """`/v1` in front of the replicas: the official SDK, unchanged (a plain answer, and a
    forced call streamed as OpenAI's fragments, reassembled and validated)."""
    client = OpenAI(base_url=f"{front.url}/v1", api_key="unused", timeout=WAIT_S, max_retries=0)
    model = client.models.list().data[0].id

    plain = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello there"}]
    )
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": 'call get_weather {"city": "Oslo"}'}],
        tools=[{"type": "function", "function": WEATHER}],  # type: ignore[list-item]
        tool_choice="required",
        stream=True,
    )
    chunks = list(stream)

    assert model == "fake-model"
    assert (plain.choices[0].message.content or "").startswith("replica ")
    fragments = [
        call.function.arguments or ""
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or []
        if call.function is not None
    ]
    assert json.loads("".join(fragments)) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(choice.delta.content for chunk in chunks for choice in chunk.choices)


def test_closing_the_client_stream_closes_the_upstream_stream(
    front: RunningServer, replicas: list[Upstream]
) -> None:
    with (
        httpx.Client(timeout=WAIT_S) as client,
        client.stream("POST", f"{front.url}/stream", json={"message": "hold"}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()  # one iterator: dropping one closes the connection
        assert "holding" in next(lines)
        assert sum(u.stats()["holding"] for u in replicas) == 1

    wait_until(
        lambda: sum(u.stats()["disconnects"] for u in replicas) == 1, WAIT_S, "upstream saw it"
    )
    assert sum(u.stats()["holding"] for u in replicas) == 0


def test_a_killed_replica_fails_its_stream_clearly_new_requests_go_to_the_other_and_it_comes_back(
    own: tuple[RunningServer, list[Upstream]],
) -> None:
    front, replicas = own
    with (
        httpx.Client(timeout=WAIT_S) as client,
        client.stream("POST", f"{front.url}/stream", json={"message": "hold"}) as response,
    ):
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        victim = replicas[0] if "replica A" in first else replicas[1]
        survivor = replicas[1] if victim is replicas[0] else replicas[0]
        victim.kill()
        events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]

    assert events[-1]["code"] == -32000  # Overloaded: retry, another replica will answer
    answers = [create_message(front, message=f"after {i}") for i in range(3)]
    assert {served_by(answer) for answer in answers} == {survivor.command[-1]}
    assert any(not u["healthy"] for u in health(front).json()["upstreams"])

    replicas[replicas.index(victim)] = restart(victim)
    wait_until(
        lambda: all(u["healthy"] for u in health(front).json()["upstreams"]),
        WAIT_S,
        "the restarted replica taken back",
    )
    answers = [create_message(front, message=f"back {i}") for i in range(4)]
    assert victim.command[-1] in {served_by(answer) for answer in answers}


def test_all_replicas_down_is_503_with_retry_after_and_minus_32000(
    own: tuple[RunningServer, list[Upstream]],
) -> None:
    front, replicas = own
    for upstream in replicas:
        upstream.kill()
    wait_until(lambda: health(front).status_code == 503, WAIT_S, "/health reports it")

    streamed = httpx.post(f"{front.url}/stream", json={"message": "hi"}, timeout=WAIT_S)
    assert streamed.status_code == 503
    assert float(streamed.headers["retry-after"]) > 0
    assert create_message(front, message="hi")["error"]["code"] == -32000


def test_an_unreachable_upstream_at_start_is_one_line_and_exit_code_2() -> None:
    command = [sys.executable, "-m", "toolrpc", "serve", "--upstream", "http://127.0.0.1:9/v1"]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("toolrpc serve: error: --upstream: no upstream answered")
    assert "Traceback" not in done.stderr
