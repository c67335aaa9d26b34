"""Type aliases shared by every layer (no behaviour, no imports from toolrpc)."""

from __future__ import annotations

from typing import Literal, TypeAlias

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "loop_guard"]
"""Why a `create_message` step ended (docs/protocol.md)."""

EngineFinishReason: TypeAlias = Literal["stop", "length"]
"""Why an engine stopped generating: end of sequence / stop string, or the token limit."""
