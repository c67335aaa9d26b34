"""Grounded arguments: free-text values checked against the conversation's words, ungrounded ones
replaced by the span the model scores highest, and a failed call generated again under spans."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema

from toolrpc.chat.conversation import ChatSession, DoneEvent
from toolrpc.chat.grounding import (
    MAX_SCORED_SPANS,
    MAX_SCORED_WORDS,
    MAX_SPAN_WORDS,
    call_prefix,
    free_text_properties,
    is_grounded,
    scored_spans,
    source_texts,
    span_parameters,
    span_rank,
    spans,
    ungrounded_arguments,
)
from toolrpc.chat.router import ToolRouter
from toolrpc.chat.template import ChatTemplate
from toolrpc.engines.base import ContinuationScore
from toolrpc.engines.fake import FAKE_CHAT_TEMPLATE, FakeEngine, Scorer
from toolrpc.protocol import CreateMessageParams, CreateMessageResult, Message, Tool

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

    assert source_texts(history) == ["second", "first", "result"]


def test_spans_are_runs_of_words_without_edge_punctuation_latest_text_first() -> None:
    found = spans(["Email bob@example.com now!", "'Hi there.'"])

    assert found[:3] == ["Email", "Email bob@example.com", "Email bob@example.com now"]
    assert "bob@example.com" in found and "now" in found
    assert "Hi there" in found and "there" in found
    assert not any(span != span.strip("!'.") for span in found)
    long_text = " ".join(f"w{i}" for i in range(40))
    assert max(len(span.split()) for span in spans([long_text])) == MAX_SPAN_WORDS


def test_scored_spans_are_short_runs_latest_text_first_shortest_first_and_capped() -> None:
    found = scored_spans(["Translate 'good morning' to French", "older words"])

    assert found[:5] == ["Translate", "good", "morning", "to", "French"]
    assert found.index("good morning") < found.index("Translate 'good morning")
    assert found.index("Translate 'good morning' to French") < found.index("older")
    long_text = " ".join(f"w{i}" for i in range(40))
    capped = scored_spans([long_text])
    assert len(capped) == MAX_SCORED_SPANS
    assert max(len(span.split()) for span in capped) <= MAX_SCORED_WORDS


def test_span_parameters_limit_every_free_text_property_to_spans() -> None:
    schema = span_parameters(PARAMETERS, ["What is 347 times 29?"])

    assert "347 times 29" in schema["properties"]["expression"]["enum"]
    assert "29" in schema["properties"]["note"]["enum"]
    assert schema["properties"]["precision"] == PARAMETERS["properties"]["precision"]
    assert schema["properties"]["mode"] == PARAMETERS["properties"]["mode"]
    assert schema["required"] == ["expression"]
    # every value the span schema admits is valid for the tool's own schema too
    jsonschema.validate({"expression": "347 times 29", "note": "29"}, schema)
    jsonschema.validate({"expression": "347 times 29", "note": "29"}, PARAMETERS)


def test_the_call_prefix_is_the_call_so_far_up_to_the_value_s_opening_quote() -> None:
    prefix = call_prefix("send_email", {"to": "bob@example.com", "n": 2}, "subject")

    assert prefix == (
        '{"name": "send_email", "arguments": {"to": "bob@example.com", "n": 2, "subject": "'
    )
    assert call_prefix("f", {}, "x") == '{"name": "f", "arguments": {"x": "'
    completed = prefix + json.dumps('Hi "you"')[1:] + "}}"
    assert json.loads(completed)["arguments"]["subject"] == 'Hi "you"'


def test_span_rank_is_the_log_probability_over_the_root_of_the_token_count() -> None:
    assert span_rank(ContinuationScore(-6.0, 4)) == -3.0
    # a longer span wins with a better rate per token, though its sum is lower...
    assert span_rank(ContinuationScore(-9.0, 9)) > span_rank(ContinuationScore(-4.0, 1))
    # ...but not on a rate per token alone
    assert span_rank(ContinuationScore(-2.0, 1)) > span_rank(ContinuationScore(-9.0, 9))


def make_session(*script: str, scorer: Scorer | None = None) -> tuple[ChatSession, FakeEngine]:
    engine = FakeEngine(script) if scorer is None else FakeEngine(script, scorer=scorer)
    template = ChatTemplate(FAKE_CHAT_TEMPLATE, eos_token="<|im_end|>")
    router = ToolRouter(engine)
    return ChatSession(engine, template, router=router, ground_arguments=True), engine


def call_json(arguments: dict[str, Any]) -> str:
    return json.dumps({"name": "calculate", "arguments": arguments})


async def run(
    session: ChatSession, message: str, tools: list[Tool] | None = None
) -> CreateMessageResult:
    params = CreateMessageParams.model_validate({"message": message, "tool_choice": "required"})
    async with asyncio.timeout(2):
        events = [event async for event in session.step(params, tools or [CALCULATE])]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    return done.result


def favouring(**values: str) -> Scorer:
    """A scorer under which, after `"<name>": "`, the span `values[name]` is the likeliest."""

    def score(prompt: str, continuation: str) -> float:
        for name, value in values.items():
            if prompt.endswith(f'"{name}": "'):
                return 0.0 if continuation == json.dumps(value)[1:] else -5.0
        return -1.0

    return score


async def test_an_ungrounded_value_becomes_the_span_the_model_scores_highest() -> None:
    first = call_json({"note": "29", "expression": "{{12.5}} * 29", "precision": 2})
    session, engine = make_session(first, scorer=favouring(expression="347 times 29"))

    result = await run(session, "What is 347 times 29?")

    assert result.type == "tool_calls" and isinstance(result.content, list)
    # the grounded note and the integer are kept, in the model's order
    assert result.content[0].arguments == {
        "note": "29",
        "expression": "347 times 29",
        "precision": 2,
    }
    assert len(engine.requests) == 1  # scored, not generated again
    prompt = engine.requests[0].prompt + call_prefix("calculate", {"note": "29"}, "expression")
    scored = [continuation for p, continuation in engine.scored if p == prompt]
    assert scored == [json.dumps(span)[1:] for span in scored_spans(["What is 347 times 29?"])]
    assert result.usage.completion_tokens == len(first.split())


async def test_each_ungrounded_value_is_chosen_after_the_ones_before_it() -> None:
    first = call_json({"expression": "{{12.5}}", "note": "made up"})
    session, engine = make_session(first, scorer=favouring(expression="347", note="29"))

    result = await run(session, "What is 347 times 29?")

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "347", "note": "29"}
    note_prompts = {p for p, _ in engine.scored if p.endswith('"note": "')}
    assert note_prompts == {
        engine.requests[0].prompt + call_prefix("calculate", {"expression": "347"}, "note")
    }


async def test_grounded_arguments_that_fail_the_schema_leave_the_model_s_call() -> None:
    short = Tool.model_validate(
        {
            "name": "calculate",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "maxLength": 8}},
            },
        }
    )
    session, _ = make_session(
        call_json({"expression": "{{12.5}}"}), scorer=favouring(expression="347 times 29")
    )

    result = await run(session, "What is 347 times 29?", [short])

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "{{12.5}}"}


async def test_a_grounded_call_is_kept_without_a_second_generation() -> None:
    session, engine = make_session(call_json({"expression": "347 * 29"}))

    result = await run(session, "What is 347 times 29?")

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "347 * 29"}
    assert len(engine.requests) == 1
    assert not [p for p, _ in engine.scored if p.startswith(engine.requests[0].prompt)]


async def test_a_failed_first_call_is_generated_again_with_every_free_text_value_a_span() -> None:
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
    session = ChatSession(engine, template, router=ToolRouter(engine))

    result = await run(session, "What is 347 times 29?")

    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"expression": "{{12.5}} * 29"}
    assert len(engine.requests) == 1
