"""A model behind OpenAI-compatible servers, as a `ChatModel` (chat/model.py).

The upstream renders its own chat template and parses its own tool calls (vLLM's, SGLang's and
llama-server's tool parsers know their models best), so this side sends messages and tools, not
a prompt, and reads content deltas and `tool_calls` back:

- the offer becomes OpenAI's `tools` and `tool_choice`: a constrained offer of one tool names it
  (`{"type": "function", ...}`), of several is `"required"`; an unconstrained offer with tools is
  `"auto"`; an offer with no tools sends neither;
- streamed `tool_calls` are put together by their `index` (arguments arrive as fragments) and
  each passes `ToolOffer.accept`, so a call whose arguments do not validate is dropped, as with
  a local model; content is still read with a tool-call parser, so an upstream without a tool
  parser of its own that writes call markup as text gives calls, never markup as text;
- the conversation's affinity key is a hash of its start (system prompt and first user
  message), the same on every turn, so the pool sends the whole conversation to one replica.

The tool router and grounding stay off: they need a local engine's scores and grammar.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from toolrpc.chat.model import Generation, GenerationOptions
from toolrpc.chat.offer import ToolOffer
from toolrpc.chat.toolcalls import (
    JSON_FALLBACK,
    InvalidToolCall,
    ParserEvent,
    TextDelta,
    ToolCallFormat,
    ToolCallParsed,
    ToolCallParser,
)
from toolrpc.engines.openai_stream import sampling_body, token_usage
from toolrpc.engines.upstream import UpstreamPool
from toolrpc.protocol import Message, Tool, ToolCall, Usage
from toolrpc.types import FinishReason, JSONObject


class UpstreamModel:
    """A `ChatModel` over an `UpstreamPool` (module docstring)."""

    def __init__(self, pool: UpstreamPool, call_format: ToolCallFormat = JSON_FALLBACK) -> None:
        self.pool = pool
        self.call_format = call_format

    async def generate(
        self, history: Sequence[Message], offer: ToolOffer, options: GenerationOptions
    ) -> AsyncGenerator[str | Generation, None]:
        """Generate once under `offer` on a replica (see `ChatModel.generate`). Raises what
        `UpstreamPool.stream` raises (`Overloaded`, `InvalidParams`)."""
        body = chat_body(self.pool.info.model_name, history, offer, options)
        answer = _Answer(offer, self.call_format)
        key = affinity_key(history)
        async with aclosing(self.pool.stream("/chat/completions", body, key)) as chunks:
            async for chunk in chunks:
                for text in answer.read(chunk):
                    yield text
        for text in answer.finish():
            yield text
        yield answer.generation()


class _Answer:
    """One streamed answer as it is read: its text, the calls the offer accepted, why it
    ended, its usage. Content goes through the tool-call parser (module docstring)."""

    def __init__(self, offer: ToolOffer, call_format: ToolCallFormat) -> None:
        shows_tools = bool(offer.tools)
        self.offer = offer
        self.parser = ToolCallParser(
            call_format, allow_bare_json=shows_tools, hold_whitespace=shows_tools
        )
        self.streamed = _StreamedCalls()
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.reason: FinishReason = "stop"
        self.usage = Usage()
        self.num_rejected = 0

    def read(self, chunk: dict[str, Any]) -> list[str]:
        """Read one chunk; the text deltas to pass on."""
        self.usage = _usage(chunk.get("usage")) or self.usage
        shown: list[str] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            for tool_call in delta.get("tool_calls") or []:
                self.streamed.add(tool_call)
            if choice.get("finish_reason") == "length":
                self.reason = "length"
            shown += self._take(self.parser.feed(str(delta.get("content") or "")))
        return shown

    def finish(self) -> list[str]:
        """The end of the stream: what the parser held back, and the streamed calls."""
        return self._take([*self.parser.finish(), *self.streamed.events()])

    def generation(self) -> Generation:
        """The whole answer."""
        return Generation(
            "".join(self.text), tuple(self.calls), self.reason, self.usage, self.num_rejected
        )

    def _take(self, events: Sequence[ParserEvent]) -> list[str]:
        """Keep the accepted calls; the text to pass on (none when the offer forces a call)."""
        shown: list[str] = []
        for event in events:
            if isinstance(event, TextDelta):
                if not self.offer.is_constrained:
                    self.text.append(event.text)
                    shown.append(event.text)
            elif self.calls and not self.offer.allows_parallel_calls:
                continue  # only the first call was asked for
            elif (call := self.offer.accept(event)) is not None:
                self.calls.append(call)
            else:
                self.num_rejected += 1
        return shown


def chat_body(
    model: str, history: Sequence[Message], offer: ToolOffer, options: GenerationOptions
) -> JSONObject:
    """The streamed `/chat/completions` request for one generation under `offer`."""
    body: JSONObject = {
        "model": model,
        "messages": [openai_message(message) for message in history],
        **sampling_body(options.sampling, options.max_new_tokens, options.stop),
    }
    shown = offer.constraint if offer.constraint is not None else offer.tools
    if shown:
        body["tools"] = [openai_tool(tool) for tool in shown]
        body["tool_choice"] = _tool_choice(offer)
    return body


def _tool_choice(offer: ToolOffer) -> JSONObject | str:
    if offer.constraint is None:
        return "auto"
    if len(offer.constraint) == 1:
        return {"type": "function", "function": {"name": offer.constraint[0].name}}
    return "required"


def openai_tool(tool: Tool) -> JSONObject:
    """`tool` in OpenAI's `tools` form."""
    function: JSONObject = {
        "name": tool.name,
        "description": tool.function.description,
        "parameters": tool.function.parameters,
    }
    return {"type": "function", "function": function}


