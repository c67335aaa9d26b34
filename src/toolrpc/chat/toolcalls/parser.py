"""A state machine that turns generated text into text deltas and tool calls.

The machine is fed text in pieces of any size and emits events as soon as they are certain;
`parse_all` feeds it once, so streaming and whole-text parsing agree by construction.

Whitespace contract: text is emitted as generated, except that whitespace next to a tool call is
dropped: the whitespace right before a call's start marker (or a bare JSON call; at most the last
`MAX_HELD_WHITESPACE` characters of it), the whitespace right after a call, and so all whitespace
between calls. Output without tool calls comes back
unchanged. To honour this while streaming, trailing whitespace is held back until something other
than whitespace or a call follows it, as is any tail that may be the beginning of a start marker.

A call's body ends at the first end marker, even inside a JSON string; an end marker with no start
marker before it is ordinary text. In a format without an end marker (Mistral, Llama) the body is
the JSON value after the start marker and ends where its brackets close, so text may follow it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Literal, TypeAlias

from toolrpc.chat.toolcalls.formats import HERMES, ToolCallFormat
from toolrpc.types import JSONObject

InvalidReason: TypeAlias = Literal["not_json", "not_a_call", "missing_name", "arguments_not_object"]
"""Why a call's body is not a call: not JSON; JSON but not an object (or a non-empty list of
them); no non-empty string `name`; `arguments` neither an object nor a string encoding one."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text meant for the user; never contains a start marker or a call's body."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallParsed:
    """A well-formed tool call; `index` counts every call, valid or not, from 0."""

    index: int
    name: str
    arguments: JSONObject


@dataclass(frozen=True, slots=True)
class InvalidToolCall:
    """Call markup whose body is not a valid call; `raw` is the body, stripped of whitespace."""

    index: int
    raw: str
    reason: InvalidReason


ParserEvent: TypeAlias = TextDelta | ToolCallParsed | InvalidToolCall


MAX_HELD_WHITESPACE = 64
"""Whitespace held back while streaming (it may precede a call); a longer run is released."""


class _State(enum.Enum):
    EXPECT_BARE = enum.auto()  # only whitespace since the output began or since a bare call
    BARE = enum.auto()  # inside a JSON value that may be a bare call
    TEXT = enum.auto()
    CALL = enum.auto()  # between the start and end markers
    FINISHED = enum.auto()


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    arguments: JSONObject


_NOT_JSON = -1
# The characters that may follow a bare value's opening bracket (after whitespace) if it is to be
# a call: an object's first key or its end, or an array's first object or its end.
_BARE_OPENERS = {"{": '"}', "[": "{]"}


class _BracketScanner:
    """Finds where a JSON value starting with `{` or `[` ends, over text that keeps growing."""

    def __init__(self, opener: str, *, is_checked: bool = False) -> None:
        """Scan a value opened by `opener`; unless `is_checked`, a value whose first token
        cannot begin a call (see `_BARE_OPENERS`) is reported as `_NOT_JSON` at once."""
        self._allowed_first = _BARE_OPENERS[opener]
        self._pos = 1
        self._depth = 1
        self._is_checked = is_checked
        self._in_string = False
        self._in_escape = False

    def scan(self, text: str) -> int | None:
        """Return the end of the value in `text`, `_NOT_JSON`, or None while it is open."""
        for i in range(self._pos, len(text)):
            char = text[i]
            if self._in_string:
                if self._in_escape:
                    self._in_escape = False
                elif char == "\\":
                    self._in_escape = True
                elif char == '"':
                    self._in_string = False
                continue
            if not self._is_checked:
                if char.isspace():
                    continue
                self._is_checked = True
                if char not in self._allowed_first:
                    return _NOT_JSON
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        self._pos = len(text)
        return None


