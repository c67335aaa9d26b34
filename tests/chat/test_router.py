"""The tool router: options scored by the engine, the decision applied to the step."""

from __future__ import annotations

import asyncio

from tests.chat.steps import run_step as run_chat_step
from toolrpc.chat.conversation import Chat
from toolrpc.chat.model import PromptedModel
from toolrpc.chat.router import (
    ANSWER_TASK,
    CONTENT_FREE_REQUEST,
    RERANKED,
    UNFILLABLE,
    ToolRouter,
)
from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE, ChatTemplate
from toolrpc.chat.turn import Turn
from toolrpc.engines.fake import FakeEngine
from toolrpc.protocol import CreateMessageResult, Message, Tool, ToolCall

WEATHER = Tool.model_validate(
    {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
)
EMAIL = Tool.model_validate(
    {
        "name": "send_email",
        "description": "Send an email message to someone",
        "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
    }
)
TOOLS = [WEATHER, EMAIL]


def user(text: str) -> Message:
    return Message(role="user", content=text)


async def decide(
    engine: FakeEngine, messages: list[Message], *, may_answer: bool = True, bias: float = 0.0
) -> str | None:
    async with asyncio.timeout(2):
        decision = await ToolRouter(engine, bias=bias).decide(
            Turn.of(messages), TOOLS, may_answer=may_answer
        )
    return None if decision.tool is None else decision.tool.name


async def test_a_request_matching_a_tools_description_chooses_that_tool() -> None:
    engine = FakeEngine()

    assert await decide(engine, [user("what is the current weather in Paris")]) == "get_weather"
    assert await decide(engine, [user("send an email to Bob")]) == "send_email"


async def test_a_request_matching_no_tool_is_answered() -> None:
    engine = FakeEngine()

    assert await decide(engine, [user("explain how rainbows form")]) is None


async def test_every_option_is_scored_against_the_last_user_message() -> None:
    engine = FakeEngine()

    await decide(engine, [user("an older question"), user("the latest question")])

    channel = [(p, c) for p, c in engine.scored if p.startswith("Task:")]
    assert {continuation for _, continuation in channel} == {"the latest question"}
    prompts = [prompt for prompt, _ in channel]
    assert any(ANSWER_TASK in p for p in prompts)
    assert any(WEATHER.function.description in p for p in prompts)
    assert len(prompts) == len(TOOLS) + 1
    direct = [(p, c) for p, c in engine.scored if p.startswith("User request:")]
    assert sorted(c for p, c in direct if "the latest question" in p) == [
        "get_weather - Get the current weather for a city.",
        "send_email - Send an email message to someone.",
    ]
    assert sum(CONTENT_FREE_REQUEST in p for p, _ in direct) == len(TOOLS)


async def test_content_free_priors_are_scored_once_per_tool() -> None:
    engine = FakeEngine()
    router = ToolRouter(engine)

    for question in ("send an email to Bob", "what is the weather in Oslo"):
        await router.decide(Turn.of([user(question)]), TOOLS)

    priors = [p for p, _ in engine.scored if CONTENT_FREE_REQUEST in p]
    assert len(priors) == len(TOOLS)


async def test_a_tool_task_says_what_the_tool_needs() -> None:
    engine = FakeEngine()

    await decide(engine, [user("hello")])

    assert any("(needs city)" in p for p, _ in engine.scored)


async def test_one_tool_without_the_answer_option_is_chosen_without_scoring() -> None:
    engine = FakeEngine()
    decision = await ToolRouter(engine).decide(Turn.of([user("hello")]), [EMAIL], may_answer=False)

    assert decision.tool is EMAIL
    assert engine.scored == []


async def test_a_tool_the_model_favours_after_any_request_does_not_win_by_default() -> None:
    def favours_email(prompt: str, continuation: str) -> float:
        """Likes send_email after every request, content-free ones included."""
        if continuation.startswith("send_email"):
            return -0.1
        if continuation.startswith("get_weather"):
            return -0.5 if "weather" in prompt else -3.0
        return -1.0  # the noisy channel cannot tell the tools apart

    engine = FakeEngine(scorer=favours_email)

    assert await decide(engine, [user("weather in Oslo?")], may_answer=False) == "get_weather"


async def test_after_a_tool_result_the_answer_option_carries_the_results() -> None:
    engine = FakeEngine()
    call = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"})
    messages = [
        user("what is the current weather in Paris"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", content="sunny, the current weather in Paris"),
    ]

    assert await decide(engine, messages) is None
    answer_prompt = next(p for p, _ in engine.scored if "returned" in p)
    assert 'get_weather({"city": "Paris"}) returned sunny' in answer_prompt


async def test_without_the_answer_option_a_tool_is_always_chosen() -> None:
    engine = FakeEngine()

    assert await decide(engine, [user("explain how rainbows form")], may_answer=False) in {
        "get_weather",
        "send_email",
    }
    assert not any(ANSWER_TASK in p for p, _ in engine.scored)


async def test_the_bias_moves_the_choice_towards_answering() -> None:
    engine = FakeEngine()
    request = [user("what is the current weather in Paris")]

    assert await decide(engine, request, bias=0.0) == "get_weather"
    assert await decide(engine, request, bias=10.0) is None


async def run_step(engine: FakeEngine, params: dict[str, object]) -> CreateMessageResult:
    chat = Chat(
        PromptedModel(engine, ChatTemplate(DEFAULT_CHATML_TEMPLATE)), router=ToolRouter(engine)
    )
    _, result = await run_chat_step(chat, TOOLS, **params)
    return result


async def test_auto_with_a_chosen_tool_generates_its_call_under_that_tools_schema() -> None:
    engine = FakeEngine(['{"name": "get_weather", "arguments": {"city": "Paris"}}'])

    result = await run_step(engine, {"message": "what is the current weather in Paris"})

    assert result.type == "tool_calls"
    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"city": "Paris"}
    schema = engine.requests[0].json_schema
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "get_weather"}  # type: ignore[index]


