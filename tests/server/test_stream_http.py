"""Behaviour of `POST /stream` (and `GET /health`) over in-process HTTP.

In-process clients buffer the whole response, so these tests check what the stream holds, not
when it arrives; delivery and disconnects are tested against a real server on a loopback port.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.server.apps import PARIS, make_app, serving
from toolrpc.config import Settings
from toolrpc.engines.base import GenerationRequest
from toolrpc.errors import GenerationCancelled

WAIT_S = 2.0  # bound on every wait in this module

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


async def post_stream(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    """POST to /stream: raw bytes as they are, anything else as JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with asyncio.timeout(WAIT_S):
        return await client.post(
            "/stream", content=content, headers={"content-type": "application/json"}
        )


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON objects of an SSE body: events split on blank lines, their `data:` lines read."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


async def stream_events(client: httpx.AsyncClient, body: Any) -> list[dict[str, Any]]:
    """POST a valid body; return its events (the response must be an event stream)."""
    response = await post_stream(client, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.text)


def delta_text(events: list[dict[str, Any]]) -> str:
    return "".join(event["delta"] for event in events if "delta" in event)


async def test_a_stream_is_deltas_then_one_done_event_with_the_result() -> None:
    app, _ = make_app("Hello there, how are you?")

    async with serving(app) as client:
        events = await stream_events(client, {"message": "Hi"})

    *deltas, done = events
    assert len(deltas) > 1
    assert all(set(event) == {"delta"} for event in deltas)
    assert done["done"] is True
    result = done["result"]
    assert result["type"] == "final_text"
    assert result["finish_reason"] == "stop"
    assert result["iteration_count"] == 0
    assert result["history"][-1] == {"role": "assistant", "content": result["content"]}


async def test_the_concatenated_deltas_equal_the_final_content() -> None:
    reply = "Line one.\n\nLine two,  with  spaces and unicode: café ✓ 東京"
    app, _ = make_app(reply)

    async with serving(app) as client:
        events = await stream_events(client, {"message": "Hi"})

    assert delta_text(events) == reply
    assert events[-1]["result"]["content"] == reply


async def test_every_event_is_a_data_line_holding_one_json_object() -> None:
    app, _ = make_app("a b c")

    async with serving(app) as client:
        response = await post_stream(client, {"message": "Hi"})

    blocks = [block for block in response.text.split("\n\n") if block.strip()]
    assert blocks
    for block in blocks:
        assert block.startswith("data: ")
        assert isinstance(json.loads(block.removeprefix("data: ")), dict)


async def test_a_tool_call_reply_gives_a_tool_calls_event_and_no_markup_in_deltas() -> None:
    app, _ = make_app("Let me check the weather. " + PARIS)

    async with serving(app) as client:
        events = await stream_events(client, {"message": "Paris?", "tools": [WEATHER]})

    assert all("<tool_call>" not in event["delta"] for event in events if "delta" in event)
    assert delta_text(events) == "Let me check the weather."
    [calls_event] = [event for event in events if "tool_calls" in event]
    [tool_call] = calls_event["tool_calls"]
    assert (tool_call["name"], tool_call["arguments"]) == ("get_weather", {"city": "Paris"})
    done = events[-1]
    assert done["done"] is True
    assert done["result"]["type"] == "tool_calls"
    assert done["result"]["content"] == calls_event["tool_calls"]
    assert events.index(calls_event) == len(events) - 2


async def test_tool_results_sent_to_the_stream_give_the_final_answer() -> None:
    app, _ = make_app(PARIS, "It is sunny in Paris.")

    async with serving(app) as client:
        first = await stream_events(client, {"message": "Paris?", "tools": [WEATHER]})
        result = first[-1]["result"]
        tool_results = [{"tool_call_id": c["id"], "content": "sunny"} for c in result["content"]]
        second = await stream_events(
            client,
            {"history": result["history"], "tool_results": tool_results, "tools": [WEATHER]},
        )

    assert delta_text(second) == "It is sunny in Paris."
    assert second[-1]["result"]["iteration_count"] == 1
    assert not any("tool_calls" in event for event in second)