class ToolCallParser:
    """Parses one generation's text, fed in pieces, into `ParserEvent`s.

    Call `feed` with each piece as it arrives and `finish` once at the end; each returns the
    events that became certain. After `finish`, `feed` and `finish` are ignored and return no
    events. Nothing is raised on malformed output: it becomes text or an `InvalidToolCall`.

    With `allow_bare_json`, output whose first non-whitespace character is `{` or `[` is read as
    JSON: a call object, or a non-empty array of them, becomes calls (and more may follow); any
    other value, or anything that is not JSON, is read as text.

    Without `hold_whitespace` (for output where no call can be accepted, e.g. no tools offered)
    text whitespace is emitted as it arrives instead of being held for a call that may follow
    (a paragraph break held back stalled a stream's delta by a step or two); markup is still
    dropped, the whitespace before it kept.
    """

    def __init__(
        self,
        fmt: ToolCallFormat = HERMES,
        *,
        allow_bare_json: bool = True,
        hold_whitespace: bool = True,
    ) -> None:
        self._fmt = fmt
        self._hold_whitespace = hold_whitespace
        self._state = _State.EXPECT_BARE if allow_bare_json else _State.TEXT
        self._buf = ""
        self._num_calls = 0
        self._is_after_call = False
        self._num_searched = 0
        self._bare_start = 0
        self._scanner = _BracketScanner("{")
        self._body_scanner: _BracketScanner | None = None

    def feed(self, text: str) -> list[ParserEvent]:
        """Add generated text; return the events it made certain."""
        if self._state is _State.FINISHED or not text:
            return []
        self._buf += text
        return self._run(is_final=False)

    def finish(self) -> list[ParserEvent]:
        """End the output: flush held-back text and parse an unterminated call's body anyway."""
        if self._state is _State.FINISHED:
            return []
        events = self._run(is_final=True)
        self._state = _State.FINISHED
        self._buf = ""
        return events

    def _run(self, is_final: bool) -> list[ParserEvent]:
        events: list[ParserEvent] = []
        while self._step(is_final, events):
            pass
        return events

    def _step(self, is_final: bool, events: list[ParserEvent]) -> bool:
        """Advance by one state; return whether to continue (False: wait for more text)."""
        match self._state:
            case _State.EXPECT_BARE:
                return self._step_expect_bare(is_final)
            case _State.BARE:
                return self._step_bare(is_final, events)
            case _State.TEXT:
                return self._step_text(is_final, events)
            case _State.CALL:
                return self._step_call(is_final, events)
            case _State.FINISHED:
                return False

    def _step_expect_bare(self, is_final: bool) -> bool:
        stripped = self._buf.lstrip()
        num_leading = len(self._buf) - len(stripped)
        if not stripped and num_leading <= MAX_HELD_WHITESPACE:
            if is_final:
                self._state = _State.TEXT
            return is_final
        if stripped and stripped[0] in _BARE_OPENERS and num_leading <= MAX_HELD_WHITESPACE:
            self._bare_start = len(self._buf) - len(stripped)
            self._scanner = _BracketScanner(stripped[0])
            self._state = _State.BARE
        else:
            self._state = _State.TEXT
        return True

    def _step_bare(self, is_final: bool, events: list[ParserEvent]) -> bool:
        value_text = self._buf[self._bare_start :]
        end = self._scanner.scan(value_text)
        if end is None and not is_final:
            return False
        calls = _bare_calls(value_text[:end]) if end is not None and end != _NOT_JSON else None
        if calls is None:
            self._state = _State.TEXT
            return True
        for call in calls:
            events.append(ToolCallParsed(self._next_index(), call.name, call.arguments))
        self._buf = value_text[end:]
        self._is_after_call = True
        self._state = _State.EXPECT_BARE
        return True

    def _step_text(self, is_final: bool, events: list[ParserEvent]) -> bool:
        if self._is_after_call:
            self._buf = self._buf.lstrip()
            self._is_after_call = not self._buf
        start = self._buf.find(self._fmt.start)
        if start >= 0:
            _emit_text(_rstrip_bounded(self._buf[:start]), events)
            self._buf = self._buf[start + len(self._fmt.start) :]
            self._num_searched = 0
            self._body_scanner = None
            self._state = _State.CALL
            return True
        if is_final:
            _emit_text(self._buf, events)
            self._buf = ""
            return False
        num_held = _partial_marker_len(self._buf, self._fmt.start)
        text = self._buf[: len(self._buf) - num_held]
        if self._hold_whitespace:
            text = _rstrip_bounded(text)
        _emit_text(text, events)
        self._buf = self._buf[len(text) :]
        return False

    def _step_call(self, is_final: bool, events: list[ParserEvent]) -> bool:
        if self._fmt.is_body_one_json_value:
            span = self._value_body_span(is_final)
        else:
            span = self._marked_body_span(is_final)
        if span is None:
            return False
        body_end, rest_start = span
        raw = self._buf[:body_end].strip()
        calls = _calls_in(_loads(raw))
        if isinstance(calls, str):
            events.append(InvalidToolCall(self._next_index(), raw, calls))
        else:
            for call in calls:
                events.append(ToolCallParsed(self._next_index(), call.name, call.arguments))
        self._buf = self._buf[rest_start:]
        self._is_after_call = True
        self._state = _State.TEXT
        return True

    def _marked_body_span(self, is_final: bool) -> tuple[int, int] | None:
        """(end of the body, start of what follows the end marker), or None to wait."""
        end_marker = self._fmt.end
        end = self._buf.find(end_marker, self._num_searched)
        if end >= 0:
            return end, end + len(end_marker)
        if is_final:
            return len(self._buf) - _partial_marker_len(self._buf, end_marker), len(self._buf)
        self._num_searched = max(0, len(self._buf) - len(end_marker) + 1)
        return None

    def _value_body_span(self, is_final: bool) -> tuple[int, int] | None:
        """(end of the body's JSON value, the same), or None to wait: a body that does not open
        with a bracket, or whose value never closes, runs to the end of the output."""
        stripped = self._buf.lstrip()
        if stripped and stripped[0] in _BARE_OPENERS and self._body_scanner is None:
            self._body_scanner = _BracketScanner(stripped[0], is_checked=True)
        if self._body_scanner is not None:
            value_start = len(self._buf) - len(stripped)
            end = self._body_scanner.scan(self._buf[value_start:])
            if end is not None:
                return value_start + end, value_start + end
        if is_final:
            return len(self._buf), len(self._buf)
        return None

    def _next_index(self) -> int:
        index = self._num_calls
        self._num_calls += 1
        return index


