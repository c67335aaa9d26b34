"""Values of one generation, shared by the engines and the scheduler below them.

Frozen dataclasses only: a request to continue a prompt, how to sample, and the chunks of text
that come back. Nothing here knows tools, conversations or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolrpc.types import EngineFinishReason, JSONObject

DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
"""Sampling when a request leaves a parameter unset: llama.cpp's own defaults (its `common`
sampling parameters and `llama-server`), used by every engine so that one request samples alike
on each."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; None means the default (`resolved_*`, the only place the
    defaults are read)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None

    @property
    def is_greedy(self) -> bool:
        """True when sampling is deterministic argmax (temperature 0)."""
        return self.temperature is not None and self.temperature <= 0.0

    @property
    def resolved_temperature(self) -> float:
        """The temperature to sample with (`DEFAULT_TEMPERATURE` when unset)."""
        return DEFAULT_TEMPERATURE if self.temperature is None else self.temperature

    @property
    def resolved_top_k(self) -> int:
        """The top-k cut to sample with, 0 meaning none (`DEFAULT_TOP_K` when unset)."""
        return DEFAULT_TOP_K if self.top_k is None else self.top_k

    @property
    def resolved_top_p(self) -> float:
        """The nucleus (top-p) mass to sample from (`DEFAULT_TOP_P` when unset)."""
        return DEFAULT_TOP_P if self.top_p is None else self.top_p


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: a rendered prompt and how to continue it.

    `json_schema`, when set, constrains the whole output to a JSON value valid against it (a
    grammar inside the engine); `stop` strings end generation and are not part of the output.
    """

    prompt: str
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    json_schema: JSONObject | None = None


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one generation."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class Chunk:
    """A piece of generated text. The last chunk has `finish_reason` and `usage` set."""

    text: str
    finish_reason: EngineFinishReason | None = None
    usage: TokenUsage | None = None


@dataclass(frozen=True)
class EngineStats:
    """Counters and gauges of an engine, read by `/metrics`."""

    num_running: int = 0
    num_waiting: int = 0
    num_requests: int = 0
    num_cancelled: int = 0
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    num_cached_tokens: int = 0
    num_steps: int = 0
    num_slots: int = 0
    """KV slots (sequences the cache holds at once); 0 for an engine without slots."""
    num_slots_in_use: int = 0
    """Slots a request's sequence runs in now."""
    num_kv_tokens: int = 0
    """Tokens whose keys and values the cache holds: running sequences and kept prefixes."""
    queue_wait_counts: tuple[int, ...] = ()
    """How many admitted sequences waited at most each of `QUEUE_WAIT_BOUNDS` seconds for a
    slot (cumulative, as a histogram's buckets); the last entry counts them all."""
    queue_wait_sum_s: float = 0.0
    """Their waits added up, in seconds."""


QUEUE_WAIT_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the queue-wait histogram's buckets; a last one is +Inf."""


@dataclass(frozen=True)
class ContinuationScore:
    """How likely the model finds a continuation after a prompt (teacher-forced)."""

    logprob: float
    """Sum of the log-probabilities of the continuation's tokens."""
    num_tokens: int

    @property
    def mean_logprob(self) -> float:
        """Log-probability per token (comparable across continuations of other lengths)."""
        return self.logprob / max(1, self.num_tokens)
