"""Behaviour of one conversation step (`Chat.step`): every branch of the tool loop.

Each test drives a `Chat` over a scripted `FakeEngine` and checks the step's events, its
result, and what the engine was asked (`FakeEngine.requests`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from tests.chat import steps
from toolrpc.chat.conversation import Chat, DeltaEvent, StepEvent, ToolCallsEvent
from toolrpc.chat.loopguard import LOOP_GUARD_NOTE
from toolrpc.chat.model import PromptedModel
from toolrpc.chat.template import ChatTemplate
from toolrpc.engines.fake import FAKE_CHAT_TEMPLATE, FakeEngine, Reply
from toolrpc.errors import InvalidParams, ToolProtocolError
from toolrpc.protocol import CreateMessageResult, Tool

WAIT_S = 2.0  # bound on every wait in this module

WEATHER = Tool.model_validate(
    {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }
)
TIME = Tool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a time zone.",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    }
)
TOOLS = [WEATHER, TIME]


def call_markup(name: str, arguments: dict[str, Any]) -> str:
    """A Hermes tool call as a model writes it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


PARIS = call_markup("get_weather", {"city": "Paris"})


def make_session(*script: Reply) -> tuple[Chat, FakeEngine]:
    """A chat over a FakeEngine that answers with `script`, one reply per generation."""
    engine = FakeEngine(script)
    template = ChatTemplate(FAKE_CHAT_TEMPLATE, eos_token="<|im_end|>")
    return Chat(PromptedModel(engine, template)), engine


async def run_step(
    session: Chat, tools: Sequence[Tool] = (), **params: Any
) -> tuple[list[StepEvent], CreateMessageResult]:
    """Run one step to its end; return its events and its result."""
    return await steps.run_step(session, tools, wait_s=WAIT_S, **params)


def wire_history(result: CreateMessageResult) -> list[Any]:
    """The result's history as a client sends it back."""
    history: list[Any] = result.model_dump(mode="json", exclude_none=True)["history"]
    return history


def deltas(events: Sequence[StepEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, DeltaEvent))


def num_pieces(text: str) -> int:
    """How many "tokens" FakeEngine counts in a reply."""
    return len(re.findall(r"\s*\S+|\s+", text))


async def first_round(session: Chat, **params: Any) -> CreateMessageResult:
    """Ask about the weather; the script's next reply must be a call."""
    _, result = await run_step(session, TOOLS, message="Weather in Paris?", **params)
    assert result.type == "tool_calls"
    return result


def results_for(result: CreateMessageResult, content: Any = "sunny, 21 C") -> list[Any]:
    assert isinstance(result.content, list)
    return [{"tool_call_id": call.id, "content": content} for call in result.content]


async def test_a_plain_answer_is_final_text_with_no_tool_rounds() -> None:
    session, engine = make_session("Hello there!")

    events, result = await run_step(session, message="Hi")

    assert result.type == "final_text"
    assert result.content == "Hello there!"
    assert result.iteration_count == 0
    assert result.finish_reason == "stop"
    assert [(m.role, m.content) for m in result.history] == [
        ("user", "Hi"),
        ("assistant", "Hello there!"),
    ]
    assert deltas(events) == "Hello there!"
    assert len(engine.requests) == 1


async def test_a_tool_call_in_the_reply_is_returned_with_a_fresh_id() -> None:
    session, _ = make_session(PARIS, PARIS)

    events, result = await run_step(session, TOOLS, message="Weather in Paris?")
    _, again = await run_step(session, TOOLS, message="Weather in Paris?")

    assert result.type == "tool_calls"
    assert result.finish_reason == "tool_calls"
    assert result.iteration_count == 1
    assert isinstance(result.content, list)
    [call] = result.content
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert call.id
    assert isinstance(again.content, list)
    assert again.content[0].id != call.id
    last = result.history[-1]
    assert last.role == "assistant"
    assert last.tool_calls == [call]
    assert [e.calls for e in events if isinstance(e, ToolCallsEvent)] == [(call,)]


async def test_several_calls_in_one_reply_each_get_their_own_id() -> None:
    reply = (
        PARIS + "\n" + call_markup("get_weather", {"city": "Rome"}) + call_markup("get_time", {})
    )
    session, _ = make_session(reply)

    _, result = await run_step(session, TOOLS, message="Weather in Paris and Rome, and the time?")

    assert isinstance(result.content, list)
    assert [(c.name, c.arguments) for c in result.content] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
        ("get_time", {}),
    ]
    assert len({c.id for c in result.content}) == 3
    assert result.history[-1].tool_calls == result.content


