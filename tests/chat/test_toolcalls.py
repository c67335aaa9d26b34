"""Behaviour of the tool-call parser: streaming and whole-text parsing agree on every output."""

from __future__ import annotations

import random

import pytest

from toolrpc.chat.toolcalls import (
    HERMES,
    InvalidReason,
    InvalidToolCall,
    ParserEvent,
    TextDelta,
    ToolCallFormat,
    ToolCallParsed,
    ToolCallParser,
    parse_all,
)

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "UTC"}}'


def call(body: str) -> str:
    """Wrap a body in Hermes markup."""
    return f"<tool_call>\n{body}\n</tool_call>"


REPRESENTATIVE = [
    "Hello, world! How can I help?",
    "  leading and trailing whitespace \n",
    call(WEATHER),
    f"Let me check.\n{call(WEATHER)}",
    f"{call(WEATHER)}\n{call(TIME)}\n",
    f"Checking.\n\n{call(WEATHER)}\n\nDone, see above.\n",
    "Compare a < b and <tool> and <tool_call but not markup",
    "Ends with a partial marker <tool_c",
    f"<tool_call>{WEATHER}",
    f"<tool_call>{WEATHER}</tool_",
    call("not json at all"),
    call('{"arguments": {}}'),
    call('{"name": "f", "arguments": "{\\"x\\": 1}"}'),
    WEATHER,
    f"  \n{WEATHER}\n{TIME}",
    f"[{WEATHER}, {TIME}]",
    '{"answer": 42} is the JSON you asked for.',
    "{hello} world",
    "[1, 2, 3]",
    f"{WEATHER} I called the tool.",
    '{"name": "f", "arguments": {"s": "a } ] \\" <tool_call>"}}',
    '{"text": "<tool_call>", "x": 1} then ' + call(TIME),
    "{ unterminated",
    "",
    "   ",
]


def merged(events: list[ParserEvent]) -> list[ParserEvent]:
    """Join adjacent text deltas, so event lists from different splits compare equal."""
    result: list[ParserEvent] = []
    for event in events:
        last = result[-1] if result else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            result[-1] = TextDelta(last.text + event.text)
        else:
            result.append(event)
    return result


def fed(pieces: list[str], fmt: ToolCallFormat = HERMES) -> list[ParserEvent]:
    """Feed the pieces one by one, then finish; return every event, merged."""
    parser = ToolCallParser(fmt)
    events: list[ParserEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return merged(events + parser.finish())


def text_of(events: list[ParserEvent]) -> str:
    """All the text the events carry."""
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def test_plain_text_streamed_in_pieces_comes_back_unchanged() -> None:
    text = "The capital of France is Paris.\n\nIt has  two spaces here. "
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]

    assert fed(pieces) == [TextDelta(text)]


def test_text_is_emitted_as_soon_as_it_cannot_begin_a_marker() -> None:
    parser = ToolCallParser()

    assert parser.feed("Hi there <tool_c") == [TextDelta("Hi there")]
    assert parser.feed("ar") == [TextDelta(" <tool_car")]
    assert parser.finish() == []


def test_one_hermes_call_becomes_a_parsed_call() -> None:
    assert parse_all(call(WEATHER)) == [ToolCallParsed(0, "get_weather", {"city": "Paris"})]


def test_text_before_a_call_is_kept_without_its_trailing_whitespace() -> None:
    assert parse_all(f"Let me check.\n\n{call(WEATHER)}") == [
        TextDelta("Let me check."),
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
    ]


def test_several_calls_get_their_own_index_and_no_whitespace_between_them() -> None:
    assert parse_all(f"{call(WEATHER)}\n\n{call(TIME)}\n") == [
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
        ToolCallParsed(1, "get_time", {"tz": "UTC"}),
    ]


def test_text_after_a_call_loses_only_its_leading_whitespace() -> None:
    assert parse_all(f"{call(WEATHER)}\n\nDone.\n") == [
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
        TextDelta("Done.\n"),
    ]


def test_an_unterminated_call_is_parsed_at_finish() -> None:
    parser = ToolCallParser()

    assert parser.feed(f"<tool_call>\n{WEATHER}\n") == []
    assert parser.finish() == [ToolCallParsed(0, "get_weather", {"city": "Paris"})]


def test_a_call_cut_inside_its_end_marker_is_parsed_at_finish() -> None:
    assert parse_all(f"<tool_call>{WEATHER}</tool_ca") == [
        ToolCallParsed(0, "get_weather", {"city": "Paris"})
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not_json"),
        ("", "not_json"),
        ('{"name": "f", "arguments": {"x": 1}', "not_json"),
        ("[1, 2]", "not_a_call"),
        ("[]", "not_a_call"),
        ('{"arguments": {}}', "missing_name"),
        ('{"name": 3}', "missing_name"),
        ('{"name": "f", "arguments": [1]}', "arguments_not_object"),
        ('{"name": "f", "arguments": "not json"}', "arguments_not_object"),
    ],
)
def test_a_malformed_body_gives_an_invalid_call_with_its_reason(
    body: str, reason: InvalidReason
) -> None:
    assert parse_all(call(body)) == [InvalidToolCall(0, body, reason)]


def test_invalid_calls_count_in_the_index_of_later_calls() -> None:
    events = parse_all(f"{call('oops')}{call(WEATHER)}")

    assert events == [
        InvalidToolCall(0, "oops", "not_json"),
        ToolCallParsed(1, "get_weather", {"city": "Paris"}),
    ]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "f", "arguments": "{\\"x\\": 1}"}',
        '{"name": "f", "parameters": {"x": 1}}',
        '{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}',
        '{"function": {"name": "f", "arguments": "{\\"x\\": 1}"}}',
    ],
)
def test_call_objects_are_normalised_to_name_and_arguments(body: str) -> None:
    assert parse_all(call(body)) == [ToolCallParsed(0, "f", {"x": 1})]


