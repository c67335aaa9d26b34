"""Behaviour of TextAssembler: whole characters out, stop strings cut, nothing depends on splits."""

from __future__ import annotations

import itertools

import pytest

from toolrpc.scheduling.text import TextAssembler


def feed(pieces: list[bytes], stop: tuple[str, ...]) -> tuple[list[str], str, bool]:
    """Push every piece; return what each push released, what flush released, and is_stopped."""
    assembler = TextAssembler(stop)
    released = [assembler.push(piece) for piece in pieces]
    return released, assembler.flush(), assembler.is_stopped


def expected_output(text: str, stop: tuple[str, ...]) -> str:
    """The text up to the earliest occurrence of any stop string."""
    cuts = [at for at in (text.find(s) for s in stop if s) if at >= 0]
    return text[: min(cuts)] if cuts else text


def test_multi_byte_characters_split_across_tokens_come_out_whole() -> None:
    text = "é😀中ß"
    data = text.encode()

    released, tail, is_stopped = feed([data[i : i + 1] for i in range(len(data))], ())

    assert "".join(released) + tail == text
    assert all(piece in ("", *text) for piece in released)
    assert "\ufffd" not in "".join(released)
    assert not is_stopped


def test_a_stop_string_inside_one_token_cuts_the_text_and_stops() -> None:
    assembler = TextAssembler(("STOP",))

    assert assembler.push(b"hello STOP world") == "hello "
    assert assembler.is_stopped
    assert assembler.push(b"more") == ""
    assert assembler.flush() == ""


def test_a_stop_string_spanning_tokens_is_detected_and_none_of_it_is_released() -> None:
    released, tail, is_stopped = feed([b"abc</", b"en", b"d>after"], ("</end>",))

    assert released == ["abc", "", ""]
    assert tail == ""
    assert is_stopped


def test_text_that_only_looked_like_a_stop_prefix_is_released_later_in_order() -> None:
    released, tail, is_stopped = feed([b"a</", b"e", b"x b", b"<", b"/en"], ("</end>",))

    assert released == ["a", "", "</ex b", "", ""]
    assert tail == "</en"
    assert not is_stopped


def test_flush_returns_the_held_text() -> None:
    assembler = TextAssembler(("<|end|>",))

    assert assembler.push(b"answer <|") == "answer "
    assert assembler.flush() == "<|"
    assert assembler.flush() == ""


def test_flush_replaces_an_unfinished_character() -> None:
    assembler = TextAssembler()

    assert assembler.push("ok€".encode()[:-1]) == "ok"
    assert assembler.flush() == "\ufffd"


def test_the_earliest_stop_string_wins_whatever_the_order_of_the_stop_list() -> None:
    for stop in [("b", "a"), ("a", "b")]:
        released, _, is_stopped = feed([b"xab"], stop)

        assert released == ["x"], stop
        assert is_stopped

    for stop in [("bc", "abc"), ("abc", "bc")]:
        released, _, is_stopped = feed([b"x", b"ab", b"c"], stop)

        assert "".join(released) == "x", stop
        assert is_stopped


def test_empty_stop_strings_are_ignored() -> None:
    released, tail, is_stopped = feed([b"abc"], ("",))

    assert "".join(released) + tail == "abc"
    assert not is_stopped


SPLIT_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("Hello world<|end|>ignored", ("<|end|>",)),
    ("naïve café — 東京 😀 done", ("東京",)),
    ("price: 10€ EUR", ("€ E",)),
    ("aaab tail", ("aab",)),
    ("no stop, just <| and <|en", ("<|end|>",)),
    ("abcabd!", ("abd", "bca")),
    ("plain ünïcode, no stops", ()),
    ("x</tool_call>y</end>z", ("</end>", "</tool_call>")),
]


@pytest.mark.parametrize(("text", "stop"), SPLIT_CASES)
def test_released_text_does_not_depend_on_where_the_bytes_are_split(
    text: str, stop: tuple[str, ...]
) -> None:
    data = text.encode()
    expected = expected_output(text, stop)
    splittings: list[list[bytes]] = [[data], [data[i : i + 1] for i in range(len(data))]]
    splittings += [[data[:i], data[i:]] for i in range(1, len(data))]
    for i, j in itertools.combinations(range(1, len(data)), 2):
        splittings.append([data[:i], data[i:j], data[j:]])

    for pieces in splittings:
        released, tail, is_stopped = feed(pieces, stop)

        assert "".join(released) + tail == expected, pieces
        assert is_stopped == (expected != text), pieces
