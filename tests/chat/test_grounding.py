"""Grounded arguments: free-text values checked against the conversation's words, and a forced
call generated again with ungrounded values limited to spans of those words."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tests.chat.steps import run_step
from toolrpc.chat.conversation import Chat
from toolrpc.chat.grounding import (
    MAX_SPAN_WORDS,
    MAX_VALUE_CHARS,
    MIN_VALUE_CHARS,
    bounded_parameters,
    free_text_properties,
    grounded_parameters,
    is_grounded,
    spans,
    tokens,
    unfillable_arguments,
    ungrounded_arguments,
    value_bound,
)
from toolrpc.chat.model import PromptedModel
from toolrpc.chat.router import ToolRouter
from toolrpc.chat.template import ChatTemplate
from toolrpc.chat.turn import Turn
from toolrpc.engines.fake import FAKE_CHAT_TEMPLATE, FakeEngine
from toolrpc.protocol import CreateMessageResult, Message, Tool

CALCULATE = Tool.model_validate(
    {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {
                "expression": {"type": "string", "description": "e.g. (12.5 * 4) / 3"},
                "precision": {"type": "integer"},
                "mode": {"type": "string", "enum": ["exact", "float"]},
                "note": {"type": "string"},
            },
            "required": ["expression"],
        },
    }
)
PARAMETERS = CALCULATE.function.parameters


def test_only_unconstrained_top_level_strings_are_free_text() -> None:
    assert free_text_properties(PARAMETERS) == {"expression", "note"}
    assert free_text_properties({"type": "object"}) == set()
    dated = {"properties": {"day": {"type": "string", "format": "date"}}}
    assert free_text_properties(dated) == set()


def test_a_value_is_grounded_when_all_its_words_were_written() -> None:
    texts = ["What is 347 times 29?"]

    assert is_grounded("347 * 29", texts)  # normalised, but every word is the user's
    assert is_grounded("347 TIMES 29", texts)
    assert not is_grounded("{{12.5}} * 29", texts)
    assert not is_grounded("***", texts)  # no words at all
    assert not is_grounded("{{347}} * 29", texts)  # a placeholder from the prompt's examples
    assert not is_grounded("<347>", texts)
    assert is_grounded("{347}", ["Evaluate {347}"])  # unless the user wrote the marks


def test_numbers_are_grounded_as_numbers_not_as_runs_of_digits() -> None:
    assert tokens("Calculate 15% of 2,480.") == ["calculate", "15", "of", "2480"]
    assert is_grounded(".15 * 2480", ["Calculate 15% of 2,480."])  # 2,480 is 2480
    assert is_grounded("1,764 / 42", ["What is 1764 divided by 42?"])
    assert not is_grounded("1764.42", ["What is 1764 divided by 42?"])  # a number no one wrote
    assert not is_grounded("12.5 * 4", ["What is 12 times 4, plus 5?"])
    assert is_grounded("12.5 * 4", ["What is 12.5 times 4?"])


def test_a_value_that_starts_inside_a_chunk_of_text_is_a_fragment_not_grounded() -> None:
    texts = ["Email bob@example.com to tell him (Maria's lunch) moved to 3pm."]

    assert is_grounded("bob@example.com", texts)
    assert not is_grounded("example.com", texts)  # the tail of an address
    assert not is_grounded("com", texts)
    assert is_grounded("Maria", texts)  # chunks start after opening punctuation
    assert is_grounded("lunch moved to 3pm", texts)


def test_ungrounded_arguments_names_only_free_text_values_with_foreign_words() -> None:
    texts = ["What is 347 times 29?"]
    arguments = {"expression": "12.5 * 4", "precision": 99, "mode": "float", "note": "times"}

    assert ungrounded_arguments(arguments, PARAMETERS, texts) == {"expression"}


def test_sources_are_the_latest_user_message_first_then_older_ones_and_tool_results() -> None:
    history = [
        Message(role="system", content="be brief"),
        Message(role="user", content="first"),
        Message(role="tool", content="result", tool_call_id="c1"),
        Message(role="user", content="second"),
    ]

    assert Turn.of(history).sources == ("second", "first", "result")


def test_spans_are_runs_of_words_without_edge_punctuation_latest_text_first() -> None:
    found = spans(["Email bob@example.com now!", "'Hi there.'"])

    assert found[:3] == ["Email", "Email bob@example.com", "Email bob@example.com now"]
    assert "bob@example.com" in found and "now" in found
    assert "Hi there" in found and "there" in found
    assert not any(span != span.strip("!'.") for span in found)
    long_text = " ".join(f"w{i}" for i in range(40))
    assert max(len(span.split()) for span in spans([long_text])) == MAX_SPAN_WORDS


def test_grounded_parameters_fix_grounded_values_and_limit_the_rest_to_spans() -> None:
    texts = ["What is 347 times 29?"]
    arguments = {"expression": "12.5 * 4", "note": "29"}

    schema = grounded_parameters(PARAMETERS, arguments, texts)

    assert schema["properties"]["note"]["const"] == "29"
    assert "note" in schema["required"]
    assert "347 times 29" in schema["properties"]["expression"]["enum"]
    assert schema["properties"]["precision"] == PARAMETERS["properties"]["precision"]
    for value in ("347 times 29", "What is 347"):
        jsonschema.validate({"expression": value, "note": "29"}, schema)
    # every value the grounded schema admits is valid for the tool's own schema too
    jsonschema.validate({"expression": "347 times 29", "note": "29"}, PARAMETERS)


def test_bounded_parameters_limit_free_text_values_to_twice_the_longest_text() -> None:
    texts = ["What is 347 times 29?", "Result of calculate: " + "x" * 40]
    assert value_bound(texts) == 2 * len(texts[1])
    assert value_bound(["Hi"]) == MIN_VALUE_CHARS
    assert value_bound(["y" * 10_000]) == MAX_VALUE_CHARS
    own = {
        "type": "object",
        "properties": {
            "short": {"type": "string", "maxLength": 5},
            "long": {"type": "string", "minLength": 500},
            "free": {"type": "string"},
            "count": {"type": "integer"},
        },
    }

    schema = bounded_parameters(own, texts)

    properties = schema["properties"]
    assert properties["short"]["maxLength"] == 5  # the tool's own, smaller bound stays
    assert properties["long"]["maxLength"] == 500  # never below the tool's own minLength
    assert properties["free"]["maxLength"] == value_bound(texts)
    assert properties["count"] == {"type": "integer"}
    assert own["properties"]["free"] == {"type": "string"}  # the tool's schema is untouched


def make_session(*script: str) -> tuple[Chat, FakeEngine]:
    engine = FakeEngine(script)
    template = ChatTemplate(FAKE_CHAT_TEMPLATE, eos_token="<|im_end|>")
    router = ToolRouter(engine)
    return Chat(PromptedModel(engine, template), router=router, ground_arguments=True), engine


def call_json(arguments: dict[str, Any]) -> str:
    return json.dumps({"name": "calculate", "arguments": arguments})


async def run(session: Chat, message: str) -> CreateMessageResult:
    _, result = await run_step(session, [CALCULATE], message=message, tool_choice="required")
    return result


async def test_a_call_with_made_up_words_is_generated_again_under_spans_of_the_message() -> None:
    session, engine = make_session(
        call_json({"expression": "{{12.5}} * 29"}), call_json({"expression": "347 times 29"})
    )

    result = await run(session, "What is 347 times 29?")

    assert result.type == "tool_calls" and isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "347 times 29"}
    assert len(engine.requests) == 2
    second = engine.requests[1].json_schema
    assert second is not None
    expression = second["properties"]["arguments"]["properties"]["expression"]
    assert "347 times 29" in expression["enum"]
    # the prompt still shows the tool's own schema, not the spans
    assert engine.requests[1].prompt == engine.requests[0].prompt
    assert result.usage.completion_tokens == sum(
        len(r.split())
        for r in (
            call_json({"expression": "{{12.5}} * 29"}),
            call_json({"expression": "347 times 29"}),
        )
    )


async def test_a_grounded_call_is_kept_without_a_second_generation() -> None:
    session, engine = make_session(call_json({"expression": "347 * 29"}))

    result = await run(session, "What is 347 times 29?")

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "347 * 29"}
    assert len(engine.requests) == 1
    first = engine.requests[0].json_schema
    assert first is not None  # the first call is bounded by the message's length
    expression = first["properties"]["arguments"]["properties"]["expression"]
    assert expression["maxLength"] == value_bound(["What is 347 times 29?"])


async def test_a_failed_first_call_is_generated_again_with_every_free_text_value_grounded() -> None:
    session, engine = make_session('{"name": "calculate", "argu', call_json({"expression": "347"}))

    result = await run(session, "What is 347 times 29?")

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "347"}
    second = engine.requests[1].json_schema
    assert second is not None
    assert "enum" in second["properties"]["arguments"]["properties"]["expression"]


async def test_without_grounding_the_model_s_own_values_are_returned() -> None:
    engine = FakeEngine([call_json({"expression": "{{12.5}} * 29"})])
    template = ChatTemplate(FAKE_CHAT_TEMPLATE, eos_token="<|im_end|>")
    session = Chat(PromptedModel(engine, template), router=ToolRouter(engine))

    result = await run(session, "What is 347 times 29?")

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "{{12.5}} * 29"}
    assert len(engine.requests) == 1
    first = engine.requests[0].json_schema
    assert first is not None  # nor is the call bounded
    assert "maxLength" not in first["properties"]["arguments"]["properties"]["expression"]


RECTANGLE = {
    "type": "object",
    "properties": {"width": {"type": "number"}, "height": {"type": "number"}},
    "required": ["width", "height"],
}


def test_required_numbers_the_conversation_does_not_hold_are_unfillable() -> None:
    assert unfillable_arguments(RECTANGLE, ["What is the perimeter of a rectangle?"]) == (
        "width",
        "height",
    )
    assert unfillable_arguments(RECTANGLE, ["A circle with a radius of 3 cm"]) == ("height",)


def test_each_required_number_needs_a_distinct_number_digits_or_words() -> None:
    assert unfillable_arguments(RECTANGLE, ["area of a 3 by 4.5 rectangle"]) == ()
    assert unfillable_arguments(RECTANGLE, ["a rectangle two by five"]) == ()
    assert unfillable_arguments(RECTANGLE, ["a 3 by 3 square"]) == ("height",)
    assert unfillable_arguments(RECTANGLE, ["a rectangle", "width 2 and height 7"]) == ()


def test_numbers_with_a_default_enum_or_optional_and_strings_are_never_unfillable() -> None:
    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "default": 1},
            "unit": {"type": "integer", "enum": [1, 2]},
            "limit": {"type": "integer"},
        },
        "required": ["city", "days", "unit"],
    }

    assert unfillable_arguments(parameters, ["What's the weather in Paris?"]) == ()
    assert unfillable_arguments(RECTANGLE, []) == ()
