"""`/v1` errors in OpenAI's shape and status, raised by the `openai` SDK as its own exception
types; `/v1/models`; and `/v1/completions` (a plain prompt, no chat template)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import openai
import pytest

from tests.server.v1.sdk import WEATHER, client_of, sdk, v1_app
from toolrpc.config import Settings
from toolrpc.engines.base import GenerationRequest
from toolrpc.engines.fake import FakeEngine
from toolrpc.errors import Overloaded

WAIT_S = 5.0  # bound on every request here
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]


async def bad_request(**fields: Any) -> openai.BadRequestError:
    """The SDK's error for a chat completion with `fields` (which must be refused)."""
    async with client_of("unused") as (client, engine), asyncio.timeout(WAIT_S):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(**{"model": "fake", "messages": ASK, **fields})
    assert engine.requests == []
    return raised.value


async def test_n_above_one_is_a_bad_request_naming_n() -> None:
    error = await bad_request(n=2)

    assert error.status_code == 400
    assert error.body["param"] == "n"  # type: ignore[index]
    assert error.body["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ({"messages": []}, "messages"),
        ({"temperature": 5}, "temperature"),
        ({"logprobs": True}, "logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
    ],
)
async def test_invalid_params_are_400_not_422_and_name_the_field(fields: Any, param: str) -> None:
    error = await bad_request(**fields)

    assert error.status_code == 400
    assert error.body["param"] == param  # type: ignore[index]


async def test_call_arguments_that_are_not_json_are_a_bad_request() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{"}}
    messages = [*ASK, {"role": "assistant", "tool_calls": [call]}]

    error = await bad_request(messages=messages, tools=[WEATHER])

    assert error.body["param"] == "messages[1].tool_calls"  # type: ignore[index]


async def test_a_tool_result_for_no_call_is_a_bad_request() -> None:
    messages = [*ASK, {"role": "tool", "tool_call_id": "nope", "content": "x"}]

    error = await bad_request(messages=messages)

    assert error.body["type"] == "invalid_request_error"  # type: ignore[index]


async def test_unknown_fields_are_ignored() -> None:
    async with client_of("Hi.") as (client, _), asyncio.timeout(WAIT_S):
        answer = await client.chat.completions.create(
            model="fake",
            messages=ASK,
            user="u1",
            logit_bias={"1": 2},
            frequency_penalty=0.5,
            extra_body={"not_a_field": True},
        )

    assert answer.choices[0].message.content == "Hi."


async def test_an_unknown_model_is_not_found() -> None:
    async with client_of("unused") as (client, _), asyncio.timeout(WAIT_S):
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-4o", messages=ASK)
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-4o")

    assert raised.value.body["code"] == "model_not_found"  # type: ignore[index]


async def test_a_prompt_over_the_context_is_context_length_exceeded() -> None:
    engine = FakeEngine(context_length=4)
    async with sdk(v1_app(engine)) as client, asyncio.timeout(WAIT_S):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="fake", messages=ASK)

    assert raised.value.code == "context_length_exceeded"


async def test_a_full_queue_is_503_with_retry_after_also_when_streaming() -> None:
    def overloaded(_request: GenerationRequest) -> str:
        raise Overloaded("the request queue is full", retry_after_s=2.0)

    engine = FakeEngine([overloaded, overloaded])
    async with sdk(v1_app(engine)) as client, asyncio.timeout(WAIT_S):
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as raised:
                await client.chat.completions.create(model="fake", messages=ASK, stream=stream)
            assert raised.value.status_code == 503
            assert raised.value.response.headers["Retry-After"] == "2"
            assert raised.value.code == "overloaded"


async def test_a_body_over_the_limit_is_413() -> None:
    app = v1_app(FakeEngine(), Settings(max_body_bytes=1024))
    async with sdk(app) as client, asyncio.timeout(WAIT_S):
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "x" * 2000}]
            )

    assert raised.value.status_code == 413


async def test_a_body_that_is_not_json_and_an_unknown_route_are_openai_errors() -> None:
    transport = httpx2.ASGITransport(app=v1_app(FakeEngine()))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
        async with asyncio.timeout(WAIT_S):
            garbage = await http.post("/v1/chat/completions", content=b"{not json")
            missing = await http.post("/v1/embeddings", json={"model": "fake", "input": "x"})

    assert garbage.status_code == 400
    assert garbage.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


async def test_models_lists_the_served_name() -> None:
    settings = Settings(served_model_name="smol")
    async with sdk(v1_app(FakeEngine(), settings)) as client, asyncio.timeout(WAIT_S):
        listed = [model.id async for model in client.models.list()]
        one = await client.models.retrieve("smol")
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="fake", messages=ASK)

    assert listed == ["smol"]
    assert one.id == "smol" and one.object == "model"


async def test_a_completion_continues_the_raw_prompt() -> None:
    async with client_of("jumps over the lazy dog", "jumps over") as (client, engine):
        async with asyncio.timeout(WAIT_S):
            whole = await client.completions.create(
                model="fake", prompt="The quick brown fox", max_tokens=3, stop=["\n"]
            )
            stream = await client.completions.create(
                model="fake",
                prompt=["The quick brown fox"],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]

    assert whole.object == "text_completion"
    assert whole.choices[0].text == " jumps over the"[1:]
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 3
    assert [r.prompt for r in engine.requests] == ["The quick brown fox"] * 2
    assert engine.requests[0].stop == ("\n",)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "jumps over"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_a_completion_refuses_what_it_cannot_honour() -> None:
    async with client_of("unused") as (client, _), asyncio.timeout(WAIT_S):
        for fields in ({"echo": True}, {"logprobs": 2}, {"n": 3}, {"prompt": ["a", "b"]}):
            with pytest.raises(openai.BadRequestError):
                await client.completions.create(**{"model": "fake", "prompt": "x", **fields})