async def test_auto_choosing_to_answer_generates_without_tools() -> None:
    engine = FakeEngine(["Rainbows form when light refracts."])

    result = await run_step(engine, {"message": "explain how rainbows form"})

    assert result.type == "final_text"
    assert result.content == "Rainbows form when light refracts."
    assert engine.requests[0].json_schema is None
    assert "<tools>" not in engine.requests[0].prompt


async def test_required_lets_the_router_pick_which_tool_is_forced() -> None:
    engine = FakeEngine(['{"name": "send_email", "arguments": {"to": "Bob"}}'])

    result = await run_step(engine, {"message": "send an email to Bob", "tool_choice": "required"})

    assert result.type == "tool_calls"
    schema = engine.requests[0].json_schema
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "send_email"}  # type: ignore[index]


async def test_a_named_tool_choice_bypasses_the_router() -> None:
    engine = FakeEngine(['{"name": "get_weather", "arguments": {"city": "Oslo"}}'])

    result = await run_step(
        engine, {"message": "send an email to Bob", "tool_choice": {"name": "get_weather"}}
    )

    assert result.type == "tool_calls"
    assert engine.scored == []


async def test_tool_choice_none_bypasses_the_router() -> None:
    engine = FakeEngine(["Fine."])

    result = await run_step(
        engine, {"message": "what is the current weather in Paris", "tool_choice": "none"}
    )

    assert result.type == "final_text"
    assert engine.scored == []


async def test_a_forced_call_cut_short_is_never_returned_as_text() -> None:
    engine = FakeEngine(['{"name": "send_email", "arguments": {"to": "Bob and Alice and'])

    result = await run_step(engine, {"message": "send an email to Bob", "tool_choice": "required"})

    assert result.type == "final_text"
    assert result.content == ""
    assert "send_email" not in str(result.history[-1].content)


async def test_only_the_noisy_channels_best_few_tools_are_re_ranked() -> None:
    engine = FakeEngine()
    many = [
        Tool.model_validate({"name": f"tool_{i}", "description": f"Handle topic number {i}"})
        for i in range(RERANKED + 3)
    ]

    decision = await ToolRouter(engine).decide(
        Turn.of([user("topic number 2")]), many, may_answer=False
    )

    direct = [c for p, c in engine.scored if p.startswith("User request:") and "topic" in p]
    assert len(direct) == RERANKED
    assert decision.tool is not None and decision.tool.name == "tool_2"


RECTANGLE = Tool.model_validate(
    {
        "name": "rectangle_area",
        "description": "Compute the area of a rectangle",
        "parameters": {
            "type": "object",
            "properties": {"width": {"type": "number"}, "height": {"type": "number"}},
            "required": ["width", "height"],
        },
    }
)


async def test_a_tool_whose_required_numbers_no_one_gave_is_not_called_nor_scored() -> None:
    engine = FakeEngine()
    request = [user("What is the circumference of a rectangle area circle of radius 3?")]

    decision = await ToolRouter(engine).decide(Turn.of(request), [RECTANGLE])

    assert decision.tool is None and decision.abstained == UNFILLABLE
    assert engine.scored == []


async def test_an_unfillable_tool_leaves_the_choice_to_the_others() -> None:
    engine = FakeEngine()
    request = [user("rectangle area and the current weather for a city")]

    decision = await ToolRouter(engine).decide(Turn.of(request), [RECTANGLE, WEATHER])

    assert decision.tool is not None and decision.tool.name == "get_weather"
    assert not any("rectangle" in prompt for prompt, _ in engine.scored)


async def test_a_tool_whose_numbers_the_request_gives_can_be_called() -> None:
    engine = FakeEngine()
    request = [user("compute the area of a rectangle 3 by 4")]

    decision = await ToolRouter(engine).decide(Turn.of(request), [RECTANGLE])

    assert decision.tool is RECTANGLE and decision.abstained is None


async def test_required_calls_a_tool_even_when_its_numbers_are_missing() -> None:
    engine = FakeEngine()

    decision = await ToolRouter(engine).decide(
        Turn.of([user("area of a rectangle")]), [RECTANGLE, WEATHER], may_answer=False
    )

    assert decision.tool is RECTANGLE


async def test_when_answering_beats_every_tool_the_direct_channel_is_not_scored() -> None:
    engine = FakeEngine()

    decision = await ToolRouter(engine, bias=0.0).decide(
        Turn.of([user("chat, write, explain or answer from general knowledge")]), TOOLS
    )

    assert decision.tool is None
    assert len(engine.scored) == len(TOOLS) + 1
    assert not any(prompt.startswith("User request:") for prompt, _ in engine.scored)
