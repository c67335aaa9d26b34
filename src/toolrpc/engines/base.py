"""The engine seam: what the chat layer asks of a model, and the values that cross it.

An `Engine` turns a prompt into an async stream of text chunks. It knows tokens, sampling and
grammars; it knows nothing of tools, conversations, JSON-RPC or HTTP. Cancelling the consumer
of `generate` (closing the iterator or cancelling its task) aborts the generation and frees
whatever the engine held for it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from toolrpc.generation import (
    Chunk,
    ContinuationScore,
    EngineStats,
    GenerationRequest,
    SamplingParams,
    TokenUsage,
)

__all__ = [
    "Chunk",
    "ContinuationScore",
    "Engine",
    "EngineInfo",
    "EngineStats",
    "GenerationRequest",
    "SamplingParams",
    "TokenUsage",
]


@dataclass(frozen=True)
class EngineInfo:
    """What the layers above need to know of the model."""

    model_name: str
    context_length: int
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""


class Engine(Protocol):
    """A model that generates text; see the module docstring for the cancellation contract."""

    @property
    def info(self) -> EngineInfo:
        """Model name, context length and chat template."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the continuation of `request.prompt`.

        Raises `ContextLengthExceeded` when the prompt does not fit, `Overloaded` when the
        engine's queue is full, and `GenerationCancelled` when the engine is shutting down or the
        request ran past its time limit.
        """
        ...

    async def score(self, prompt: str, continuation: str) -> ContinuationScore:
        """Log-probability of `continuation` right after `prompt`, teacher-forced.

        Used to let the model choose among options by its own probabilities. Raises like
        `generate`, and `InvalidParams` when the continuation is too long to score.
        """
        ...

    def stats(self) -> EngineStats:
        """Current counters (requests, tokens, cancellations) and queue gauges."""
        ...

    async def aclose(self) -> None:
        """Stop generating and release the model."""
        ...
