"""The turn of a history read once (`Turn.of`), and inputs appended to a history."""

from __future__ import annotations

import pytest

from toolrpc.chat.turn import Turn, append_inputs, with_system
from toolrpc.errors import ToolProtocolError
from toolrpc.protocol import Message, ToolCall, ToolResult

PARIS = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"})
ROME = ToolCall(id="c2", name="get_weather", arguments={"city": "Rome"})


def user(text: str) -> Message:
    return Message(role="user", content=text)


def asks(*calls: ToolCall) -> Message:
    return Message(role="assistant", tool_calls=list(calls))


def answers(call: ToolCall, content: str) -> Message:
    return Message(role="tool", tool_call_id=call.id, content=content)


def test_a_turn_starts_at_the_last_user_message() -> None:
    history = [user("old"), asks(PARIS), answers(PARIS, "sunny"), user("new"), asks(ROME)]

    turn = Turn.of(history)

    assert turn.request == "new"
    assert turn.num_rounds == 1
    assert turn.pending == (ROME,)
    assert turn.exchanges == ()
    assert not turn.is_repeat(PARIS)


def test_each_assistant_message_with_calls_is_one_round_and_answered_calls_are_repeats() -> None:
    history = [user("q"), asks(PARIS), answers(PARIS, "sunny"), asks(ROME), answers(ROME, "rain")]

    turn = Turn.of(history)

    assert turn.num_rounds == 2
    assert turn.pending == ()
    assert [(e.name, e.content) for e in turn.exchanges] == [
        ("get_weather", "sunny"),
        ("get_weather", "rain"),
    ]
    assert turn.is_repeat(ToolCall(id="other", name="get_weather", arguments={"city": "Rome"}))


def test_sources_put_the_latest_user_message_first_then_older_ones_then_results() -> None:
    history = [user("first"), asks(PARIS), answers(PARIS, "sunny"), user("second")]

    assert Turn.of(history).sources == ("second", "first", "sunny")


def test_a_history_without_a_user_message_has_no_request() -> None:
    turn = Turn.of([Message(role="system", content="be brief")])

    assert turn.request is None
    assert turn.num_rounds == 0


def test_calls_waiting_for_results_cannot_be_continued() -> None:
    with pytest.raises(ToolProtocolError) as raised:
        Turn.of([user("q"), asks(PARIS)]).check_answered()

    assert raised.value.data == {"missing_tool_call_ids": ["c1"]}


def test_results_become_tool_messages_named_after_their_calls() -> None:
    results = [ToolResult(tool_call_id="c1", content={"sky": "clear"}, is_error=True)]

    history = append_inputs([user("q"), asks(PARIS)], results, "and Rome?")

    assert [m.role for m in history] == ["user", "assistant", "tool", "user"]
    assert history[2].name == "get_weather"
    assert history[2].content == 'ERROR: {"sky": "clear"}'


@pytest.mark.parametrize(
    "results",
    [
        [ToolResult(tool_call_id="nope", content="x")],
        [ToolResult(tool_call_id="c1", content="x"), ToolResult(tool_call_id="c1", content="y")],
        [],
    ],
    ids=["unknown-id", "duplicate", "missing"],
)
def test_results_that_do_not_answer_the_pending_calls_are_a_tool_protocol_error(
    results: list[ToolResult],
) -> None:
    with pytest.raises(ToolProtocolError):
        append_inputs([user("q"), asks(PARIS)], results, "next")


def test_with_system_replaces_an_opening_system_message_or_adds_one() -> None:
    replaced = with_system([Message(role="system", content="old"), user("q")], "new")
    added = with_system([user("q")], "new")

    assert [(m.role, m.content) for m in replaced] == [("system", "new"), ("user", "q")]
    assert [(m.role, m.content) for m in added] == [("system", "new"), ("user", "q")]
    assert with_system([user("q")], None) == [user("q")]
