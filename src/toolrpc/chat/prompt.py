"""A conversation and its tools as one prompt, through the model's chat template.

Tools reach the model in one of two ways, chosen by `ChatTemplate.renders_tools`:

- natively, when the template renders `tools` itself (Qwen2.5, Llama 3.1, Hermes 2 Pro, ...):
  tools, assistant tool calls and tool results are passed in the OpenAI shapes that transformers'
  chat templates expect, and the template words them as the model was trained to see them;
- as text, when it does not (SmolLM2's plain ChatML, `DEFAULT_CHATML_TEMPLATE`): the tool list and
  how to call go into the system prompt (`TOOL_INSTRUCTIONS`), each past call becomes a
  `<tool_call>` block in its assistant message (the Hermes markup, which `toolcalls.JSON_FALLBACK`
  parses back), and each result a line "Result of <name>: <content>" in a user message.
  Measured on SmolLM2-135M: given Hermes `<tool_response>` blocks, it echoed the block back as
  its answer; given the plain line, it answered from the result ("The weather in Paris is sunny.").

Past calls and results are rendered even when no tools are offered this time (the loop guard's
final answer), so the model sees what happened; only the tool list is left out. Without tools a
past call is written in plain words ("(I called get_weather with {...}.)"), which the model
sometimes imitates. Tried and not kept (2026-12-02): leaving such calls out and folding their
results into the user's message. On the 10 follow-ups of benchmarks/tool_eval_cases.json sent
with `tool_choice: "none"` (greedy, 96 tokens), no answer copied the call's wording (before: 1
copied it and 4 more answered in its "(I ...)" form), but 6 answers used a value of the result
instead of 8 (347 x 29 lost its 10063; a translation was garbled).

The system prompt is the history's first message (chat/turn.py `with_system` puts a request's
`system` there).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from toolrpc.chat.template import ChatTemplate
from toolrpc.protocol import Message, Tool, ToolCall

RESULT_PREFIX = "Result of"
"""How a tool result starts when the template does not render tools (see the module docstring)."""

TOOL_INSTRUCTIONS = """\
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags, one <tool_call> block per call:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>

If no function is needed, answer the user directly, without any <tool_call>.
The result of each call comes back in a message that starts with "Result of <function-name>:". \
NEVER repeat a call whose result is already in the conversation: answer from that result instead."""
"""Appended to the system prompt when the template does not render tools; `{tools}` is the tool
list, one OpenAI-form JSON object per line."""


def render_prompt(template: ChatTemplate, history: Sequence[Message], tools: Sequence[Tool]) -> str:
    """The prompt that asks the model for the next assistant message.

    A pure function of its inputs. Raises `InvalidParams` when the template refuses the
    conversation and `ToolRpcError` when the template itself fails (see `ChatTemplate.render`).
    """
    if template.renders_tools:
        return template.render(_native_messages(history), tools=_tool_dicts(tools) or None)
    return template.render(_textual_messages(history, tools))


def _tool_dicts(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.function.name,
                "description": tool.function.description,
                "parameters": tool.function.parameters,
            },
        }
        for tool in tools
    ]


def _text(content: str | None) -> str:
    """Message content as text: None is empty (tool results are already text: chat/turn.py)."""
    return content or ""


def _call_names(history: Sequence[Message]) -> dict[str, str]:
    """Tool name by call id, to name results that do not carry their tool's name."""
    return {call.id: call.name for message in history for call in message.tool_calls or ()}


def _result_name(message: Message, call_names: Mapping[str, str]) -> str | None:
    return message.name or call_names.get(message.tool_call_id or "")


def _native_messages(history: Sequence[Message]) -> list[dict[str, Any]]:
    call_names = _call_names(history)
    return [_native_message(message, call_names) for message in history]


def _native_message(message: Message, call_names: Mapping[str, str]) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "name": _result_name(message, call_names),
            "content": _text(message.content),
        }
    if not message.tool_calls:
        return {"role": message.role, "content": _text(message.content)}
    return {
        "role": message.role,
        # None leaves the key out, as transformers does; templates test `message.content`.
        "content": message.content,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ],
    }


def _textual_messages(history: Sequence[Message], tools: Sequence[Tool]) -> list[dict[str, Any]]:
    call_names = _call_names(history)
    out: list[dict[str, Any]] = []
    previous: Message | None = None
    for message in history:
        if message.role == "tool":
            block = _tool_response_text(message, call_names)
            if previous is not None and previous.role == "tool":
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        elif message.tool_calls:
            text = _text(message.content)
            calls = "\n".join(_tool_call_text(call, bool(tools)) for call in message.tool_calls)
            out.append({"role": message.role, "content": f"{text}\n{calls}" if text else calls})
        else:
            out.append({"role": message.role, "content": _text(message.content)})
        previous = message
    if tools:
        _add_tool_instructions(out, tools)
    return out


def _tool_call_text(call: ToolCall, as_markup: bool) -> str:
    """A past call: Hermes markup while tools are offered, else plain words (a small model
    shown markup it may not use copies it instead of answering)."""
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    if not as_markup:
        return f"(I called {call.name} with {arguments}.)"
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def _tool_response_text(message: Message, call_names: Mapping[str, str]) -> str:
    name = _result_name(message, call_names) or "the tool"
    return f"{RESULT_PREFIX} {name}: {_text(message.content)}"


def _add_tool_instructions(out: list[dict[str, Any]], tools: Sequence[Tool]) -> None:
    """Append the tool instructions to the system message of `out`, adding one if needed."""
    listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in _tool_dicts(tools))
    instructions = TOOL_INSTRUCTIONS.format(tools=listing)
    if out and out[0]["role"] == "system":
        system = out[0]["content"]
        out[0] = {
            "role": "system",
            "content": f"{system}\n\n{instructions}" if system else instructions,
        }
    else:
        out.insert(0, {"role": "system", "content": instructions})
