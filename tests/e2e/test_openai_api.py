"""`/v1` with the official `openai` SDK against a real server process on the embedded model:
answers, streams, a forced call whose arguments validate, JSON output that parses, and
disconnects that cancel the generation (streamed or not)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.e2e.test_protocol_suite import MARKUP, metric

pytestmark = pytest.mark.slow

SERVED = "smol"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
ESSAY: Any = [
    {
        "role": "user",
        "content": "Write a long, detailed essay of at least 3000 words about the Roman Empire.",
    }
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One slot, so a generation that is not cancelled blocks the next request."""
    log = tmp_path_factory.mktemp("v1") / "server.log"
    flags = ["--parallel", "1", "--ctx-size", "2048", "--served-model-name", SERVED]
    running = start_server(log, *flags)
    yield running
    stop_server(running)


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    """The SDK pointed at the server (no retries, bounded waits: 300 s, because a 48-token
    answer took 70 s on two cores shared with other test runs at load 12)."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_the_served_model_answers_a_chat(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [SERVED]

    answer = client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=48,
    )

    choice = answer.choices[0]
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_a_stream_delivers_text_without_markup(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "Tell me about the Moon."}],
        temperature=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert not any(marker in text for marker in MARKUP)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_call_has_arguments_that_validate(client: openai.OpenAI, stream: bool) -> None:
    messages: Any = [{"role": "user", "content": "What's the weather in Paris?"}]
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    if stream:
        with client.chat.completions.stream(
            model=SERVED, messages=messages, tools=[WEATHER], tool_choice=choice, temperature=0
        ) as events:
            answer = events.get_final_completion()
    else:
        answer = client.chat.completions.create(
            model=SERVED, messages=messages, tools=[WEATHER], tool_choice=choice, temperature=0
        )

    assert answer.choices[0].finish_reason == "tool_calls"
    [call] = answer.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_a_json_object_answer_parses(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
    )

    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_a_completion_continues_a_plain_prompt(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model=SERVED, prompt="The capital of France is", max_tokens=8, temperature=0
    )

    assert answer.choices[0].text.strip()
    assert answer.usage is not None and answer.usage.completion_tokens <= 8


def assert_cancelled_and_slot_freed(server: RunningServer, cancelled_before: float) -> None:
    """One more generation was cancelled, and the one slot serves the next request (the essay
    would hold it for ~15 s: bounded by the client's timeout instead of a timing assertion,
    which a loaded machine makes flaky)."""
    deadline = time.monotonic() + 10.0
    while metric(server, "toolrpc_generations_cancelled_total") < cancelled_before + 1:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.05)
    quick = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": SERVED, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert quick.status_code == 200
    assert metric(server, "toolrpc_running_sequences") == 0


def test_a_disconnected_stream_cancels_the_generation(server: RunningServer) -> None:
    cancelled_before = metric(server, "toolrpc_generations_cancelled_total")
    body = {"model": SERVED, "messages": ESSAY, "max_tokens": 1500, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()  # kept referenced: a collected iterator closes the stream
        received = 0
        for line in lines:
            received += line.startswith("data:")
            if received == 3:
                break  # leaving the block closes the connection mid-stream

    assert_cancelled_and_slot_freed(server, cancelled_before)


def test_a_client_leaving_a_plain_request_cancels_the_generation(server: RunningServer) -> None:
    cancelled_before = metric(server, "toolrpc_generations_cancelled_total")
    body = json.dumps({"model": SERVED, "messages": ESSAY, "max_tokens": 1500}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    # A raw socket, so the client leaves exactly once the generation is running.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        deadline = time.monotonic() + 30.0
        while metric(server, "toolrpc_running_sequences") < 1:
            assert time.monotonic() < deadline, "the generation did not start"
            time.sleep(0.05)

    assert_cancelled_and_slot_freed(server, cancelled_before)
