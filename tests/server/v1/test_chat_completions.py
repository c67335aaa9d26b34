"""`POST /v1/chat/completions` through the official `openai` SDK over a scripted FakeEngine:
answers, streams, tools, response formats and usage come back in the SDK's own types."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncGenerator
from typing import Any

from tests.server.v1.sdk import WEATHER, client_of, sdk, v1_app
from toolrpc.chat.loopguard import LOOP_GUARD_NOTE
from toolrpc.engines.base import Chunk, GenerationRequest
from toolrpc.engines.fake import FakeEngine
from toolrpc.openai_protocol import JSON_OBJECT_SCHEMA

WAIT_S = 5.0  # bound on every request here
PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ROME = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]


class CachingEngine(FakeEngine):
    """A FakeEngine whose usage says 3 prompt tokens came from the prefix cache."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        async for chunk in super().generate(request):
            if chunk.usage is not None:
                chunk = dataclasses.replace(
                    chunk, usage=dataclasses.replace(chunk.usage, cached_tokens=3)
                )
            yield chunk


async def test_a_plain_answer_comes_back_as_a_chat_completion() -> None:
    async with client_of("Sunny and mild.") as (client, engine):
        async with asyncio.timeout(WAIT_S):
            answer = await client.chat.completions.create(
                model="fake", messages=ASK, temperature=0, seed=7, max_tokens=50
            )

    assert answer.object == "chat.completion"
    assert answer.model == "fake"
    assert answer.choices[0].message.content == "Sunny and mild."
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    request = engine.requests[0]
    assert (request.sampling.temperature, request.sampling.seed, request.max_new_tokens) == (
        0,
        7,
        50,
    )
    assert "Weather in Paris?" in request.prompt


async def test_usage_reports_the_cached_prompt_tokens() -> None:
    engine = CachingEngine(["Sunny."])
    async with sdk(v1_app(engine)) as client, asyncio.timeout(WAIT_S):
        answer = await client.chat.completions.create(model="fake", messages=ASK)

    assert answer.usage is not None
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 3
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 1


async def test_system_developer_and_text_parts_reach_the_prompt() -> None:
    messages: Any = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
        },
    ]
    async with client_of("Hello.") as (client, engine), asyncio.timeout(WAIT_S):
        await client.chat.completions.create(model="fake", messages=messages)

    prompt = engine.requests[0].prompt
    assert "<|im_start|>system\nBe brief." in prompt
    assert "Hi there" in prompt


async def test_a_stream_sends_the_role_then_content_then_the_finish_and_usage() -> None:
    async with client_of("Sunny and mild today.") as (client, _), asyncio.timeout(WAIT_S):
        stream = await client.chat.completions.create(
            model="fake", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Sunny and mild today."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


async def test_auto_returns_the_models_call_with_its_arguments_as_json_text() -> None:
    async with client_of(PARIS) as (client, engine), asyncio.timeout(WAIT_S):
        answer = await client.chat.completions.create(model="fake", messages=ASK, tools=[WEATHER])

    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert engine.requests[0].json_schema is None
    assert "get_weather" in engine.requests[0].prompt


async def test_required_and_a_named_tool_constrain_the_output_to_a_call() -> None:
    bare = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    async with client_of(bare, bare) as (client, engine), asyncio.timeout(WAIT_S):
        for choice in ["required", named]:
            answer = await client.chat.completions.create(
                model="fake", messages=ASK, tools=[WEATHER], tool_choice=choice
            )
            assert answer.choices[0].finish_reason == "tool_calls"

    for request in engine.requests:
        assert request.json_schema is not None
        assert request.json_schema["properties"]["name"] == {"const": "get_weather"}  # type: ignore[index,call-overload]


async def test_a_streamed_call_is_reassembled_by_the_sdk() -> None:
    async with (
        client_of(PARIS) as (client, _),
        asyncio.timeout(WAIT_S),
        client.chat.completions.stream(model="fake", messages=ASK, tools=[WEATHER]) as stream,
    ):
        async for _event in stream:
            pass
        final = await stream.get_final_completion()

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content in (None, "")
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


async def test_without_parallel_tool_calls_one_call_comes_back() -> None:
    async with client_of(PARIS + "\n" + ROME, PARIS + "\n" + ROME) as (client, _):
        async with asyncio.timeout(WAIT_S):
            single = await client.chat.completions.create(
                model="fake", messages=ASK, tools=[WEATHER], parallel_tool_calls=False
            )
            both = await client.chat.completions.create(model="fake", messages=ASK, tools=[WEATHER])

    assert len(single.choices[0].message.tool_calls or []) == 1
    assert len(both.choices[0].message.tool_calls or []) == 2


async def test_response_formats_reach_the_engine_as_its_json_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    formats: list[Any] = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
        {"type": "text"},
    ]
    async with client_of('{"city": "Paris"}', '{"city": "Rome"}', "Paris.") as (client, engine):
        async with asyncio.timeout(WAIT_S):
            answers = [
                await client.chat.completions.create(model="fake", messages=ASK, response_format=f)
                for f in formats
            ]

    assert [r.json_schema for r in engine.requests] == [JSON_OBJECT_SCHEMA, schema, None]
    assert json.loads(answers[1].choices[0].message.content or "") == {"city": "Rome"}


async def test_the_loop_guard_reads_the_turn_from_messages_and_finishes_with_stop() -> None:
    messages: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    async with client_of(PARIS, "It is sunny in Paris.") as (client, engine):
        async with asyncio.timeout(WAIT_S):
            answer = await client.chat.completions.create(
                model="fake", messages=messages, tools=[WEATHER]
            )

    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content == "It is sunny in Paris."
    assert LOOP_GUARD_NOTE in engine.requests[1].prompt
