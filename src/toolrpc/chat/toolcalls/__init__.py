"""Tool-call parsing: generated text in, text deltas and structured tool calls out.

A model asks for a tool by writing markup into its text, e.g. Hermes/Qwen's
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, or, under constrained decoding, a bare
JSON call object. Each model family's markup is described as data (`ToolCallFormat`); one
`ToolCallParser` state machine, fed the text in pieces of any size, emits `TextDelta`,
`ToolCallParsed` and `InvalidToolCall` events without ever letting markup into the text. Whole-text
parsing (`parse_all`) is the same machine fed once, so streaming and non-streaming agree. This
package knows nothing of engines, tokens, chat templates, tool schemas or the wire: it does not
check that a called tool exists or that its arguments match a schema.
"""

from toolrpc.chat.toolcalls.formats import HERMES, ToolCallFormat
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
    "HERMES",
    "InvalidReason",
    "InvalidToolCall",
    "ParserEvent",
    "TextDelta",
    "ToolCallFormat",
    "ToolCallParsed",
    "ToolCallParser",
    "parse_all",
]
