"""The protocol suite against a real server process, once per engine (the `server` fixture):
answers, turns, forced tool calls, streaming, disconnects, context limits. Assertions that only
a real model can meet (the city it extracts, text arriving over time) are made for `gguf`."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import pytest

from tests.e2e.conftest import RunningServer

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
MARKUP = ("<tool_call>", "</tool_call>", "<|im_start|>", "<|im_end|>")


def rpc(server: RunningServer, params: dict[str, Any]) -> dict[str, Any]:
    """Call create_message and return its result (fails the test on a JSON-RPC error)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "create_message", "params": params}
    response = httpx.post(f"{server.url}/rpc", json=body, timeout=120)
    assert response.status_code == 200
    answer = response.json()
    assert "error" not in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


def sse_events(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of `data:` lines."""
    return [json.loads(line[len("data:") :]) for line in lines if line.startswith("data:")]


def metric(server: RunningServer, name: str) -> float:
    """One sample of the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_plain_message_gets_a_final_text_answer(server: RunningServer) -> None:
    result = rpc(server, {"message": "What is the capital of France?", "temperature": 0})

    assert result["type"] == "final_text"
    assert not any(marker in result["content"] for marker in MARKUP)
    assert result["iteration_count"] == 0
    assert result["finish_reason"] in ("stop", "length")
    assert [m["role"] for m in result["history"]] == ["user", "assistant"]
    assert result["usage"]["prompt_tokens"] > 0 and result["usage"]["completion_tokens"] > 0


def test_a_second_turn_continues_from_the_returned_history(server: RunningServer) -> None:
    first = rpc(server, {"message": "My name is Ada.", "temperature": 0})
    second = rpc(
        server,
        {"message": "What is my name?", "history": first["history"], "temperature": 0},
    )

    assert second["type"] == "final_text"
    assert [m["role"] for m in second["history"]] == ["user", "assistant", "user", "assistant"]
    assert second["history"][:2] == first["history"]
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


def test_a_forced_tool_call_validates_and_its_result_gives_a_final_answer(
    server: RunningServer,
) -> None:
    asked = rpc(
        server,
        {
            "message": "What's the weather in Paris?",
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "temperature": 0,
        },
    )

    assert asked["type"] == "tool_calls"
    assert asked["finish_reason"] == "tool_calls"
    assert asked["iteration_count"] == 1
    [call] = asked["content"]
    assert call["name"] == "get_weather"
    if server.kind == "gguf":
        assert call["arguments"] == {"city": "Paris"}
    jsonschema.validate(call["arguments"], WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]

    answered = rpc(
        server,
        {
            "history": asked["history"],
            "tools": [WEATHER_TOOL],
            "tool_results": [
                {"tool_call_id": call["id"], "content": {"temp_c": 18, "sky": "sunny"}}
            ],
            "temperature": 0,
        },
    )

    assert answered["type"] == "final_text"
    assert answered["iteration_count"] == 1
    assert not any(marker in answered["content"] for marker in MARKUP)
    assert [m["role"] for m in answered["history"]] == ["user", "assistant", "tool", "assistant"]


def test_a_named_tool_choice_calls_that_tool(server: RunningServer) -> None:
    time_tool = {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
        },
    }
    result = rpc(
        server,
        {
            "message": "What time is it in Tokyo?",
            "tools": [WEATHER_TOOL, time_tool],
            "tool_choice": {"name": "get_time"},
            "temperature": 0,
        },
    )

    assert result["type"] == "tool_calls"
    assert [call["name"] for call in result["content"]] == ["get_time"]
    jsonschema.validate(result["content"][0]["arguments"], time_tool["parameters"])


def test_stream_deltas_arrive_before_the_end(server: RunningServer) -> None:
    arrivals: list[tuple[float, dict[str, Any]]] = []
    body = {"message": "Tell me about the Moon.", "temperature": 0, "max_new_tokens": 96}
    with httpx.stream("POST", f"{server.url}/stream", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            for event in sse_events([line]):
                arrivals.append((time.monotonic(), event))

    deltas = [(t, e) for t, e in arrivals if "delta" in e]
    done_at, done = arrivals[-1]
    assert done["done"] is True
    if server.kind == "gguf":  # the tiny random model writes only newlines, held to the end
        assert len(deltas) >= 10
        assert done_at - deltas[0][0] > 0.1  # the first text came well before the end
    assert "".join(e["delta"] for _, e in deltas) == done["result"]["content"]


def test_a_forced_tool_call_streams_no_markup(server: RunningServer) -> None:
    body = {
        "message": "What's the weather in Paris?",
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "temperature": 0,
    }
    with httpx.stream("POST", f"{server.url}/stream", json=body, timeout=120) as response:
        events = sse_events(list(response.iter_lines()))

    assert [e["tool_calls"][0]["name"] for e in events if "tool_calls" in e] == ["get_weather"]
    assert all(not any(m in e["delta"] for m in MARKUP) for e in events if "delta" in e)
    assert events[-1]["result"]["type"] == "tool_calls"


def test_a_disconnected_stream_frees_the_engine_for_the_next_request(
    server: RunningServer,
) -> None:
    cancelled_before = metric(server, "toolrpc_generations_cancelled_total")
    long_body = {
        "message": "Write a long, detailed essay of at least 3000 words about the Roman Empire.",
        "temperature": 0,
        "max_new_tokens": 1500,  # ~15 s on two cores if it were not cancelled
    }
    with httpx.stream("POST", f"{server.url}/stream", json=long_body, timeout=60) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data:")
            if received == 3:
                break  # leaving the block closes the connection mid-stream

    started = time.monotonic()
    result = rpc(server, {"message": "Say hi.", "temperature": 0, "max_new_tokens": 8})
    elapsed = time.monotonic() - started

    assert result["type"] == "final_text"
    assert elapsed < 5.0  # the server has one slot: the essay would hold it for ~15 s
    assert metric(server, "toolrpc_generations_cancelled_total") == cancelled_before + 1
    assert metric(server, "toolrpc_running_sequences") == 0


def test_a_prompt_past_the_context_window_is_refused_with_its_token_counts(
    server: RunningServer,
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "create_message",
        "params": {"message": "word " * 3000},
    }
    answer = httpx.post(f"{server.url}/rpc", json=body, timeout=60).json()

    assert answer["id"] == 7
    assert answer["error"]["code"] == -32002
    assert answer["error"]["data"]["context_length"] == server.context_length
    assert answer["error"]["data"]["prompt_tokens"] > server.context_length
