"""`tool_choice` and the tools' JSON Schemas turned into a constraint the engine enforces.

The engine receives a JSON Schema for its whole output (`GenerationRequest.json_schema`) and
compiles it to its own grammar (llama.cpp GBNF, or a logits processor for transformers), so the
chat layer never knows how a backend constrains decoding. The schema describes one call object,
`{"name": <tool>, "arguments": <that tool's parameters>}`, which the tool-call parser reads as a
bare JSON call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toolrpc.protocol import Tool


def call_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """A JSON Schema that only a call to one of `tools` with valid arguments satisfies."""
    variants = [_one_call_schema(tool) for tool in tools]
    if len(variants) == 1:
        return variants[0]
    return {"anyOf": variants}


def _one_call_schema(tool: Tool) -> dict[str, Any]:
    parameters = dict(tool.function.parameters)
    if not parameters or parameters == {"type": "object"}:
        parameters = {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