def openai_message(message: Message) -> JSONObject:
    """One history message in OpenAI's form (a call's arguments as a JSON string)."""
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content or "",
        }
    if message.role == "assistant" and message.tool_calls:
        calls: list[Any] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
        # "" rather than null: llama-cpp-python's server refuses a null content.
        return {"role": "assistant", "content": message.content or "", "tool_calls": calls}
    return {"role": message.role, "content": message.content or ""}


def affinity_key(history: Sequence[Message]) -> str | None:
    """A hash of the conversation's start: every message up to its first user message. None
    for a history with no user message (nothing identifies the conversation)."""
    start: list[JSONObject] = []
    for message in history:
        start.append(openai_message(message))
        if message.role == "user":
            encoded = json.dumps(start, sort_keys=True).encode()
            return hashlib.sha256(encoded).hexdigest()[:32]
    return None


def _usage(usage: object) -> Usage | None:
    counted = token_usage(usage)
    if counted is None:
        return None
    return Usage(
        prompt_tokens=counted.prompt_tokens,
        completion_tokens=counted.completion_tokens,
        cached_tokens=counted.cached_tokens,
    )


class _StreamedCalls:
    """Streamed `delta.tool_calls` fragments, put together by `index`."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._arguments: dict[int, list[str]] = {}

    def add(self, fragment: dict[str, Any]) -> None:
        """Add one fragment: its `function.name` (OpenAI sends it once; a name equal to the one
        so far is a repeat, not a piece) and a piece of `function.arguments`."""
        index = fragment.get("index")
        if not isinstance(index, int):
            index = len(self._names)
        function = fragment.get("function") or {}
        name = str(function.get("name") or "")
        so_far = self._names.setdefault(index, "")
        if name != so_far:  # llama-cpp-python repeats the whole name in every fragment
            self._names[index] = so_far + name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send an object, not a string
            arguments = json.dumps(arguments)
        self._arguments.setdefault(index, []).append(str(arguments or ""))

    def events(self) -> list[ToolCallParsed | InvalidToolCall]:
        """Each call, parsed; a call whose arguments are not a JSON object is invalid."""
        events: list[ToolCallParsed | InvalidToolCall] = []
        for index, name in sorted(self._names.items()):
            raw = "".join(self._arguments[index]).strip() or "{}"
            try:
                arguments = json.loads(raw)
            except json.JSONDecodeError:
                events.append(InvalidToolCall(index, raw, "not_json"))
                continue
            if not name:
                events.append(InvalidToolCall(index, raw, "missing_name"))
                continue
            if not isinstance(arguments, dict):
                events.append(InvalidToolCall(index, raw, "arguments_not_object"))
                continue
            events.append(ToolCallParsed(index, name, arguments))
        return events
