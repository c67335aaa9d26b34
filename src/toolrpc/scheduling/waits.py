"""How long requests waited for a KV slot: a histogram the batching loop fills and `/metrics`
exposes (through `EngineStats`, so the loop keeps no Prometheus state)."""

from __future__ import annotations

import math

from toolrpc.generation import QUEUE_WAIT_BOUNDS


class QueueWaits:
    """Cumulative counts of waits at most each of `QUEUE_WAIT_BOUNDS` (then all), and their sum."""

    def __init__(self) -> None:
        self._counts = [0] * (len(QUEUE_WAIT_BOUNDS) + 1)
        self.sum_s = 0.0

    @property
    def counts(self) -> tuple[int, ...]:
        """The buckets' counts, as `EngineStats.queue_wait_counts` holds them."""
        return tuple(self._counts)

    def record(self, wait_s: float) -> None:
        """Count one wait of `wait_s` seconds."""
        self.sum_s += wait_s
        for index, bound in enumerate((*QUEUE_WAIT_BOUNDS, math.inf)):
            if wait_s <= bound:
                self._counts[index] += 1