async def test_tool_results_sent_back_give_a_final_answer_in_the_same_round() -> None:
    session, engine = make_session(PARIS, "It is sunny in Paris.")
    calls = await first_round(session)

    events, result = await run_step(
        session, TOOLS, history=wire_history(calls), tool_results=results_for(calls)
    )

    assert result.type == "final_text"
    assert result.content == "It is sunny in Paris."
    assert result.iteration_count == 1
    assert result.finish_reason == "stop"
    assert [m.role for m in result.history] == ["user", "assistant", "tool", "assistant"]
    assert isinstance(calls.content, list)
    assert result.history[2].tool_call_id == calls.content[0].id
    assert result.history[2].content == "sunny, 21 C"
    assert "sunny, 21 C" in engine.requests[-1].prompt
    assert deltas(events) == result.content


async def test_json_tool_results_are_kept_as_json_text() -> None:
    session, _ = make_session(PARIS, "Sunny.")
    calls = await first_round(session)

    _, result = await run_step(
        session,
        TOOLS,
        history=wire_history(calls),
        tool_results=results_for(calls, {"sky": "clear", "temp_c": 21}),
    )

    tool_message = result.history[2]
    assert tool_message.content is not None
    assert json.loads(tool_message.content) == {"sky": "clear", "temp_c": 21}


async def test_an_error_tool_result_is_marked_as_an_error() -> None:
    session, engine = make_session(PARIS, "Sorry, I could not get the weather.")
    calls = await first_round(session)
    [result_in] = results_for(calls, "service unavailable")

    _, result = await run_step(
        session,
        TOOLS,
        history=wire_history(calls),
        tool_results=[{**result_in, "is_error": True}],
    )

    tool_message = result.history[2]
    assert tool_message.content is not None
    assert tool_message.content.startswith("ERROR")
    assert "service unavailable" in tool_message.content
    assert tool_message.content in engine.requests[-1].prompt


@pytest.mark.parametrize(
    "tool_results",
    [
        pytest.param(lambda ids: [{"tool_call_id": "call_unknown", "content": "x"}], id="unknown"),
        pytest.param(
            lambda ids: (
                [{"tool_call_id": ids[0], "content": "x"}] * 2
                + [{"tool_call_id": ids[1], "content": "y"}]
            ),
            id="duplicate",
        ),
        pytest.param(lambda ids: [{"tool_call_id": ids[0], "content": "x"}], id="missing"),
    ],
)
async def test_tool_results_that_do_not_match_the_pending_calls_are_a_tool_protocol_error(
    tool_results: Any,
) -> None:
    two_calls = PARIS + call_markup("get_weather", {"city": "Rome"})
    session, engine = make_session(two_calls)
    calls = await first_round(session)
    assert isinstance(calls.content, list)
    ids = [call.id for call in calls.content]

    with pytest.raises(ToolProtocolError) as caught:
        await run_step(session, TOOLS, history=wire_history(calls), tool_results=tool_results(ids))

    assert caught.value.code == -32005
    assert len(engine.requests) == 1


async def test_tool_results_after_an_answer_without_calls_are_a_tool_protocol_error() -> None:
    session, engine = make_session("Hello!")
    _, plain = await run_step(session, TOOLS, message="Hi")

    with pytest.raises(ToolProtocolError) as caught:
        await run_step(
            session,
            TOOLS,
            history=wire_history(plain),
            tool_results=[{"tool_call_id": "call_1", "content": "x"}],
        )

    assert caught.value.code == -32005
    assert len(engine.requests) == 1


async def test_a_new_message_while_calls_wait_for_results_is_a_tool_protocol_error() -> None:
    session, engine = make_session(PARIS)
    calls = await first_round(session)

    with pytest.raises(ToolProtocolError) as caught:
        await run_step(session, TOOLS, history=wire_history(calls), message="Never mind.")

    assert caught.value.code == -32005
    assert len(engine.requests) == 1


