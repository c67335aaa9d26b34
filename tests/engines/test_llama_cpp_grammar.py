"""JSON Schema to GBNF: what the llama.cpp engine adds to llama-cpp-python's converter."""

from __future__ import annotations

import pytest

from toolrpc.engines.gbnf import MAX_ENUMERATED_INTEGERS, bounded_integers, to_gbnf


@pytest.mark.parametrize(
    ("bounds", "values"),
    [
        ({"minimum": 1, "maximum": 4}, [1, 2, 3, 4]),
        ({"exclusiveMinimum": 0, "exclusiveMaximum": 3}, [1, 2]),
        ({"minimum": 0.5, "maximum": 2.5}, [1, 2]),
        ({"minimum": 5, "maximum": 5}, [5]),
    ],
)
def test_a_small_bounded_integer_range_becomes_an_enum(
    bounds: dict[str, float], values: list[int]
) -> None:
    schema = {"type": "integer", "description": "how many", **bounds}

    assert bounded_integers(schema) == {"description": "how many", "enum": values}


def test_nested_ranges_are_rewritten_and_everything_else_is_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 3},
            "wide": {"type": "integer", "minimum": 0, "maximum": MAX_ENUMERATED_INTEGERS},
            "open": {"type": "integer", "minimum": 1},
            "empty": {"type": "integer", "minimum": 3, "maximum": 2},
            "tags": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1}},
        },
    }

    lowered = bounded_integers(schema)

    assert lowered["properties"]["n"] == {"enum": [1, 2, 3]}
    assert lowered["properties"]["tags"]["items"] == {"enum": [0, 1]}
    for kept in ("wide", "open", "empty"):
        assert lowered["properties"][kept] == schema["properties"][kept]


def test_the_grammar_of_a_bounded_integer_lists_its_values() -> None:
    grammar = to_gbnf({"type": "integer", "minimum": 7, "maximum": 9})

    assert all(f'"{n}"' in grammar for n in (7, 8, 9))