async def test_a_loop_guard_answer_streams_as_text_with_finish_reason_loop_guard() -> None:
    app, _ = make_app(PARIS, PARIS, "Sunny.")

    async with serving(app) as client:
        first = await stream_events(client, {"message": "Paris?", "tools": [WEATHER]})
        result = first[-1]["result"]
        tool_results = [{"tool_call_id": c["id"], "content": "sunny"} for c in result["content"]]
        second = await stream_events(
            client,
            {"history": result["history"], "tool_results": tool_results, "tools": [WEATHER]},
        )

    assert not any("tool_calls" in event for event in second)
    assert delta_text(second) == "Sunny."
    assert second[-1]["result"]["finish_reason"] == "loop_guard"


async def test_a_failure_after_the_first_event_is_an_error_event_that_ends_the_stream() -> None:
    def time_out(request: GenerationRequest) -> str:
        raise GenerationCancelled("ran past its time limit")

    app, _ = make_app(PARIS, "Checking again. " + PARIS, time_out)

    async with serving(app) as client:
        first = await stream_events(client, {"message": "Paris?", "tools": [WEATHER]})
        result = first[-1]["result"]
        tool_results = [{"tool_call_id": c["id"], "content": "sunny"} for c in result["content"]]
        second = await stream_events(
            client,
            {"history": result["history"], "tool_results": tool_results, "tools": [WEATHER]},
        )

    assert delta_text(second) == "Checking again."
    assert second[-1]["code"] == -32003
    assert isinstance(second[-1]["error"], str)
    assert not any("done" in event for event in second)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"message": "Hi", "colour": "blue"}, id="unknown-field"),
        pytest.param({"message": "Hi", "max_new_tokens": 0}, id="zero-tokens"),
        pytest.param({"history": []}, id="neither-message-nor-tool-results"),
        pytest.param({"message": "Hi", "tools": [{"name": "bad name"}]}, id="bad-tool-name"),
        pytest.param({"message": "Hi", "session_id": ""}, id="empty-session-id"),
        pytest.param({"message": "Hi", "tool_choice": {"name": "nope"}}, id="unknown-named-tool"),
        pytest.param({"message": "Hi", "tool_choice": "required"}, id="required-without-tools"),
        pytest.param(["Hi"], id="not-an-object"),
    ],
)
async def test_invalid_params_are_http_422_with_code_32602(body: Any) -> None:
    app, engine = make_app()

    async with serving(app) as client:
        response = await post_stream(client, body)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == -32602
    assert engine.requests == []


async def test_invalid_params_list_each_problem_with_its_location() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        response = await post_stream(client, {"message": "Hi", "max_new_tokens": 0})

    data = response.json()["error"]["data"]
    assert [item["loc"] for item in data] == [["max_new_tokens"]]


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"message": "Hi"', b"\xff\xfe", b'{"message": "Hi", "top_p": NaN}']
)
async def test_a_body_that_is_not_json_is_http_400_with_code_32700(body: bytes) -> None:
    app, engine = make_app()

    async with serving(app) as client:
        response = await post_stream(client, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700
    assert engine.requests == []


async def test_a_prompt_over_the_context_window_is_http_400_with_code_32002() -> None:
    app, _ = make_app(context_length=10)

    async with serving(app) as client:
        response = await post_stream(client, {"message": "word " * 50})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == -32002
    assert error["data"]["context_length"] == 10
    assert error["data"]["prompt_tokens"] >= 50


async def test_a_result_for_an_unknown_call_id_is_http_400_with_code_32005() -> None:
    app, engine = make_app()
    body = {"tool_results": [{"tool_call_id": "call_nope", "content": "x"}]}

    async with serving(app) as client:
        response = await post_stream(client, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32005
    assert engine.requests == []


async def test_a_body_over_the_limit_is_http_413() -> None:
    app, engine = make_app(settings=Settings(max_body_bytes=2048))

    async with serving(app) as client:
        response = await post_stream(client, {"message": "x" * 4096})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32600
    assert engine.requests == []


async def test_max_new_tokens_is_capped_by_the_server_limit() -> None:
    app, engine = make_app("ok", settings=Settings(max_new_tokens_limit=16))

    async with serving(app) as client:
        await stream_events(client, {"message": "Hi", "max_new_tokens": 1000})

    assert engine.requests[-1].max_new_tokens == 16


async def test_health_is_ok_once_the_engine_is_ready() -> None:
    app, _ = make_app()

    async with serving(app) as client, asyncio.timeout(WAIT_S):
        response = await client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
