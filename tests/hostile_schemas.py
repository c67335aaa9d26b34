"""Tool parameter schemas written to hurt: each must get a result or a clear error, in bounded
time, from the limits, the grammar builders and `jsonschema` (tests/test_hostile_schemas.py)."""

from __future__ import annotations

from typing import Any

OBJECT: dict[str, Any] = {"type": "object"}


def nested(depth: int) -> dict[str, Any]:
    """An object nested `depth` levels deep."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


HOSTILE: dict[str, dict[str, Any]] = {
    "huge-properties": {
        "type": "object",
        "properties": {f"p{n}": {"type": "string", "description": "x" * 40} for n in range(3000)},
    },
    "deep-nesting": nested(200),
    "self-reference": {**OBJECT, "properties": {"child": {"$ref": "#"}, "v": {"type": "integer"}}},
    "ref-to-itself-only": {**OBJECT, "properties": {"a": {"$ref": "#/properties/a"}}},
    "mutual-ref-cycle": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        **OBJECT,
        "properties": {"x": {"$ref": "#/$defs/a"}},
    },
    "remote-ref": {**OBJECT, "properties": {"x": {"$ref": "http://169.254.169.254/latest"}}},
    "catastrophic-pattern": {
        **OBJECT,
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
    },
    "alternation-backtracking": {
        **OBJECT,
        "properties": {"s": {"type": "string", "pattern": "^(a|aa)*$"}},
    },
    "catastrophic-pattern-properties": {**OBJECT, "patternProperties": {"^(x*)*y$": {}}},
    "huge-repeat-in-pattern": {
        **OBJECT,
        "properties": {"s": {"type": "string", "pattern": "^a{99999}$"}},
    },
    "huge-max-length": {**OBJECT, "properties": {"s": {"type": "string", "maxLength": 10**9}}},
    "huge-min-items": {**OBJECT, "properties": {"a": {"type": "array", "minItems": 10**6}}},
    "contradictory-lengths": {
        **OBJECT,
        "properties": {"s": {"type": "string", "minLength": 9, "maxLength": 2}},
        "required": ["s"],
    },
    "contradictory-all-of": {
        **OBJECT,
        "properties": {"v": {"allOf": [{"type": "string"}, {"type": "integer"}]}},
        "required": ["v"],
    },
    "enormous-enum": {**OBJECT, "properties": {"e": {"enum": [f"v{n}" for n in range(5000)]}}},
    "hostile-names": {
        **OBJECT,
        "properties": {
            name: {"type": "string"}
            for name in ['a"b', "c\\d", "e\nf", "", "::=", "root", " ", "\u202e", "{}[]"]
        },
    },
    "every-type-at-once": {
        **OBJECT,
        "properties": {
            "v": {"type": ["string", "number", "integer", "object", "array", "boolean", "null"]}
        },
    },
    "invalid-regex": {**OBJECT, "properties": {"s": {"type": "string", "pattern": "(unclosed"}}},
}