async def test_a_repeated_answered_call_ends_the_turn_with_a_loop_guard_answer() -> None:
    session, engine = make_session(PARIS, PARIS, "It is sunny in Paris.")
    calls = await first_round(session)

    events, result = await run_step(
        session, TOOLS, history=wire_history(calls), tool_results=results_for(calls)
    )

    assert result.type == "final_text"
    assert result.content == "It is sunny in Paris."
    assert result.finish_reason == "loop_guard"
    assert result.iteration_count == 1
    assert not any(isinstance(event, ToolCallsEvent) for event in events)
    assert result.history[-1].role == "assistant"
    assert not result.history[-1].tool_calls
    assert len(engine.requests) == 3
    assert "<tools>" in engine.requests[1].prompt
    guard = engine.requests[-1]
    assert guard.json_schema is None
    assert "<tools>" not in guard.prompt
    assert LOOP_GUARD_NOTE in guard.prompt
    assert LOOP_GUARD_NOTE not in str(result.history)


async def test_usage_is_summed_over_both_generations_of_the_loop_guard() -> None:
    answer = "It is sunny in Paris."
    session, engine = make_session(PARIS, PARIS, answer)
    calls = await first_round(session)

    _, result = await run_step(
        session, TOOLS, history=wire_history(calls), tool_results=results_for(calls)
    )

    first, guard = engine.requests[1], engine.requests[2]
    assert result.usage.prompt_tokens == len(first.prompt.split()) + len(guard.prompt.split())
    assert result.usage.completion_tokens == num_pieces(PARIS) + num_pieces(answer)


async def test_a_call_with_other_arguments_is_not_a_repeat() -> None:
    rome = call_markup("get_weather", {"city": "Rome"})
    session, _ = make_session(PARIS, rome)
    calls = await first_round(session)

    _, result = await run_step(
        session, TOOLS, history=wire_history(calls), tool_results=results_for(calls)
    )

    assert result.type == "tool_calls"
    assert result.iteration_count == 2
    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"city": "Rome"}


async def test_after_max_iterations_rounds_the_next_step_answers_without_tools() -> None:
    rome = call_markup("get_weather", {"city": "Rome"})
    session, engine = make_session(PARIS, rome + "Rome is sunny too.")
    calls = await first_round(session, max_iterations=1)

    events, result = await run_step(
        session,
        TOOLS,
        history=wire_history(calls),
        tool_results=results_for(calls),
        max_iterations=1,
    )

    assert result.type == "final_text"
    assert result.finish_reason == "loop_guard"
    assert result.iteration_count == 1
    assert result.content == "Rome is sunny too."
    assert not any(isinstance(event, ToolCallsEvent) for event in events)
    assert not result.history[-1].tool_calls
    request = engine.requests[-1]
    assert request.json_schema is None
    assert "<tools>" not in request.prompt
    assert LOOP_GUARD_NOTE in request.prompt
    assert len(engine.requests) == 2


async def test_tool_choice_none_offers_no_tools_and_drops_calls_in_the_reply() -> None:
    session, engine = make_session("Let me look." + PARIS)

    events, result = await run_step(session, TOOLS, message="Weather in Paris?", tool_choice="none")

    assert result.type == "final_text"
    assert result.content == "Let me look."
    assert result.finish_reason == "stop"
    assert not any(isinstance(event, ToolCallsEvent) for event in events)
    assert "<tools>" not in engine.requests[-1].prompt
    assert engine.requests[-1].json_schema is None


async def test_tool_choice_auto_puts_the_tools_in_the_prompt_without_a_constraint() -> None:
    session, engine = make_session("Hi!")

    await run_step(session, TOOLS, message="Hi")

    request = engine.requests[-1]
    assert "<tools>" in request.prompt
    assert "get_weather" in request.prompt
    assert request.json_schema is None


async def test_tool_choice_required_constrains_the_output_to_a_call_of_any_tool() -> None:
    session, engine = make_session('{"name": "get_time", "arguments": {"tz": "UTC"}}')

    _, result = await run_step(session, TOOLS, message="What time is it?", tool_choice="required")

    schema: Any = engine.requests[-1].json_schema
    assert schema is not None
    names = [variant["properties"]["name"]["const"] for variant in schema["anyOf"]]
    assert names == ["get_weather", "get_time"]
    assert result.type == "tool_calls"
    assert isinstance(result.content, list)
    assert [(c.name, c.arguments) for c in result.content] == [("get_time", {"tz": "UTC"})]


