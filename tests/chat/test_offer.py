"""The tool offer: what tool_choice, the round limit and the router make of the tools, and which
calls are accepted."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from toolrpc.chat.grounding import bounded
from toolrpc.chat.offer import ToolOffer, call_schema, offer_tools
from toolrpc.chat.toolcalls import InvalidToolCall, ToolCallParsed
from toolrpc.chat.turn import Turn
from toolrpc.errors import InvalidParams
from toolrpc.protocol import Message, NamedToolChoice, Tool, ToolCall

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
TIME = Tool.model_validate({"name": "get_time"})
TOOLS = [WEATHER, TIME]
NEW_TURN = Turn.of([Message(role="user", content="Weather in Paris?")])


def turn_with_rounds(num_rounds: int) -> Turn:
    history = [Message(role="user", content="q")]
    for i in range(num_rounds):
        call = ToolCall(id=f"c{i}", name="get_time", arguments={"i": i})
        history += [
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id=call.id, content="12:00"),
        ]
    return Turn.of(history)


def test_auto_shows_every_tool_without_a_constraint() -> None:
    offer = offer_tools("auto", TOOLS, NEW_TURN, 5)

    assert offer.tools == tuple(TOOLS)
    assert not offer.is_constrained
    assert offer.json_schema() is None


def test_required_constrains_the_output_to_a_call_of_any_tool() -> None:
    schema = offer_tools("required", TOOLS, NEW_TURN, 5).json_schema()

    assert schema is not None
    jsonschema.validate({"name": "get_time", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {}}, schema)


def test_a_named_tool_is_the_only_one_shown_and_allowed() -> None:
    offer = offer_tools(NamedToolChoice(name="get_time"), TOOLS, NEW_TURN, 5)

    assert offer.tools == (TIME,)
    assert offer.constraint == (TIME,)


def test_none_and_no_tools_offer_nothing() -> None:
    assert offer_tools("none", TOOLS, NEW_TURN, 5) == ToolOffer()
    assert offer_tools("auto", [], NEW_TURN, 5) == ToolOffer()


@pytest.mark.parametrize("choice", ["auto", "required", NamedToolChoice(name="get_time")])
def test_the_round_limit_takes_every_tool_and_every_constraint_away(choice: Any) -> None:
    offer = offer_tools(choice, TOOLS, turn_with_rounds(2), 2)

    assert offer.tools == ()
    assert not offer.is_constrained
    assert offer.is_round_limited


def test_an_unknown_named_tool_and_required_without_tools_are_invalid_params() -> None:
    with pytest.raises(InvalidParams):
        offer_tools(NamedToolChoice(name="nope"), TOOLS, NEW_TURN, 5)
    with pytest.raises(InvalidParams):
        offer_tools("required", [], NEW_TURN, 5)


def test_the_routers_choice_becomes_a_forced_call_of_that_tool_or_an_answer() -> None:
    offer = offer_tools("auto", TOOLS, NEW_TURN, 5)

    assert offer.routed(WEATHER) == ToolOffer(tools=(WEATHER,), constraint=(WEATHER,))
    assert offer.routed(None) == ToolOffer()


def test_narrowing_changes_the_constraint_not_the_tools_shown() -> None:
    offer = offer_tools("required", [WEATHER], NEW_TURN, 5)

    narrowed = offer.narrowed(lambda tool: bounded(tool, ["Paris"]))

    assert narrowed.tools == (WEATHER,)
    assert narrowed.constraint is not None
    schema = narrowed.constraint[0].function.parameters
    assert schema["properties"]["city"]["maxLength"] == 64
    assert offer_tools("auto", TOOLS, NEW_TURN, 5).narrowed(lambda t: TIME).constraint is None


def test_a_call_is_accepted_only_for_a_shown_tool_with_valid_arguments() -> None:
    offer = offer_tools("auto", [WEATHER], NEW_TURN, 5)

    accepted = offer.accept(ToolCallParsed(0, "get_weather", {"city": "Paris"}))
    assert accepted == ToolCall(id="", name="get_weather", arguments={"city": "Paris"})
    assert offer.accept(ToolCallParsed(1, "get_weather", {"town": "Paris"})) is None
    assert offer.accept(ToolCallParsed(2, "get_time", {})) is None
    assert offer.accept(InvalidToolCall(3, "{", "not_json")) is None


def test_a_call_is_judged_by_the_tools_own_schema_not_the_narrowed_one() -> None:
    offer = offer_tools("required", [WEATHER], NEW_TURN, 5).narrowed(
        lambda tool: bounded(tool, ["Paris"])
    )

    assert offer.accept(ToolCallParsed(0, "get_weather", {"city": "P" * 100})) is not None


def test_a_tool_without_parameters_takes_an_empty_arguments_object() -> None:
    schema = call_schema([TIME])

    jsonschema.validate({"name": "get_time", "arguments": {}}, schema)
