"""JSON Schema to llama.cpp GBNF, for the grammar sampler of a constrained generation.

llama-cpp-python's `json_schema_to_gbnf` does the conversion; small bounded integer ranges are
first written as an `enum` (`bounded_integers`), because the converter ignores integer bounds.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from toolrpc.types import JSONObject

MAX_ENUMERATED_INTEGERS = 256
"""Bounded integer ranges up to this size are enforced as an enum (see `bounded_integers`)."""


def to_gbnf(json_schema: JSONObject) -> str:
    """The GBNF grammar of `json_schema`; `ValueError` for a schema the converter refuses."""
    try:
        return str(json_schema_to_gbnf(json.dumps(bounded_integers(json_schema))))
    except Exception as exc:  # the converter raises bare Exceptions for unsupported schemas
        raise ValueError(f"cannot turn the JSON Schema into a grammar: {exc}") from exc


def bounded_integers(schema: Any) -> Any:
    """The schema with each small bounded integer range (`minimum`..`maximum`, up to
    `MAX_ENUMERATED_INTEGERS` values) written as an `enum`: llama-cpp-python's converter ignores
    integer bounds, so a call with `"max_results": 0` passed the grammar and then failed
    validation. Wider ranges keep their bounds for that validation only."""
    if isinstance(schema, list):
        return [bounded_integers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    lowered = {key: bounded_integers(value) for key, value in schema.items()}
    low, high = integer_bounds(lowered)
    if low is not None and high is not None and 0 <= high - low < MAX_ENUMERATED_INTEGERS:
        for key in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            lowered.pop(key, None)
        lowered["enum"] = list(range(low, high + 1))
    return lowered


def integer_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive bounds of an integer schema without enum or const, else (None, None)."""
    if schema.get("type") != "integer" or "enum" in schema or "const" in schema:
        return None, None
    lows: list[int] = []
    highs: list[int] = []
    for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        value = schema.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key == "minimum":
            lows.append(math.ceil(value))
        elif key == "exclusiveMinimum":
            lows.append(math.floor(value) + 1)
        elif key == "maximum":
            highs.append(math.floor(value))
        else:
            highs.append(math.ceil(value) - 1)
    return (max(lows) if lows else None, min(highs) if highs else None)