async def test_tool_choice_required_with_one_tool_constrains_to_that_tool() -> None:
    session, engine = make_session('{"name": "get_weather", "arguments": {"city": "Oslo"}}')

    _, result = await run_step(session, [WEATHER], message="Oslo?", tool_choice="required")

    schema: Any = engine.requests[-1].json_schema
    assert schema is not None
    assert "anyOf" not in schema
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER.function.parameters
    assert result.type == "tool_calls"


@pytest.mark.parametrize(
    "tool_choice", [{"name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}]
)
async def test_a_named_tool_choice_constrains_the_output_to_that_tool_only(
    tool_choice: dict[str, Any],
) -> None:
    session, engine = make_session('{"name": "get_time", "arguments": {}}')

    _, result = await run_step(session, TOOLS, message="Time?", tool_choice=tool_choice)

    schema: Any = engine.requests[-1].json_schema
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "get_time"}
    assert result.type == "tool_calls"
    assert isinstance(result.content, list)
    assert [c.name for c in result.content] == ["get_time"]


async def test_a_named_tool_choice_that_is_not_among_the_tools_is_invalid_params() -> None:
    session, engine = make_session("unused")

    with pytest.raises(InvalidParams) as caught:
        await run_step(session, TOOLS, message="Hi", tool_choice={"name": "get_stock"})

    assert caught.value.code == -32602
    assert engine.requests == []


async def test_tool_choice_required_without_tools_is_invalid_params() -> None:
    session, engine = make_session("unused")

    with pytest.raises(InvalidParams) as caught:
        await run_step(session, [], message="Hi", tool_choice="required")

    assert caught.value.code == -32602
    assert engine.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(call_markup("get_stock", {"symbol": "ACME"}), id="tool-not-offered"),
        pytest.param(call_markup("get_weather", {"city": 7}), id="wrong-argument-type"),
        pytest.param(call_markup("get_weather", {}), id="missing-required-argument"),
        pytest.param(call_markup("get_weather", {"city": "x", "extra": 1}), id="extra-argument"),
        pytest.param("<tool_call>\nnot json\n</tool_call>", id="malformed"),
    ],
)
async def test_calls_that_do_not_fit_an_offered_tool_are_not_returned(reply: str) -> None:
    session, _ = make_session("Checking." + reply)

    events, result = await run_step(session, TOOLS, message="Weather?")

    assert result.type == "final_text"
    assert result.content == "Checking."
    assert not any(isinstance(event, ToolCallsEvent) for event in events)
    assert not result.history[-1].tool_calls


async def test_a_valid_call_is_returned_when_another_in_the_same_reply_is_dropped() -> None:
    session, _ = make_session(call_markup("get_stock", {}) + PARIS)

    _, result = await run_step(session, TOOLS, message="Weather?")

    assert isinstance(result.content, list)
    assert [c.name for c in result.content] == ["get_weather"]


@pytest.mark.parametrize(
    ("reply", "tool_choice"),
    [
        ("Sure, checking. " + PARIS + " Done.", "auto"),
        ("Sure, checking. " + PARIS + " Done.", "none"),
        ("Before " + call_markup("get_stock", {}) + " after", "auto"),
        ('Text then an unterminated <tool_call>\n{"name": "get_weather"', "auto"),
        ("Text with a partial marker <tool_", "auto"),
    ],
)
async def test_call_markup_never_appears_in_content_or_deltas(reply: str, tool_choice: str) -> None:
    session, _ = make_session(reply)

    events, result = await run_step(session, TOOLS, message="Hi", tool_choice=tool_choice)

    for event in events:
        if isinstance(event, DeltaEvent):
            assert "<tool_call>" not in event.text
            assert "</tool_call>" not in event.text
    if result.type == "final_text":
        assert isinstance(result.content, str)
        assert "<tool_call>" not in result.content
        assert deltas(events) == result.content
    assert "<tool_call>" not in str(result.history[-1].content)


async def test_text_before_a_call_is_streamed_and_kept_in_history() -> None:
    session, _ = make_session("Let me check. " + PARIS)

    events, result = await run_step(session, TOOLS, message="Weather in Paris?")

    assert deltas(events) == "Let me check."
    assert result.type == "tool_calls"
    assert result.history[-1].content == "Let me check."


async def test_stop_strings_reach_the_engine_and_end_the_answer() -> None:
    session, engine = make_session("One two END three")

    _, result = await run_step(session, message="Count", stop=["END"])

    assert engine.requests[-1].stop == ("END",)
    assert result.content == "One two "
    assert result.finish_reason == "stop"


