"""Which tool-call format a model writes, read from its chat template's source."""

from __future__ import annotations

from toolrpc.chat.template import ChatTemplate
from toolrpc.chat.toolcalls.formats import (
    HERMES,
    JSON_FALLBACK,
    LLAMA3,
    MISTRAL,
    ToolCallFormat,
)

_LLAMA3_SIGNS = ("<|start_header_id|>ipython<|end_header_id|>", "<|python_tag|>")


def detect_format(chat_template: str | None) -> ToolCallFormat:
    """The format the model whose chat template source is `chat_template` writes its calls in.

    The rules, first match wins:

    1. No template (None or empty): `JSON_FALLBACK`. The server falls back to plain ChatML,
       which renders no tools, so toolrpc's own instructions teach the format.
    2. A template that does not read the `tools` variable: `JSON_FALLBACK`, for the same reason
       (the prompt carries toolrpc's instructions, not the model's).
    3. The source contains `<tool_call>`: `HERMES` (Hermes 2 Pro / 3, Qwen2.5).
    4. It contains the ipython header `<|start_header_id|>ipython<|end_header_id|>` or
       `<|python_tag|>`: `LLAMA3` (Llama 3.1 has both, 3.2 only the header).
    5. It contains `[TOOL_CALLS]`: `MISTRAL` (7B v0.3, Nemo).
    6. Otherwise (a template that renders tools in a format toolrpc does not know, e.g.
       Command R or Functionary): `JSON_FALLBACK`, the closest thing to a generic format.

    Why source matching: it is what llama.cpp does (`common/chat.cpp` looks for the same
    substrings, in this order: `<tool_call>`, the ipython header, `[TOOL_CALLS]`, then its
    generic JSON fallback), and it needs no tokenizer. vLLM does not detect at all: the operator
    names a parser (`--tool-call-parser hermes|llama3_json|mistral`). Rule 3 comes before rule 4
    because Hermes fine-tunes of Llama keep Hermes markup. Rule 2 comes first because a template
    that ignores the tools never shows the model its own format, even if it renders past calls.

    Limits, seen running this over the 70 templates in llama.cpp's `models/templates`: a family
    whose call body is not JSON but shares a marker is detected as that marker's family, and its
    calls come back as `InvalidToolCall`: Qwen3-Coder and GLM 4.5+ (XML-like bodies inside
    `<tool_call>`), Functionary v3.1 (`<function=...>` in a Llama template), Devstral and
    Ministral 3 (`[TOOL_CALLS]name[ARGS]{...}`).

    Raises:
        ValueError: if the template is not valid Jinja (as `ChatTemplate` raises).
    """
    if not chat_template:
        return JSON_FALLBACK
    if not ChatTemplate(chat_template).renders_tools:
        return JSON_FALLBACK
    if HERMES.start in chat_template:
        return HERMES
    if any(sign in chat_template for sign in _LLAMA3_SIGNS):
        return LLAMA3
    if MISTRAL.start in chat_template:
        return MISTRAL
    return JSON_FALLBACK
