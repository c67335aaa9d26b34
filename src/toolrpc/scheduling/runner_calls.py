"""The calls the batching loop makes on the runner's own thread (scheduling/loop.py): they block,
so they never run on the event loop, and one worker thread runs them one at a time."""

from __future__ import annotations

import threading

from toolrpc.generation import ContinuationScore
from toolrpc.scheduling.runner import ModelRunner, RunnerChunk, TokenSampler
from toolrpc.scheduling.slots import KvTrim


def release(runner: ModelRunner, samplers: list[TokenSampler], trims: list[KvTrim]) -> None:
    """Close retired requests' samplers and apply pending KV trims."""
    for sampler in samplers:
        sampler.close()
    trim(runner, trims)


def trim(runner: ModelRunner, trims: list[KvTrim]) -> None:
    """Apply KV trims in order (each keeps a slot's first `keep` positions, or its source's)."""
    for kv_trim in trims:
        if kv_trim.source is None:
            runner.trim_slot(kv_trim.slot, kv_trim.keep)
        else:
            runner.copy_slot(kv_trim.source, kv_trim.slot, kv_trim.keep)


def trim_and_step(
    runner: ModelRunner,
    trims: list[KvTrim],
    chunks: list[RunnerChunk],
    num_steps: int,
    interrupt: threading.Event,
) -> list[list[int | ContinuationScore | None]]:
    """Apply the trims, run the step, and up to `num_steps - 1` more decode steps that feed
    each chunk's sampled token back, stopping at an end of generation or when `interrupt` is
    set (a request arrived or ended: the loop must schedule again)."""
    trim(runner, trims)
    steps = [runner.step(chunks)]
    while len(steps) < num_steps and not interrupt.is_set():
        tokens = steps[-1]
        fed: list[int] = [t for t in tokens if isinstance(t, int)]
        if len(fed) != len(chunks) or any(runner.is_end_of_generation(t) for t in fed):
            break
        chunks = [
            RunnerChunk(c.slot, c.start + len(c.token_ids), (t,), c.sampler)
            for c, t in zip(chunks, fed, strict=True)
        ]
        steps.append(runner.step(chunks))
    return steps
