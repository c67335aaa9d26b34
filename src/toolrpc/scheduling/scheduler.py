"""The continuous-batching policy: sequences in, one batch of token chunks out per step.

Pure and synchronous: no model, no asyncio, no clock. Each step

1. gives every running sequence that is decoding its one pending token (decodes first, so a
   stream never waits behind someone else's prompt);
2. spends what is left of the token budget on prompt chunks, running sequences first, then
   newly admitted ones in arrival order (first come, first served) while a slot is free.

A long prompt is therefore prefilled over several steps, and running streams keep producing a
token every step meanwhile. Finishing or aborting a sequence frees its slot at once; the driver
collects freed slots with `take_freed_slots` to drop their KV cache.
"""

from __future__ import annotations

from collections import deque

from toolrpc.scheduling.sequence import ScheduledChunk, Sequence, SequenceStatus


class Scheduler:
    """Waiting and running queues over a fixed number of slots (sequences the runner can hold)."""

    def __init__(self, *, num_slots: int, token_budget: int, max_waiting: int) -> None:
        if num_slots < 1 or token_budget < num_slots or max_waiting < 0:
            raise ValueError("need num_slots >= 1, token_budget >= num_slots, max_waiting >= 0")
        self.token_budget = token_budget
        self.max_waiting = max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots: list[int] = list(range(num_slots - 1, -1, -1))
        self._freed: list[int] = []

    @property
    def num_slots_free(self) -> int:
        """Slots no running sequence holds."""
        return len(self._free_slots)

    @property
    def has_work(self) -> bool:
        """True when a step would run something."""
        return bool(self.running) or (bool(self.waiting) and bool(self._free_slots))

    @property
    def can_accept(self) -> bool:
        """True when a new sequence would not overflow the waiting queue."""
        return len(self.waiting) < self.max_waiting + len(self._free_slots)

    def add(self, seq: Sequence) -> None:
        """Queue a sequence. Raises `OverflowError` when `can_accept` is false."""
        if not self.can_accept:
            raise OverflowError("waiting queue is full")
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> list[ScheduledChunk]:
        """Choose the chunks of this step (see the module docstring)."""
        budget = self.token_budget
        chunks: list[ScheduledChunk] = []
        for seq in self.running:
            if not seq.is_prefill and budget > 0:
                chunks.append(self._chunk(seq, 1))
                budget -= 1
        for seq in self.running:
            if seq.is_prefill and budget > 0:
                chunk = self._chunk(seq, budget)
                chunks.append(chunk)
                budget -= len(chunk.token_ids)
        while budget > 0 and self.waiting and self._free_slots:
            seq = self.waiting.popleft()
            seq.slot = self._free_slots.pop()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            chunk = self._chunk(seq, budget)
            chunks.append(chunk)
            budget -= len(chunk.token_ids)
        return chunks

    def on_step_done(self, chunks: list[ScheduledChunk]) -> None:
        """Record that the runner computed `chunks` (their tokens are now in the KV cache)."""
        for chunk in chunks:
            chunk.seq.num_computed = chunk.start + len(chunk.token_ids)

    def finish(self, seq: Sequence) -> None:
        """End a sequence (done, stopped or aborted) and free its slot; safe to call twice."""
        if seq.status is SequenceStatus.FINISHED:
            return
        if seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
            assert seq.slot is not None
            self._free_slots.append(seq.slot)
            self._freed.append(seq.slot)
        seq.status = SequenceStatus.FINISHED

    def take_freed_slots(self) -> list[int]:
        """Slots freed since the last call, whose KV cache the runner should drop."""
        freed, self._freed = self._freed, []
        return freed

    @staticmethod
    def _chunk(seq: Sequence, max_tokens: int) -> ScheduledChunk:
        start = seq.num_computed
        end = min(seq.num_tokens, start + max_tokens)
        return ScheduledChunk(seq=seq, start=start, token_ids=tuple(seq.token_ids[start:end]))
