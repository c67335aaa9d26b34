"""What a step does with the two request properties the offer carries for the OpenAI API: the
answer schema (`response_format`) and `parallel_tool_calls`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from toolrpc.chat.conversation import Chat, DoneEvent, StepEvent, StepRequest, ToolCallsEvent
from toolrpc.chat.model import PromptedModel
from toolrpc.chat.offer import offer_tools
from toolrpc.chat.template import ChatTemplate
from toolrpc.chat.turn import Turn
from toolrpc.engines.fake import FAKE_CHAT_TEMPLATE, FakeEngine
from toolrpc.protocol import Message, NamedToolChoice, Tool, ToolCall, ToolChoice
from toolrpc.types import JSONObject

WAIT_S = 2.0  # bound on every step here
WEATHER = Tool.model_validate(
    {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
)
ANSWER: JSONObject = {"type": "object", "properties": {"city": {"type": "string"}}}
QUESTION = (Message(role="user", content="Weather in Paris and Rome?"),)


def call_markup(city: str) -> str:
    payload = {"name": "get_weather", "arguments": {"city": city}}
    return f"<tool_call>\n{json.dumps(payload)}\n</tool_call>"


async def run(engine: FakeEngine, **fields: Any) -> list[StepEvent]:
    chat = Chat(PromptedModel(engine, ChatTemplate(FAKE_CHAT_TEMPLATE, eos_token="<|im_end|>")))
    request = StepRequest(conversation=fields.pop("conversation", QUESTION), **fields)
    async with asyncio.timeout(WAIT_S):
        return [event async for event in chat.step(request)]


async def test_an_answer_schema_constrains_a_step_that_offers_no_tools() -> None:
    engine = FakeEngine(['{"city": "Paris"}'])

    events = await run(engine, answer_schema=ANSWER)

    assert engine.requests[0].json_schema == ANSWER
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.result.content == '{"city": "Paris"}'


async def test_with_tools_shown_the_answer_schema_leaves_the_model_free_to_call() -> None:
    engine = FakeEngine([call_markup("Paris")])

    events = await run(engine, tools=(WEATHER,), answer_schema=ANSWER)

    assert engine.requests[0].json_schema is None
    assert isinstance(events[0], ToolCallsEvent)


async def test_tool_choice_none_with_tools_applies_the_answer_schema() -> None:
    engine = FakeEngine(['{"city": "Rome"}'])

    await run(engine, tools=(WEATHER,), tool_choice="none", answer_schema=ANSWER)

    assert engine.requests[0].json_schema == ANSWER


async def test_the_loop_guards_answer_is_held_to_the_answer_schema() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"})
    conversation = (
        *QUESTION,
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", content="sunny"),
    )
    engine = FakeEngine([call_markup("Paris"), '{"city": "Paris"}'])

    events = await run(engine, conversation=conversation, tools=(WEATHER,), answer_schema=ANSWER)

    assert [r.json_schema for r in engine.requests] == [None, ANSWER]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.result.finish_reason == "loop_guard"


async def test_without_parallel_calls_only_the_first_call_is_returned_and_kept() -> None:
    engine = FakeEngine([call_markup("Paris") + "\n" + call_markup("Rome")])

    events = await run(engine, tools=(WEATHER,), parallel_tool_calls=False)

    calls = next(e for e in events if isinstance(e, ToolCallsEvent)).calls
    assert [c.arguments for c in calls] == [{"city": "Paris"}]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert done.result.history[-1].tool_calls == list(calls)


async def test_parallel_calls_are_all_returned_by_default() -> None:
    engine = FakeEngine([call_markup("Paris") + "\n" + call_markup("Rome")])

    events = await run(engine, tools=(WEATHER,))

    calls = next(e for e in events if isinstance(e, ToolCallsEvent)).calls
    assert [c.arguments["city"] for c in calls] == ["Paris", "Rome"]


def test_a_forced_call_keeps_its_call_schema_whatever_the_answer_schema() -> None:
    turn = Turn.of(QUESTION)
    choices: list[ToolChoice] = ["required", NamedToolChoice(name="get_weather")]
    for choice in choices:
        offer = offer_tools(choice, [WEATHER], turn, 5, answer_schema=ANSWER)
        schema = offer.json_schema()
        assert schema is not None and schema != ANSWER
        assert offer.routed(None).json_schema() == ANSWER
