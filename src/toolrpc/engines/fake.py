"""A deterministic scripted Engine, for tests and `--engine fake` demos.

`FakeEngine` answers each request with the next reply of its script (or a reply computed from
the request), streamed in small pieces. It honours `stop`, `max_new_tokens` (one "token" per
piece), a JSON Schema once its script is exhausted (the simplest valid value) and a context
length, counts prompt "tokens" as whitespace-separated words, records every
request it saw (so tests can check prompts and constraints), and can be told to wait between
pieces so cancellation can be tested. Closing the stream early is recorded in `num_cancelled`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncGenerator, Callable, Iterable

from toolrpc.engines.base import (
    Chunk,
    ContinuationScore,
    EngineInfo,
    EngineStats,
    GenerationRequest,
    TokenUsage,
)
from toolrpc.errors import ContextLengthExceeded, GenerationCancelled
from toolrpc.types import EngineFinishReason

Reply = str | Callable[[GenerationRequest], str]
Scorer = Callable[[str, str], float]
"""(prompt, continuation) -> mean log-probability per word."""

FAKE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def word_overlap_score(prompt: str, continuation: str) -> float:
    """A stand-in for a model's judgement: the share of the continuation's words that the prompt
    contains, as a log-probability (1e-3 when none do)."""
    words = re.findall(r"[a-z0-9]+", continuation.lower())
    known = set(re.findall(r"[a-z0-9]+", prompt.lower()))
    share = sum(word in known for word in words) / max(1, len(words))
    return math.log(max(share, 1e-3))


def default_reply(request: GenerationRequest) -> str:
    """The reply when the script is exhausted: says what it is, so demos are self-explanatory;
    under a `json_schema`, the simplest value the schema accepts, as a grammar would force."""
    if request.json_schema is not None:
        value = simplest_instance(request.json_schema)
        if value is not _UNSUPPORTED:
            return json.dumps(value)
    return "This is toolrpc's fake engine: it has no model, so this answer is scripted."


_UNSUPPORTED = object()


def simplest_instance(schema: object) -> object:
    """The simplest JSON value valid against `schema` (`const`, first `enum` value or first
    `anyOf`/`oneOf` branch, an object of its required properties, the lower bound of a number,
    the shortest string); `_UNSUPPORTED` for what this does not know (`$ref`, `pattern`...)."""
    if not isinstance(schema, dict):
        return _UNSUPPORTED
    if not schema:  # accepts anything
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return simplest_instance(schema[key][0])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties", {})
        value = {
            name: simplest_instance(properties.get(name, {})) for name in schema.get("required", [])
        }
        return _UNSUPPORTED if _UNSUPPORTED in value.values() else value
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return math.ceil(low) if kind == "integer" else low
    if kind == "string" and "pattern" not in schema and "format" not in schema:
        return "x" * int(schema.get("minLength", 0))
    simple: dict[str, object] = {"boolean": False, "null": None, "array": []}
    if kind in simple and not schema.get("minItems"):
        return simple[kind]
    return _UNSUPPORTED


class FakeEngine:
    """A scripted Engine (see the module docstring)."""

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        context_length: int = 4096,
        piece_delay_s: float = 0.0,
        fallback: Reply = default_reply,
        scorer: Scorer = word_overlap_score,
    ) -> None:
        self.script = list(script)
        self.context_length = context_length
        self.piece_delay_s = piece_delay_s
        self.fallback = fallback
        self.scorer = scorer
        self.scored: list[tuple[str, str]] = []
        self.requests: list[GenerationRequest] = []
        self.num_cancelled = 0
        self.num_running = 0
        self.num_prompt_tokens = 0
        self.num_generated_tokens = 0
        self.is_closed = False

    @property
    def info(self) -> EngineInfo:
        """A ChatML template and the configured context length."""
        return EngineInfo(
            model_name="fake",
            context_length=self.context_length,
            chat_template=FAKE_CHAT_TEMPLATE,
            eos_token="<|im_end|>",
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the next scripted reply. Raises `ContextLengthExceeded` like a real engine."""
        if self.is_closed:
            raise GenerationCancelled("the engine is shutting down")
        prompt_tokens = len(request.prompt.split())
        if prompt_tokens >= self.context_length:
            raise ContextLengthExceeded(prompt_tokens, self.context_length)
        self.requests.append(request)
        reply = self.script.pop(0) if self.script else self.fallback
        text = reply(request) if callable(reply) else reply
        pieces = re.findall(r"\s*\S+|\s+", _before_stop(text, request.stop))
        # "stop": the reply ended or a stop string cut it; "length": max_new_tokens cut it.
        reason: EngineFinishReason = "length" if len(pieces) > request.max_new_tokens else "stop"
        pieces = pieces[: request.max_new_tokens]
        finished = False
        self.num_running += 1
        self.num_prompt_tokens += prompt_tokens
        try:
            for piece in pieces:
                if self.piece_delay_s:
                    await asyncio.sleep(self.piece_delay_s)
                self.num_generated_tokens += 1
                yield Chunk(piece)
            finished = True
            yield Chunk("", reason, TokenUsage(prompt_tokens, len(pieces)))
        finally:
            self.num_running -= 1
            if not finished:
                self.num_cancelled += 1

    async def score(self, prompt: str, continuation: str) -> ContinuationScore:
        """The scorer's judgement, one "token" per word; recorded in `scored`."""
        if self.is_closed:
            raise GenerationCancelled("the engine is shutting down")
        self.scored.append((prompt, continuation))
        num_words = max(1, len(continuation.split()))
        return ContinuationScore(self.scorer(prompt, continuation) * num_words, num_words)

    def stats(self) -> EngineStats:
        """What the fake engine has done so far."""
        return EngineStats(
            num_running=self.num_running,
            num_requests=len(self.requests),
            num_cancelled=self.num_cancelled,
            num_prompt_tokens=self.num_prompt_tokens,
            num_generated_tokens=self.num_generated_tokens,
        )

    async def aclose(self) -> None:
        """Refuse further requests."""
        self.is_closed = True


def _before_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text up to the earliest stop string (all of it when none occurs)."""
    return text[: min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))]
