"""The Engine of every local backend: a ModelRunner driven by the scheduler's batching loop."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from toolrpc.engines.base import Chunk, ContinuationScore, EngineInfo, EngineStats
from toolrpc.generation import GenerationRequest
from toolrpc.scheduling.loop import BatchLoop, LoopConfig
from toolrpc.scheduling.runner import ModelRunner


class DescribedRunner(ModelRunner, Protocol):
    """A ModelRunner that can also describe its model."""

    def info(self) -> EngineInfo:
        """Model name, context length and chat template."""
        ...


class BatchedEngine:
    """An Engine over a runner: batching, prefix reuse, cancellation and back-pressure come
    from `toolrpc.scheduling`, so each backend only writes its runner."""

    def __init__(self, runner: DescribedRunner, loop_config: LoopConfig | None = None) -> None:
        self._info = runner.info()
        self._loop = BatchLoop(runner, loop_config)

    @property
    def info(self) -> EngineInfo:
        """Model name, context length and chat template."""
        return self._info

    @property
    def loop(self) -> BatchLoop:
        """The batching loop (its scheduler and step count are useful to tests)."""
        return self._loop

    def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the continuation of the prompt (see `Engine.generate`)."""
        return self._loop.generate(request)

    async def score(self, prompt: str, continuation: str) -> ContinuationScore:
        """How likely the model finds `continuation` after `prompt` (see `Engine.score`)."""
        return await self._loop.score(prompt, continuation)

    def stats(self) -> EngineStats:
        """The batching loop's counters and gauges."""
        return self._loop.stats()

    async def aclose(self) -> None:
        """Stop the loop and free the model."""
        await self._loop.aclose()
