"""toolrpc (`--upstream`) in front of llama-cpp-python's own OpenAI server on the embedded model:
/rpc and /stream, plain and with tools, forced calls validated, the loop guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.upstream.processes import start_llama_cpp_server
from toolrpc.engines.default_model import embedded_model_path

pytestmark = pytest.mark.slow

WAIT_S = 120.0
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
    },
}
MARKUP = ("<tool_call>", "</tool_call>", "<|im_start|>", "<|im_end|>")


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """llama_cpp.server on the embedded model, and toolrpc in front of it."""
    folder = tmp_path_factory.mktemp("llama-cpp-server")
    upstream = start_llama_cpp_server(folder, embedded_model_path())
    try:
        server = start_server(folder / "front.log", "--upstream", upstream.url)
        yield server
        stop_server(server)
    finally:
        upstream.stop()


def rpc(server: RunningServer, **params: Any) -> dict[str, Any]:
    """create_message's result (fails the test on a JSON-RPC error)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "create_message", "params": params}
    answer: dict[str, Any] = httpx.post(f"{server.url}/rpc", json=body, timeout=WAIT_S).json()
    assert "error" not in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


def stream(server: RunningServer, **params: Any) -> list[dict[str, Any]]:
    """Every event of one /stream."""
    with httpx.stream("POST", f"{server.url}/stream", json=params, timeout=WAIT_S) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    return [json.loads(line[len("data:") :]) for line in lines if line.startswith("data:")]


def test_health_reports_the_upstream_and_the_model_it_serves(front: RunningServer) -> None:
    health = httpx.get(f"{front.url}/health", timeout=5).json()

    assert health["status"] == "ok"
    assert health["model"].endswith(".gguf")
    assert [upstream["healthy"] for upstream in health["upstreams"]] == [True]


def test_a_plain_message_gets_the_upstream_answer(front: RunningServer) -> None:
    result = rpc(front, message="Say hello.", temperature=0, max_new_tokens=24)

    assert result["type"] == "final_text"
    assert result["content"].strip()
    assert result["iteration_count"] == 0
    assert [m["role"] for m in result["history"]] == ["user", "assistant"]


def test_a_plain_stream_sends_deltas_that_make_the_answer(front: RunningServer) -> None:
    events = stream(front, message="Tell me about the Moon.", temperature=0, max_new_tokens=32)

    deltas = [event["delta"] for event in events if "delta" in event]
    assert len(deltas) >= 5
    assert events[-1]["done"] is True
    assert "".join(deltas) == events[-1]["result"]["content"]


def test_a_forced_call_validates_and_its_result_gives_a_final_answer(front: RunningServer) -> None:
    asked = rpc(
        front,
        message="What's the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
    )

    assert asked["type"] == "tool_calls"
    assert asked["iteration_count"] == 1
    [call] = asked["content"]
    assert call["name"] == "get_weather"
    jsonschema.validate(call["arguments"], WEATHER["parameters"])

    answered = rpc(
        front,
        history=asked["history"],
        tools=[WEATHER],
        tool_results=[{"tool_call_id": call["id"], "content": {"temp_c": 18}}],
        temperature=0,
        max_new_tokens=48,
    )

    assert answered["type"] == "final_text"
    assert answered["iteration_count"] == 1
    assert not any(marker in answered["content"] for marker in MARKUP)
    assert [m["role"] for m in answered["history"]] == ["user", "assistant", "tool", "assistant"]


def test_the_loop_guard_takes_the_tools_away_after_max_iterations(front: RunningServer) -> None:
    asked = rpc(
        front,
        message="What's the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"name": "get_weather"},
        temperature=0,
    )
    [call] = asked["content"]

    guarded = rpc(
        front,
        history=asked["history"],
        tools=[WEATHER],
        tool_choice={"name": "get_weather"},
        tool_results=[{"tool_call_id": call["id"], "content": "sunny"}],
        max_iterations=1,
        temperature=0,
        max_new_tokens=48,
    )

    assert guarded["type"] == "final_text"
    assert guarded["finish_reason"] == "loop_guard"
    assert guarded["iteration_count"] == 1


def test_a_forced_call_streams_no_markup(front: RunningServer) -> None:
    events = stream(
        front,
        message="What's the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"name": "get_weather"},
        temperature=0,
    )

    assert [e["tool_calls"][0]["name"] for e in events if "tool_calls" in e] == ["get_weather"]
    assert all(not any(m in e["delta"] for m in MARKUP) for e in events if "delta" in e)
    assert events[-1]["result"]["type"] == "tool_calls"