def parse_all(
    text: str, fmt: ToolCallFormat = HERMES, *, allow_bare_json: bool = True
) -> list[ParserEvent]:
    """Parse a whole generation: a `ToolCallParser` fed `text` once, then finished.

    Adjacent text deltas are joined, so the text between two calls is one `TextDelta`.
    """
    parser = ToolCallParser(fmt, allow_bare_json=allow_bare_json)
    events: list[ParserEvent] = []
    for event in parser.feed(text) + parser.finish():
        last = events[-1] if events else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            events[-1] = TextDelta(last.text + event.text)
        else:
            events.append(event)
    return events


def _emit_text(text: str, events: list[ParserEvent]) -> None:
    if text:
        events.append(TextDelta(text))


def _rstrip_bounded(text: str) -> str:
    """`text` without its trailing whitespace, but only up to `MAX_HELD_WHITESPACE` of it: a
    longer run is text (and, streaming, is not held back forever)."""
    stripped = text.rstrip()
    return text[: max(len(stripped), len(text) - MAX_HELD_WHITESPACE)]


def _partial_marker_len(text: str, marker: str) -> int:
    """Length of the longest tail of `text` that is a proper beginning of `marker`."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


class _Unparsable:
    """Stands for text that is not JSON (a value no JSON document decodes to)."""


_UNPARSABLE = _Unparsable()


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _UNPARSABLE


def _bare_calls(text: str) -> list[_Call] | None:
    """The calls a bare JSON value holds, or None if it is not a call or a list of calls."""
    calls = _calls_in(_loads(text))
    return None if isinstance(calls, str) else calls


def _calls_in(value: object) -> list[_Call] | InvalidReason:
    """Read a decoded body as one call object or a non-empty list of them."""
    if value is _UNPARSABLE:
        return "not_json"
    items = value if isinstance(value, list) else [value]
    if not items:
        return "not_a_call"
    calls: list[_Call] = []
    for item in items:
        call = _to_call(item)
        if isinstance(call, str):
            return call
        calls.append(call)
    return calls


def _to_call(value: object) -> _Call | InvalidReason:
    """Normalise `{name, arguments}`, `parameters`, string arguments and `{function: {...}}`."""
    if not isinstance(value, dict):
        return "not_a_call"
    function = value.get("function")
    if "name" not in value and isinstance(function, dict):
        value = function
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return "missing_name"
    arguments = value.get("arguments")
    if arguments is None:
        arguments = value.get("parameters")
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return _Call(name, {})
    if isinstance(arguments, str):
        arguments = _loads(arguments)
    if not isinstance(arguments, dict):
        return "arguments_not_object"
    return _Call(name, arguments)
