"""The narrow seam between a chat step and a model: history and a tool offer in, text deltas
and a `Generation` out.

`Chat.step` (chat/conversation.py) owns the turn, the offer, grounding, the loop guard and the
result; it asks a `ChatModel` only for one generation under an offer. Two kinds of model sit
behind this seam:

- `PromptedModel`: a local `Engine` given a prompt that this layer renders with the model's
  chat template, constrained by the offer's JSON Schema, its text parsed with the model's
  tool-call format (chat/toolcalls);
- a model behind an OpenAI-compatible server (vLLM, SGLang, llama-server), which renders its
  own template and parses its own calls, so it is given messages and tools instead.

Whichever it is, every call it returns has passed `ToolOffer.accept`, so the same validation
holds for both.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from toolrpc.chat.offer import ToolOffer
from toolrpc.chat.prompt import render_prompt
from toolrpc.chat.template import ChatTemplate
from toolrpc.chat.toolcalls import JSON_FALLBACK, TextDelta, ToolCallFormat, ToolCallParser
from toolrpc.engines.base import Engine, GenerationRequest, SamplingParams
from toolrpc.protocol import Message, ToolCall, Usage
from toolrpc.types import FinishReason


@dataclass(frozen=True)
class GenerationOptions:
    """How long and how to sample one generation."""

    max_new_tokens: int = 512
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    """What one generation produced: its text, the calls the offer accepted, why it ended."""

    text: str
    calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage
    num_rejected: int = 0
    """Calls the model wrote that the offer did not accept (malformed, an unknown tool,
    arguments that do not validate)."""


class ChatModel(Protocol):
    """A model one chat step asks for a generation (module docstring)."""

    def generate(
        self, history: Sequence[Message], offer: ToolOffer, options: GenerationOptions
    ) -> AsyncGenerator[str | Generation, None]:
        """Yield each text delta as it comes (never call markup, none at all when the offer
        is constrained), then one `Generation`. Closing the iterator early aborts the
        generation. Raises what the engine raises (`ContextLengthExceeded`, `Overloaded`,
        `GenerationCancelled`) and `InvalidParams` when the template refuses the history."""
        ...


class PromptedModel:
    """A local Engine behind the seam: prompt rendered here, output parsed here."""

    def __init__(
        self, engine: Engine, template: ChatTemplate, call_format: ToolCallFormat = JSON_FALLBACK
    ) -> None:
        self.engine = engine
        self.template = template
        self.call_format = call_format

    async def generate(
        self, history: Sequence[Message], offer: ToolOffer, options: GenerationOptions
    ) -> AsyncGenerator[str | Generation, None]:
        """Generate once under `offer` (see `ChatModel.generate`). The prompt shows the offer's
        tools; a constrained output is a call or nothing (cut short), never text. Without
        `offer.allows_parallel_calls` only the first accepted call is kept."""
        request = GenerationRequest(
            prompt=render_prompt(self.template, history, offer.tools),
            max_new_tokens=options.max_new_tokens,
            sampling=options.sampling,
            stop=options.stop,
            json_schema=offer.json_schema(),
        )
        shows_tools = bool(offer.tools)
        parser = ToolCallParser(
            self.call_format, allow_bare_json=shows_tools, hold_whitespace=shows_tools
        )
        text: list[str] = []
        calls: list[ToolCall] = []
        num_rejected = 0
        reason: FinishReason = "stop"
        usage = Usage()
        async with aclosing(self.engine.generate(request)) as chunks:
            async for chunk in chunks:
                events = parser.feed(chunk.text)
                if chunk.finish_reason is not None:
                    events += parser.finish()
                    reason = chunk.finish_reason
                if chunk.usage is not None:
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                        cached_tokens=chunk.usage.cached_tokens,
                    )
                for event in events:
                    if isinstance(event, TextDelta):
                        if not offer.is_constrained:
                            text.append(event.text)
                            yield event.text
                    elif calls and not offer.allows_parallel_calls:
                        continue  # only the first call was asked for
                    elif (call := offer.accept(event)) is not None:
                        calls.append(call)
                    else:
                        num_rejected += 1
        yield Generation("".join(text), tuple(calls), reason, usage, num_rejected)
