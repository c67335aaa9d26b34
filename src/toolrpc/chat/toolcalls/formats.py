"""Tool-call markup formats, described as data rather than as code.

Each model family marks a call in its text its own way; `FORMATS` names the ones toolrpc parses:

- "hermes" (`HERMES`): Hermes 2 Pro / Hermes 3, Qwen2.5:
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
- "llama3" (`LLAMA3`): Llama 3.1-3.3 JSON tool calling, `{"name": ..., "parameters": {...}}`,
  optionally after `<|python_tag|>`.
- "mistral" (`MISTRAL`): Mistral 7B v0.3, Nemo, Small: `[TOOL_CALLS][{"name": ..., "arguments":
  {...}}, ...]`, a JSON array after the marker and no end marker.
- "json" (`JSON_FALLBACK`): what toolrpc's own tool instructions (chat/prompt.py) teach a model
  whose chat template has no tool format: Hermes markup, or a bare JSON call.

Engines render a control token such as `<|python_tag|>` or `[TOOL_CALLS]` as empty text, so a
Llama or Mistral call often arrives as bare JSON at the start of the output with no marker at
all; the parser's bare-JSON reading (`ToolCallParser(allow_bare_json=True)`) covers that form
for every format. End-of-message tokens (`<|eom_id|>`, `<|eot_id|>`, `</s>`) are stop tokens:
generation ends on them and they never reach the parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class ToolCallFormat:
    """How a model family marks a tool call in its generated text.

    A call is the `start` marker, then a JSON body: one call object (`{"name": ...,
    "arguments": {...}}`, or `parameters` for arguments) or an array of them. With an `end`
    marker the body runs to it (Hermes). Without one (`end == ""`) the body is exactly one JSON
    value and ends where that value's brackets close (Mistral's `[TOOL_CALLS][...]`, Llama's
    `<|python_tag|>{...}`); a body that does not open with `{` or `[` runs to the end of the
    output (Llama writes Python code after `<|python_tag|>` for its built-in code interpreter).
    Supporting another family whose markup has this shape takes another instance, not another
    parser.

    Raises:
        ValueError: if `start` is empty.
    """

    name: str
    start: str
    end: str = ""

    def __post_init__(self) -> None:
        if not self.start:
            raise ValueError(f"format {self.name!r} needs a non-empty start marker")

    @property
    def is_body_one_json_value(self) -> bool:
        """Whether a call's body ends where its JSON value ends (there is no end marker)."""
        return not self.end


HERMES = ToolCallFormat("hermes", "<tool_call>", "</tool_call>")
"""Hermes 2 Pro / 3 and Qwen2.5: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`."""

LLAMA3 = ToolCallFormat("llama3", "<|python_tag|>")
"""Llama 3.1, 3.2 and 3.3 JSON tool calling: `{"name": ..., "parameters": {...}}`, as the
model's whole message or after `<|python_tag|>`; one call per message (the official templates
refuse more)."""

MISTRAL = ToolCallFormat("mistral", "[TOOL_CALLS]")
"""Mistral 7B Instruct v0.3, Mistral Nemo and Small: `[TOOL_CALLS][{"name": ..., "arguments":
{...}}, ...]`; the array holds every call of the message. Not the newer
`[TOOL_CALLS]name[ARGS]{...}` form of Devstral, Ministral 3 and Magistral."""

JSON_FALLBACK = ToolCallFormat("json", "<tool_call>", "</tool_call>")
"""For templates with no tool format of their own: the Hermes markup that toolrpc's
`TOOL_INSTRUCTIONS` teach, or a bare JSON call (what constrained decoding produces). Its markers
are Hermes's; it is a separate name because it is toolrpc's choice, not the model's."""

FORMATS: Mapping[str, ToolCallFormat] = MappingProxyType(
    {fmt.name: fmt for fmt in (HERMES, LLAMA3, MISTRAL, JSON_FALLBACK)}
)
"""Every known format by its stable name ("hermes", "llama3", "mistral", "json"); read-only."""


def format_named(name: str) -> ToolCallFormat:
    """The format called `name` in `FORMATS`.

    Raises:
        ValueError: if no format has that name (the message lists the known names).
    """
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(FORMATS)
        raise ValueError(f"unknown tool-call format {name!r}; known: {known}") from None