async def test_max_new_tokens_reaches_the_engine_and_a_cut_answer_ends_with_length() -> None:
    session, engine = make_session("one two three four five")

    _, result = await run_step(session, message="Count", max_new_tokens=2)

    assert engine.requests[-1].max_new_tokens == 2
    assert result.content == "one two"
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 2


async def test_sampling_params_reach_the_engine() -> None:
    session, engine = make_session("ok")

    await run_step(session, message="Hi", temperature=0.5, top_p=0.9, top_k=40, seed=7)

    sampling = engine.requests[-1].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (
        0.5,
        0.9,
        40,
        7,
    )


async def test_the_system_param_becomes_the_first_message_of_the_history() -> None:
    session, engine = make_session("Ahoy!", "Arr!")

    _, result = await run_step(session, message="Hi", system="Talk like a pirate.")
    _, again = await run_step(
        session, history=wire_history(result), message="Again", system="Be terse."
    )

    assert [(m.role, m.content) for m in result.history[:2]] == [
        ("system", "Talk like a pirate."),
        ("user", "Hi"),
    ]
    assert "Talk like a pirate." in engine.requests[0].prompt
    assert [m.role for m in again.history].count("system") == 1
    assert again.history[0].content == "Be terse."


async def test_usage_reports_the_engines_token_counts() -> None:
    session, engine = make_session("Hello there friend")

    _, result = await run_step(session, message="Hi")

    assert result.usage.prompt_tokens == len(engine.requests[-1].prompt.split())
    assert result.usage.completion_tokens == 3


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({"$ref": "#/$defs/missing"}, id="dangling-ref"),
        pytest.param({"$ref": "http://127.0.0.1:9/schema.json"}, id="remote-ref"),
        pytest.param({"$ref": "#"}, id="self-ref"),
        pytest.param({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, id="ref-cycle"),
    ],
)
async def test_a_call_to_a_tool_whose_schema_cannot_be_applied_is_not_returned(
    parameters: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[object] = []

    def no_fetching(request: object, *args: object, **kwargs: object) -> None:
        fetched.append(request)
        raise OSError("no network in tests")

    monkeypatch.setattr("urllib.request.urlopen", no_fetching)
    tool = Tool.model_validate({"name": "lookup", "parameters": parameters})
    session, _ = make_session("Looking." + call_markup("lookup", {"q": "x"}))

    _, result = await run_step(session, [tool], message="Look it up")

    assert result.type == "final_text"
    assert result.content == "Looking."
    assert fetched == []


async def test_a_local_ref_in_a_tool_schema_is_followed() -> None:
    parameters = {
        "$defs": {"city": {"type": "string"}},
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/city"}},
    }
    tool = Tool.model_validate({"name": "get_weather", "parameters": parameters})
    good = call_markup("get_weather", {"city": "Oslo"})
    bad = call_markup("get_weather", {"city": 5})
    session, _ = make_session(good, bad)

    _, accepted = await run_step(session, [tool], message="Oslo?")
    _, refused = await run_step(session, [tool], message="Oslo?")

    assert accepted.type == "tool_calls"
    assert refused.type == "final_text"


async def test_tool_choice_required_after_max_iterations_answers_without_a_constraint() -> None:
    session, engine = make_session(PARIS, "Sunny.")
    calls = await first_round(session, max_iterations=1, tool_choice="required")

    events, result = await run_step(
        session,
        TOOLS,
        history=wire_history(calls),
        tool_results=results_for(calls),
        max_iterations=1,
        tool_choice="required",
    )

    assert engine.requests[0].json_schema is not None
    assert engine.requests[-1].json_schema is None
    assert result.type == "final_text"
    assert result.finish_reason == "loop_guard"
    assert result.content == "Sunny."
    assert deltas(events) == "Sunny."
    assert result.history[-1].content == "Sunny."


async def test_the_deltas_of_a_loop_guard_answer_add_up_to_its_content() -> None:
    session, _ = make_session(PARIS, "Checking again. " + PARIS, "It is sunny.")
    calls = await first_round(session)

    events, result = await run_step(
        session, TOOLS, history=wire_history(calls), tool_results=results_for(calls)
    )

    assert result.finish_reason == "loop_guard"
    assert isinstance(result.content, str)
    assert "It is sunny." in result.content
    assert "<tool_call>" not in result.content
    assert deltas(events) == result.content
    assert result.history[-1].content == result.content
