"""Each model family's tool-call format: detected from real chat templates, parsed as written."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE, ChatTemplate
from toolrpc.chat.toolcalls import (
    FORMATS,
    HERMES,
    JSON_FALLBACK,
    LLAMA3,
    MISTRAL,
    InvalidToolCall,
    ParserEvent,
    TextDelta,
    ToolCallFormat,
    ToolCallParsed,
    ToolCallParser,
    detect_format,
    format_named,
    parse_all,
)

HERE = Path(__file__).parent
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
ANSWER_WITH_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call00001",  # Mistral's template wants nine alphanumeric characters
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
        }
    ],
}
WEATHER_CALL = ToolCallParsed(0, "get_weather", {"city": "Paris"})
TWO_CALLS = [WEATHER_CALL, ToolCallParsed(1, "get_time", {"tz": "UTC"})]


@dataclass(frozen=True)
class Family:
    """A real chat template, its special tokens, and the format its model writes."""

    path: Path
    bos_token: str
    stop_token: str
    fmt: ToolCallFormat

    def load(self) -> ChatTemplate:
        source = self.path.read_text(encoding="utf-8")
        return ChatTemplate(source, bos_token=self.bos_token, eos_token=self.stop_token)


FAMILIES = {
    "qwen2_5": Family(HERE / "golden" / "qwen2_5.jinja", "", "<|im_end|>", HERMES),
    "hermes_3": Family(
        HERE / "templates" / "hermes_3_tool_use.jinja", "<|begin_of_text|>", "<|im_end|>", HERMES
    ),
    "llama3_1": Family(
        HERE / "templates" / "llama3_1.jinja", "<|begin_of_text|>", "<|eot_id|>", LLAMA3
    ),
    "llama3_2": Family(
        HERE / "templates" / "llama3_2.jinja", "<|begin_of_text|>", "<|eot_id|>", LLAMA3
    ),
    "mistral_nemo": Family(HERE / "templates" / "mistral_nemo.jinja", "<s>", "</s>", MISTRAL),
}

WEATHER_HERMES = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
WEATHER_LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
TIME_HERMES = '{"name": "get_time", "arguments": {"tz": "UTC"}}'

WRITTEN_ONE_CALL = {
    "hermes": [f"<tool_call>\n{WEATHER_HERMES}\n</tool_call>", f"<tool_call>{WEATHER_HERMES}"],
    "llama3": [WEATHER_LLAMA, f"<|python_tag|>{WEATHER_LLAMA}", f" \n{WEATHER_LLAMA}\n"],
    "mistral": [
        f"[TOOL_CALLS][{WEATHER_HERMES}]",
        f"[TOOL_CALLS] [{WEATHER_HERMES}]",
        f"[{WEATHER_HERMES}]",
    ],
    "json": [WEATHER_HERMES, f"<tool_call>\n{WEATHER_HERMES}\n</tool_call>"],
}
"""One call to get_weather(city=Paris) as each family writes it: with its marker rendered as
text, and without (the engine rendered the control token as empty text)."""

WRITTEN_TWO_CALLS = {
    "hermes": f"<tool_call>{WEATHER_HERMES}</tool_call>\n<tool_call>\n{TIME_HERMES}\n</tool_call>",
    "mistral": f"[TOOL_CALLS][{WEATHER_HERMES}, {TIME_HERMES}]",
    "json": f"[{WEATHER_HERMES}, {TIME_HERMES}]",
    "llama3": f"{WEATHER_LLAMA}\n{TIME_HERMES}",
}


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


def fed(pieces: list[str], fmt: ToolCallFormat) -> list[ParserEvent]:
    """Feed the pieces one by one, then finish; return every event, merged."""
    parser = ToolCallParser(fmt)
    events: list[ParserEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return merged(events + parser.finish())


def text_of(events: list[ParserEvent]) -> str:
    """All the text the events carry."""
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def has_marker_in_text(events: list[ParserEvent], marker: str) -> bool:
    """Whether one run of text between calls holds `marker` (halves of a marker on either side
    of a call are two texts, not markup)."""
    return any(marker in event.text for event in merged(events) if isinstance(event, TextDelta))


def test_the_registry_names_every_format_by_its_stable_name() -> None:
    assert dict(FORMATS) == {
        "hermes": HERMES,
        "llama3": LLAMA3,
        "mistral": MISTRAL,
        "json": JSON_FALLBACK,
    }
    assert all(format_named(name) is fmt for name, fmt in FORMATS.items())


def test_an_unknown_format_name_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        format_named("pythonic")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_real_template_is_detected_as_its_familys_format(name: str) -> None:
    family = FAMILIES[name]

    assert detect_format(family.path.read_text(encoding="utf-8")) is family.fmt


@pytest.mark.parametrize(
    "source",
    [
        None,
        "",
        DEFAULT_CHATML_TEMPLATE,
        (HERE / "golden" / "smollm2.jinja").read_text(encoding="utf-8"),
        "{{ '<tool_call>' }}{% for m in messages %}{{ m.content }}{% endfor %}",
    ],
    ids=["none", "empty", "chatml", "smollm2", "markers_without_tools"],
)
def test_a_template_that_does_not_render_tools_gets_the_json_fallback(source: str | None) -> None:
    assert detect_format(source) is JSON_FALLBACK


def test_a_template_with_an_unknown_tool_format_gets_the_json_fallback() -> None:
    source = (HERE / "templates" / "lfm2_8b_a1b.jinja").read_text(encoding="utf-8")

    assert ChatTemplate(source).renders_tools
    assert detect_format(source) is JSON_FALLBACK


def test_hermes_markup_wins_over_llama_markers_in_one_template() -> None:
    source = "{{ tools }}<|start_header_id|>ipython<|end_header_id|><tool_call>[TOOL_CALLS]"

    assert detect_format(source) is HERMES


def test_detecting_a_template_that_does_not_compile_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        detect_format("{% for m in messages %}{{ tools }")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_real_template_renders_the_offered_tools(name: str) -> None:
    prompt = FAMILIES[name].load().render(QUESTION, tools=TOOLS)

    assert "get_weather" in prompt
    assert "Current weather for a city." in prompt
    assert "Weather in Paris?" in prompt


@pytest.mark.parametrize("name", FAMILIES)
def test_the_call_a_template_writes_into_history_parses_back_with_its_format(name: str) -> None:
    family = FAMILIES[name]
    template = family.load()
    prompt = template.render(QUESTION, tools=TOOLS, add_generation_prompt=True)
    history = template.render(
        [*QUESTION, ANSWER_WITH_CALL], tools=TOOLS, add_generation_prompt=False
    )

    assert history.startswith(prompt)
    written = history[len(prompt) :].split(family.stop_token)[0]
    assert parse_all(written, detect_format(template.source)) == [WEATHER_CALL]


@pytest.mark.parametrize(
    ("name", "text"), [(name, text) for name, texts in WRITTEN_ONE_CALL.items() for text in texts]
)
def test_one_call_as_each_family_writes_it_parses_to_the_same_call(name: str, text: str) -> None:
    assert parse_all(text, FORMATS[name]) == [WEATHER_CALL]


@pytest.mark.parametrize("name", WRITTEN_TWO_CALLS)
def test_two_calls_as_each_family_writes_them_parse_to_the_same_calls(name: str) -> None:
    assert parse_all(WRITTEN_TWO_CALLS[name], FORMATS[name]) == TWO_CALLS


def test_a_mistral_call_ends_where_its_array_closes_and_text_may_follow() -> None:
    parser = ToolCallParser(MISTRAL)

    assert parser.feed(f"Sure.\n[TOOL_CALLS][{WEATHER_HERMES}") == [TextDelta("Sure.")]
    assert parser.feed("] Done.") == [WEATHER_CALL, TextDelta("Done.")]
    assert parser.finish() == []


def test_brackets_inside_strings_do_not_end_a_mistral_call() -> None:
    body = '[{"name": "f", "arguments": {"s": "] } \\" [TOOL_CALLS]"}}]'

    assert parse_all(f"[TOOL_CALLS]{body}", MISTRAL) == [
        ToolCallParsed(0, "f", {"s": '] } " [TOOL_CALLS]'})
    ]


def test_a_mistral_array_of_non_calls_is_an_invalid_call_and_text_follows() -> None:
    assert parse_all("[TOOL_CALLS][1, 2] after", MISTRAL) == [
        InvalidToolCall(0, "[1, 2]", "not_a_call"),
        TextDelta("after"),
    ]


def test_a_mistral_array_that_never_closes_is_an_invalid_call_at_finish() -> None:
    text = '[TOOL_CALLS][{"name": "f", "arguments": {'

    assert parse_all(text, MISTRAL) == [InvalidToolCall(0, text[12:], "not_json")]


def test_python_after_the_python_tag_runs_to_the_end_as_an_invalid_call() -> None:
    code = 'print("hi")\nprint(2)'

    assert parse_all(f"Let me run it.<|python_tag|>{code}", LLAMA3) == [
        TextDelta("Let me run it."),
        InvalidToolCall(0, code, "not_json"),
    ]


def test_a_value_marker_at_the_end_of_the_output_is_an_empty_invalid_call() -> None:
    assert parse_all("Hi [TOOL_CALLS]  ", MISTRAL) == [
        TextDelta("Hi"),
        InvalidToolCall(0, "", "not_json"),
    ]


def representative(fmt: ToolCallFormat) -> list[str]:
    """Outputs that exercise `fmt`'s markers: calls, text around them, partial markers."""
    end = fmt.end or ""
    half = fmt.start[: len(fmt.start) // 2]
    return [
        *WRITTEN_ONE_CALL[fmt.name],
        WRITTEN_TWO_CALLS[fmt.name],
        f"Let me check.\n\n{fmt.start}[{WEATHER_HERMES}]{end}\n\nDone.\n",
        f"{fmt.start}not json{end} text",
        f"{fmt.start}[1, 2]{end} after",
        f"{fmt.start}{{ unterminated",
        f"Ends with a partial marker {half}",
        f"{half} is not a marker",
        f'{fmt.start}{{"name": "f", "arguments": {{"s": "] }} \\" {fmt.start}"}}}}{end} tail',
        f"{fmt.start}{WEATHER_HERMES}{end}{fmt.start}{TIME_HERMES}{end}",
        "Plain text, no call at all.",
        "",
    ]


REPRESENTATIVE = [(fmt, text) for fmt in FORMATS.values() for text in representative(fmt)]


@pytest.mark.parametrize(("fmt", "text"), REPRESENTATIVE)
def test_every_two_piece_split_gives_the_same_events_in_every_format(
    fmt: ToolCallFormat, text: str
) -> None:
    whole = merged(parse_all(text, fmt))

    for at in range(len(text) + 1):
        assert fed([text[:at], text[at:]], fmt) == whole, f"split at {at}"
    assert fed(list(text), fmt) == whole


@pytest.mark.parametrize(("fmt", "text"), REPRESENTATIVE)
def test_markup_never_leaks_into_text_in_any_format(fmt: ToolCallFormat, text: str) -> None:
    for events in (fed(list(text), fmt), parse_all(text, fmt)):
        assert not has_marker_in_text(events, fmt.start)


def fuzz_alphabet(fmt: ToolCallFormat) -> list[str]:
    """Pieces random outputs are made of: `fmt`'s markers and their halves, JSON fragments."""
    cut = len(fmt.start) // 2
    markers = [fmt.start, fmt.start[:cut], fmt.start[cut:]]
    if fmt.end:
        markers += [fmt.end, fmt.end[:3]]
    json_bits = ["{", "}", "[", "]", '"', "\\", ":", ",", '"name"', '"arguments"', '"f"']
    calls = [WEATHER_HERMES, WEATHER_LLAMA, '{"name": "g"', '"arguments": {"x": [1, "}"]}}']
    return [*markers, *json_bits, *calls, " ", "\n", "a", "Hi."]


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_random_outputs_fed_in_random_pieces_agree_with_whole_text_in_every_format(
    fmt: ToolCallFormat,
) -> None:
    rng = random.Random(f"formats-{fmt.name}")
    alphabet = fuzz_alphabet(fmt)
    for _ in range(1000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        whole = merged(parse_all(text, fmt))

        assert fed(pieces, fmt) == whole, repr(text)
        assert not has_marker_in_text(whole, fmt.start), repr(text)
        calls = [e for e in whole if not isinstance(e, TextDelta)]
        assert [e.index for e in calls] == list(range(len(calls))), repr(text)
        if not calls:
            assert text_of(whole) == text, repr(text)