@pytest.mark.parametrize("body", ['{"name": "f"}', '{"name": "f", "arguments": null}'])
def test_missing_arguments_become_an_empty_object(body: str) -> None:
    assert parse_all(call(body)) == [ToolCallParsed(0, "f", {})]


def test_a_bare_json_call_becomes_a_call() -> None:
    assert parse_all(f"\n {WEATHER}\n") == [ToolCallParsed(0, "get_weather", {"city": "Paris"})]


def test_several_bare_json_calls_follow_one_another() -> None:
    assert parse_all(f"{WEATHER}\n{TIME}") == [
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
        ToolCallParsed(1, "get_time", {"tz": "UTC"}),
    ]


def test_a_bare_json_array_of_calls_becomes_calls() -> None:
    assert parse_all(f"[{WEATHER}, {TIME}]") == [
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
        ToolCallParsed(1, "get_time", {"tz": "UTC"}),
    ]


@pytest.mark.parametrize(
    "text", ['{"answer": 42}', "[]", "[1, 2]", '[{"name": "f"}, 3]', "{hello} world", "{ open"]
)
def test_output_starting_with_a_bracket_that_is_not_a_call_comes_back_as_text(text: str) -> None:
    assert parse_all(text) == [TextDelta(text)]


def test_text_starting_with_a_brace_is_released_once_it_cannot_be_json() -> None:
    assert ToolCallParser().feed("{hello") == [TextDelta("{hello")]


def test_a_bare_call_followed_by_prose_gives_the_call_then_the_prose() -> None:
    assert parse_all(f"{WEATHER}  Calling it now.") == [
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
        TextDelta("Calling it now."),
    ]


def test_bare_json_is_text_when_it_is_not_allowed() -> None:
    assert parse_all(WEATHER, allow_bare_json=False) == [TextDelta(WEATHER)]


def test_bare_json_is_only_read_at_the_start_of_the_output() -> None:
    assert parse_all(f"Here: {WEATHER}") == [TextDelta(f"Here: {WEATHER}")]


def test_another_format_is_another_instance() -> None:
    fmt = ToolCallFormat("custom", "[TOOL_CALLS]", "[/TOOL_CALLS]")

    assert parse_all(f"Sure.[TOOL_CALLS]{WEATHER}[/TOOL_CALLS]", fmt) == [
        TextDelta("Sure."),
        ToolCallParsed(0, "get_weather", {"city": "Paris"}),
    ]


def test_a_format_with_an_empty_marker_is_refused() -> None:
    with pytest.raises(ValueError):
        ToolCallFormat("broken", "", "</x>")


def test_feeding_or_finishing_after_finish_gives_nothing() -> None:
    parser = ToolCallParser()
    parser.feed("Hello")
    parser.finish()

    assert parser.feed("more") == []
    assert parser.finish() == []


@pytest.mark.parametrize("text", REPRESENTATIVE)
def test_the_start_marker_never_appears_in_text(text: str) -> None:
    assert all(HERMES.start not in text_of([e]) for e in fed(list(text)) + parse_all(text))


@pytest.mark.parametrize("text", REPRESENTATIVE)
def test_every_two_piece_split_gives_the_same_events_as_whole_text(text: str) -> None:
    whole = merged(parse_all(text))

    for at in range(len(text) + 1):
        assert fed([text[:at], text[at:]]) == whole, f"split at {at}"


@pytest.mark.parametrize("text", REPRESENTATIVE)
def test_one_character_at_a_time_gives_the_same_events_as_whole_text(text: str) -> None:
    assert fed(list(text)) == merged(parse_all(text))


FUZZ_ALPHABET = [
    "<tool_call>",
    "</tool_call>",
    "<tool",
    "_call>",
    "</",
    "<",
    ">",
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    ":",
    ",",
    " ",
    "\n",
    "a",
    "Hi.",
    '"name"',
    '"arguments"',
    '"f"',
    WEATHER,
    '{"name": "g"',
    '"arguments": {"x": [1, "}"]}}',
]


def test_random_outputs_fed_in_random_pieces_agree_with_whole_text() -> None:
    rng = random.Random(20240611)
    for _ in range(1500):
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 14)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        whole = merged(parse_all(text))

        assert fed(pieces) == whole, repr(text)
        assert HERMES.start not in text_of(whole), repr(text)
        calls = [e for e in whole if not isinstance(e, TextDelta)]
        assert [e.index for e in calls] == list(range(len(calls))), repr(text)
        if not calls:
            assert text_of(whole) == text, repr(text)


def test_a_long_run_of_whitespace_is_streamed_not_held_to_the_end() -> None:
    parser = ToolCallParser()
    events = parser.feed("Hi" + "\n" * 100)

    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed.startswith("Hi\n")
    assert len(streamed) >= 100 - 64


def test_without_holding_whitespace_a_paragraph_break_is_emitted_at_once() -> None:
    parser = ToolCallParser(allow_bare_json=False, hold_whitespace=False)

    assert parser.feed("First paragraph.\n\n") == [TextDelta("First paragraph.\n\n")]
    events = parser.feed("<tool_call>{}</tool_call> Second.") + parser.finish()
    assert [type(event) for event in events] == [InvalidToolCall, TextDelta]
    assert events[1] == TextDelta("Second.")
