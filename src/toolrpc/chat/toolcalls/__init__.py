"""Tool-call parsing: generated text in, text deltas and structured tool calls out.

A model asks for a tool by writing markup into its text, e.g. Hermes/Qwen's
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, or, under constrained decoding, a bare
JSON call object. Each model family's markup is described as data (`ToolCallFormat`); one
`ToolCallParser` state machine, fed the text in pieces of any size, emits `TextDelta`,
`ToolCallParsed` and `InvalidToolCall` events without ever letting markup into the text. Whole-text
parsing (`parse_all`) is the same machine fed once, so streaming and non-streaming agree.
`FORMATS` names the known families ("hermes", "llama3", "mistral", and "json", toolrpc's own
fallback), and `detect_format` picks one from a chat template's source. This package knows
nothing of engines, tokens, tool schemas or the wire: it does not check that a called tool
exists or that its arguments match a schema.
"""

from toolrpc.chat.toolcalls.detect import detect_format
from toolrpc.chat.toolcalls.formats import (
    FORMATS,
    HERMES,
    JSON_FALLBACK,
    LLAMA3,
    MISTRAL,
    ToolCallFormat,
    format_named,
)
from toolrpc.chat.toolcalls.parser import (
    InvalidReason,
    InvalidToolCall,
    ParserEvent,
    TextDelta,
    ToolCallParsed,
    ToolCallParser,
    parse_all,
)

__all__ = [
    "FORMATS",
    "HERMES",
    "JSON_FALLBACK",
    "LLAMA3",
    "MISTRAL",
    "InvalidReason",
    "InvalidToolCall",
    "ParserEvent",
    "TextDelta",
    "ToolCallFormat",
    "ToolCallParsed",
    "ToolCallParser",
    "detect_format",
    "format_named",
    "parse_all",
]
