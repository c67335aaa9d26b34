"""The continuous-batching policy: sequences in, one batch of token chunks out per step.

Pure and synchronous: no model, no asyncio, no clock. Each step

1. gives every running sequence that is decoding its one pending token (decodes first, so a
   stream never waits behind someone else's prompt);
2. gives every waiting sequence a free slot (so a sequence waits only for want of a slot, as
   the waiting gauge says), and spends what is left of the token budget on prompt chunks in
   arrival order (first come, first served): a sequence admitted with no budget left gets its
   chunks in the next steps, and until its prompt is computed no multi-step call runs. While
   any sequence is decoding, prompt chunks get only as many tokens as keep the step within the
   inter-token target (`max_token_gap_s`, `--max-token-gap-ms`), by the step cost the caller
   gives (`StepCost`, estimated by the loop from the steps that ran; the scheduler times
   nothing): a running stream's next token is then never held longer than the target by
   someone else's prompt, and a burst of short prompts is admitted in as few steps as that
   allows. Before this, a fixed 32 tokens per step (`prefill_budget_while_decoding`, now an
   optional cap, `--prefill-chunk`) kept a 2,000-token prompt arriving mid-stream from holding
   a stream over 0.25 s (64-token chunks: 0.40 s, 48: 0.27 s; two cores), but fed a burst of
   eight ~40-token prompts 32 tokens a step behind the first arrival's decodes: they got their
   first tokens at p95 1.9-2.0 s, where one after the other they took 8 x 0.16 s = 1.25 s.
   When the decodes alone take the target or more (many streams, or a machine busy with other
   work: llama.cpp's threads spin at barriers, and steps measured at load 10 took seconds), a
   prompt still gets `PREFILL_FLOOR` tokens a step, so admission goes on instead of crawling
   at a few tokens a step.
   The target yields when more requests in their slots await their first token than streams
   await their next (a burst beside a stream or two) and their prompts all fit in this step:
   the step prefills them at once, delaying the few running streams' next token once (by one
   step of at most the token budget) so that the many get their first (benchmarks/README.md,
   issue 17). Long prompts that need more than one step, a long prompt beside one stream, or
   the router's scoring prompts (they await no token a person reads) never lift it.
   The server's default target is 200 ms: a stream's largest gap is a step plus the hand-offs
   (runner thread, event loop, HTTP write), and steps the cost model puts at ~0.2 s (32-token
   chunks late in a 2,000-token prompt) gave largest gaps of 0.21-0.25 s. By the prior costs
   (`cost.DEFAULT_STEP_COST`) a 200 ms step beside one stream holds 47 prompt tokens, about
   40 late in a long prompt (4.7 ms a token), within the 32-48 measured to stay under 0.3 s;
   a burst of eight ~40-token prompts then goes in in about 7 steps whose decodes cost ~5 ms
   a row, instead of ~12 steps of 32 tokens. Latency figures taken under other load are not
   comparable (llama.cpp's threads spin at barriers): rerun `benchmarks/serving.py` quiet.

A long prompt is therefore prefilled over several steps, and running streams keep producing a
token every step meanwhile.

A step's plan (`StepPlan`) also says how many runner steps one call may take: when a few
sequences only decode and no request waits or arrives, the runner decodes several tokens in a
row, feeding each sampled token back itself (`MULTI_STEP_TOKENS`). `postprocess` takes each
step's sampled tokens back, appends them and ends a sequence at end of generation or at its
`max_new_tokens`, as nano-vllm's scheduler does; what needs text (stop strings, UTF-8) stays
in the loop, which ends a sequence with `finish` when a stop string appears.

Prefix reuse (scheduling/slots.py): a slot whose sequence finished keeps the KV of its prompt,
and a new sequence goes to the idle slot that shares the longest prefix with its prompt, or
copies a longer one from a busy slot; only the rest is prefilled. The KV budget is thus the
runner's slots (each `context_length` tokens). Every admission asks the runner to trim the
slot's KV to the reused prefix (`take_kv_trims`), which also drops anything a cancelled
sequence's last step left behind.

Scoring slots: a runner may hold slots for scoring prompts only (`num_scoring_slots`, numbered
after the conversations'; llama.cpp's second, small context). A scoring sequence whose prompt
fits one (`scoring_context_length`) goes there, any other sequence to the conversations'
slots; prefix reuse is the same in both pools, so the tool router's option prefixes stay cached
across requests without taking a conversation's slot (chat/router.py, "Cost"). Each pool
admits from the one waiting queue in arrival order, and a sequence never waits for want of a
slot in the other pool; the queue bound counts every waiting sequence, the free slots of the
sequence's own pool (`num_places`).

Reuse is limited so that a warm request answers exactly as a cold one (greedy decoding is then
deterministic whatever the cache holds). Measured with llama.cpp on the embedded model: KV
computed one token at a time (decode) is not bit-identical to KV computed in a prompt chunk,
and a one-token final chunk gives different logits than a longer one, each enough to change a
greedy answer after a few dozen tokens. So by default only prompt tokens are kept (the previous
answer is prefilled again in the follow-up, a small part of a long conversation), and at least
`MIN_FINAL_CHUNK` prompt tokens are always computed, the last chunk never shorter. With
`reuse_generated` (`--reuse-generated-kv`) the generated tokens' KV is kept too, as llama.cpp's
own server does: a follow-up then prefills only its new message, and its answer may differ from
a cold run's.

Exact reuse of answers in idle time: a finished sequence leaves its answer *pending* in its slot.
When nothing runs and nothing waits, the scheduler prefills a pending answer again as a prompt
chunk (a background sequence, the most recently finished slot first, chunks of at most
`BACKGROUND_CHUNK` tokens), after which the slot holds the whole turn computed as
a cold run computes it. A client that takes a moment before its next turn (a person reading, a
tool running) then gets the answer reused too, warm still equal to cold. Any new request stops
the background work at once (it waits for one chunk at most); the part computed is kept.
"""

from __future__ import annotations

import itertools
from collections import deque

from toolrpc.scheduling.cost import StepCost
from toolrpc.scheduling.sequence import (
    MIN_FINAL_CHUNK,
    MIN_PREFILL_CHUNK,
    SampledToken,
    ScheduledChunk,
    Sequence,
    SequenceStatus,
    StepPlan,
    TokenOutput,
)
from toolrpc.scheduling.slots import KvTrim, Slot, num_free, place, reusable

PREFILL_FLOOR = 16
"""Prompt tokens a step beside decodes gets even when the gap target leaves fewer (module
docstring). It was 32, the fixed budget before the target (0.21-0.25 s largest gaps then); with
flash attention a 32-token chunk late in a 2,000-token prompt takes ~0.31 s by itself, so the
floor kept the stream beside it at a 0.38 s gap whatever the target said."""

BACKGROUND_CHUNK = 16
"""Largest chunk of a background prefill (module docstring)."""

MULTI_STEP_TOKENS = 4
"""Decode tokens one plan may ask of a runner call in all (one sequence: 4 steps; two: 2 each;
more: one). Between two steps the result travels runner thread -> event loop -> runner thread;
for a single stream on two cores that hand-off was ~12% of the time (py-spy: the runner thread
inside `llama_decode` 88% of a stream). A request that arrives or ends meanwhile interrupts the
call after its current step (the loop's business: the plan is only an upper bound)."""


class Scheduler:
    """Waiting and running queues over a fixed number of slots (sequences the runner can hold)."""

    def __init__(
        self,
        *,
        num_slots: int,
        token_budget: int,
        max_waiting: int,
        prefill_budget_while_decoding: int | None = None,
        max_token_gap_s: float | None = None,
        reuse_generated: bool = False,
        num_scoring_slots: int = 0,
        scoring_context_length: int = 0,
    ) -> None:
        # Decodes of the other slots leave a prefilling sequence at least MIN_FINAL_CHUNK + 1
        # tokens, enough to always make progress under the chunk rules.
        if num_slots < 1 or token_budget < num_slots + MIN_FINAL_CHUNK or max_waiting < 0:
            raise ValueError("need num_slots >= 1, token_budget >= num_slots + 2, max_waiting >= 0")
        cap = prefill_budget_while_decoding
        if cap is not None and cap < MIN_PREFILL_CHUNK:
            raise ValueError(f"prefill_budget_while_decoding must be at least {MIN_PREFILL_CHUNK}")
        if max_token_gap_s is not None and max_token_gap_s <= 0:
            raise ValueError("max_token_gap_s must be positive")
        if num_scoring_slots < 0 or (num_scoring_slots and scoring_context_length < 1):
            raise ValueError("need num_scoring_slots >= 0, each of at least one token")
        self.token_budget = token_budget
        self.prefill_budget_while_decoding = prefill_budget_while_decoding
        self.max_token_gap_s = max_token_gap_s
        self.reuse_generated = reuse_generated
        self.max_waiting = max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.slots = [Slot(index) for index in range(num_slots)]
        self.scoring_slots = [Slot(num_slots + index) for index in range(num_scoring_slots)]
        """Slots for scoring sequences only, numbered after `slots` (module docstring)."""
        self.scoring_context_length = scoring_context_length
        self._slot_at = self.slots + self.scoring_slots
        self._trims: list[KvTrim] = []
        self._clock = itertools.count()

    @property
    def num_slots_free(self) -> int:
        """Slots no request's running sequence holds (background prefill yields its slot); the
        scoring slots not counted."""
        return num_free(self.slots)

    def num_places(self, scoring_tokens: int | None = None) -> int:
        """Sequences of one kind that can be added now: the free slots of their pool plus room
        in the queue; the kind is a conversation, or with `scoring_tokens` a scoring prompt of
        that many tokens."""
        pool = self.slots
        if scoring_tokens is not None and self._fits_scoring(scoring_tokens):
            pool = self.scoring_slots
        return self.max_waiting + num_free(pool) - len(self.waiting)

    def accepts(self, seq: Sequence) -> bool:
        """True when adding `seq` would not overflow the waiting queue."""
        return self.num_places(len(seq.prompt_ids) if seq.is_scoring else None) > 0

    @property
    def has_work(self) -> bool:
        """True when a step would run something (background prefill of answers included)."""
        if self.running:
            return True
        if self.waiting:
            return self._can_admit()
        return any(slot.pending for slot in self.slots)

    @property
    def has_request_work(self) -> bool:
        """True when a step would run something for a request (not only background prefill)."""
        if any(not seq.is_background for seq in self.running):
            return True
        return self._can_admit()

    @property
    def can_accept(self) -> bool:
        """True when a new conversation's sequence would not overflow the waiting queue."""
        return self.num_places() > 0

    def _fits_scoring(self, num_tokens: int) -> bool:
        return bool(self.scoring_slots) and num_tokens <= self.scoring_context_length

    def _pool(self, seq: Sequence) -> list[Slot]:
        """The slots `seq` may run in: a scoring slot for a scoring sequence that fits one."""
        fits = seq.is_scoring and self._fits_scoring(len(seq.prompt_ids))
        return self.scoring_slots if fits else self.slots

    def _can_admit(self) -> bool:
        """True when some waiting sequence has a free slot."""
        return any(num_free(self._pool(seq)) > 0 for seq in self.waiting)

    def add(self, seq: Sequence) -> None:
        """Queue a sequence. Raises `OverflowError` when `accepts(seq)` is false."""
        if not self.accepts(seq):
            raise OverflowError("waiting queue is full")
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self, *, num_arriving: int = 0, step_cost: StepCost | None = None) -> StepPlan:
        """Plan the next runner call (see the module docstring); no chunks when nothing runs.

        `num_arriving` counts requests on their way in (not yet added): while one is, the plan
        takes a single step, so the request joins the batch without waiting for a long call.
        `step_cost` is what a step costs now; without it (or without `max_token_gap_s`) prompt
        chunks beside decodes are limited by the token budget and the cap only.
        """
        chunks = self._schedule_chunks(step_cost)
        return StepPlan(tuple(chunks), self._num_steps(chunks, num_arriving))

    def _num_steps(self, chunks: list[ScheduledChunk], num_arriving: int) -> int:
        """Several steps when a few sequences only decode and no request waits or arrives
        (`MULTI_STEP_TOKENS` in all, never past a sequence's `max_new_tokens`), else one."""
        if not chunks or self.waiting or num_arriving:
            return 1
        if any(seq.is_prefill for seq in self.running):  # admitted, its prompt not yet computed
            return 1
        if not all(chunk.needs_sample and len(chunk.token_ids) == 1 for chunk in chunks):
            return 1
        room = min(chunk.seq.max_new_tokens - chunk.seq.num_output for chunk in chunks)
        return max(1, min(MULTI_STEP_TOKENS // len(chunks), room))

    def prefill_budget(
        self, num_decode_rows: int, step_cost: StepCost | None, num_awaiting_first: int = 0
    ) -> int:
        """Prompt tokens a step beside `num_decode_rows` decodes may hold, before the step's
        token budget: the cap, and what keeps the step within `max_token_gap_s` by `step_cost`
        (at least `PREFILL_FLOOR`) unless more requests await their first token
        (`num_awaiting_first`) than streams await their next (module docstring); unlimited (the
        token budget) when nothing decodes."""
        if num_decode_rows == 0:
            return self.token_budget
        budget = self.token_budget
        if self.prefill_budget_while_decoding is not None:
            budget = min(budget, self.prefill_budget_while_decoding)
        if num_awaiting_first > num_decode_rows:
            return budget
        if self.max_token_gap_s is not None and step_cost is not None:
            within = step_cost.prompt_tokens_within(self.max_token_gap_s, num_decode_rows)
            budget = min(budget, max(PREFILL_FLOOR, within))
        return budget

    def _schedule_chunks(self, step_cost: StepCost | None) -> list[ScheduledChunk]:
        """The chunks of one step: decodes first, then prompt chunks (module docstring)."""
        if any(self._pool(seq) is self.slots for seq in self.waiting):
            for background in [seq for seq in self.running if seq.is_background]:
                self.finish(background)
        elif not self.running and not self.waiting:
            self._start_background()
        budget = self.token_budget
        chunks: list[ScheduledChunk] = []
        for seq in self.running:
            if not seq.is_prefill and budget > 0:
                chunks.append(self._chunk(seq, 1))
                budget -= 1
        copy_cost = self._admit_waiting()
        prefill = min(budget, self.prefill_budget(len(chunks), step_cost, self._burst(budget)))
        if chunks:  # beside running streams a copy's time comes out of the prompt tokens
            prefill = max(0, prefill - copy_cost)
        for seq in self.running:
            if seq.is_prefill and prefill >= min(MIN_FINAL_CHUNK, self._left(seq)):
                allowed = min(prefill, self._background_chunk) if seq.is_background else prefill
                used = self._add_chunk(chunks, self._prefill_chunk(seq, allowed, budget))
                prefill, budget = prefill - used, budget - used
        return chunks

    def _admit_waiting(self) -> int:
        """Admit waiting sequences in arrival order, each where its pool has a free slot (a
        scoring sequence never waits behind a conversation for want of the other's slot);
        returns the time of the prefix copies this asks for, in prompt tokens."""
        waiting: deque[Sequence] = deque()
        copy_cost = 0
        while self.waiting:
            seq = self.waiting.popleft()
            if num_free(self._pool(seq)) > 0:
                copy_cost += self._admit(seq)
            else:
                waiting.append(seq)
        self.waiting = waiting
        return copy_cost

    def _burst(self, budget: int) -> int:
        """Requests in their slots awaiting their first token, when all their prompts fit in
        `budget` (else 0: prompts that need more steps never lift the gap target)."""
        awaiting = [
            seq
            for seq in self.running
            if seq.is_prefill and not seq.is_scoring and not seq.is_background
        ]
        return len(awaiting) if sum(self._left(seq) for seq in awaiting) <= budget else 0

    @staticmethod
    def _left(seq: Sequence) -> int:
        """Prompt tokens of `seq` still to compute."""
        return len(seq.prompt_ids) - seq.num_computed

    def _prefill_chunk(self, seq: Sequence, prefill: int, budget: int) -> ScheduledChunk:
        """A prompt chunk within `prefill` tokens, stretched (within what is left of the
        step's `budget`) to the sequence's `min_final_chunk` so that a scored tail is never
        starved."""
        return self._chunk(seq, min(budget, max(prefill, seq.min_final_chunk)))

    @staticmethod
    def _add_chunk(chunks: list[ScheduledChunk], chunk: ScheduledChunk) -> int:
        """Append a non-empty chunk; return the budget it uses."""
        if chunk.token_ids:
            chunks.append(chunk)
        return len(chunk.token_ids)

    def postprocess(
        self, plan: StepPlan, step: int, sampled: list[SampledToken | None]
    ) -> list[TokenOutput]:
        """Take back step number `step` (0-based) of `plan`: `sampled` holds, per plan chunk,
        the runner's token for it (None where it sampled none).

        Records the step's chunks as computed, appends each sampled token to its sequence and
        ends a sequence at end of generation, at `max_new_tokens`, or once its tail is scored;
        a background sequence ends when its prefill is done. Sequences that ended earlier
        (finished between the runner's steps) are skipped. Returns one `TokenOutput` per request
        sequence that asked for a token, in plan order.
        """
        live = [
            (self._chunk_at(chunk, step), token)
            for chunk, token in zip(plan.chunks, sampled, strict=True)
            if chunk.seq.status is SequenceStatus.RUNNING
        ]
        outputs: list[TokenOutput] = []
        for chunk, token in live:
            wanted_sample = chunk.needs_sample  # read before the sequence grows
            seq = chunk.seq
            seq.num_computed = chunk.start + len(chunk.token_ids)
            if seq.is_background and not seq.is_prefill:
                self.finish(seq)
            elif seq.is_scoring and wanted_sample:
                self.finish(seq)
                outputs.append(TokenOutput(seq, None, "stop"))
            elif token is not None:
                outputs.append(self._append(seq, token))
        return outputs

    def _append(self, seq: Sequence, token: SampledToken) -> TokenOutput:
        """Add a sampled token to `seq`, ending it at end of generation or `max_new_tokens`."""
        if token.is_end_of_generation:
            self.finish(seq)
            return TokenOutput(seq, None, "stop")
        seq.output_ids.append(token.token_id)
        if seq.num_output >= seq.max_new_tokens:
            self.finish(seq)
            return TokenOutput(seq, token.token_id, "length")
        return TokenOutput(seq, token.token_id)

    @staticmethod
    def _chunk_at(chunk: ScheduledChunk, step: int) -> ScheduledChunk:
        """The chunk of `chunk.seq` the runner computed in step `step` of a plan: the planned
        one, or in a further decode step the token sampled in the step before."""
        if step == 0:
            return chunk
        seq = chunk.seq
        return ScheduledChunk(seq, seq.num_computed, (seq.token_ids[seq.num_computed],))

    def finish(self, seq: Sequence, *, keep_cache: bool = True) -> None:
        """End a sequence (done, stopped or aborted) and free its slot; safe to call twice.

        With `keep_cache` the slot keeps the KV of the sequence's computed tokens for reuse;
        without it (the KV may be broken, e.g. a failed step) the slot is emptied.
        """
        if seq.status is SequenceStatus.FINISHED:
            return
        if seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
            assert seq.slot is not None
            slot = self._slot_at[seq.slot]
            slot.seq = None
            slot.last_used = next(self._clock)
            kept = reusable(seq, reuse_generated=self.reuse_generated)
            slot.cached = kept if keep_cache else []
            slot.pending = []
            if keep_cache and (seq.is_background or not seq.is_prefill):  # a whole turn's answer
                pending = seq.token_ids[len(slot.cached) :]
                slot.pending = pending if len(pending) >= MIN_FINAL_CHUNK else []
            if not keep_cache:
                self._trims.append(KvTrim(slot.index, 0))
        seq.status = SequenceStatus.FINISHED

    def take_kv_trims(self) -> list[KvTrim]:
        """KV trims since the last call; the runner must apply them before the next step."""
        trims, self._trims = self._trims, []
        return trims

    @property
    def _background_chunk(self) -> int:
        """Tokens per background step: a request arriving meanwhile waits for one such step."""
        return min(BACKGROUND_CHUNK, self.prefill_budget_while_decoding or self.token_budget)

    def _start_background(self) -> None:
        """Re-prefill the pending answer of the most recently finished slot (module docstring)."""
        pending = [slot for slot in self.slots if slot.seq is None and slot.pending]
        if not pending:
            return
        slot = max(pending, key=lambda s: s.last_used)
        seq = Sequence(
            seq_id=-1 - slot.index,
            prompt_ids=slot.cached + slot.pending,
            max_new_tokens=0,
            is_background=True,
        )
        self._trims.append(KvTrim(slot.index, len(slot.cached)))
        seq.slot, seq.num_computed, seq.num_cached = slot.index, len(slot.cached), len(slot.cached)
        seq.status = SequenceStatus.RUNNING
        slot.seq, slot.cached, slot.pending = seq, [], []
        self.running.append(seq)

    def _admit(self, seq: Sequence) -> int:
        """Give `seq` the slot that reuses most of its prompt (scheduling/slots.py); returns
        the time of the prefix copy this asks for, in prompt tokens (0: none)."""
        placement = place(seq, self._pool(seq), reuse_generated=self.reuse_generated)
        self._trims.append(placement.kv_trim)
        slot = placement.slot
        slot.seq, slot.cached, slot.pending = seq, [], []
        seq.slot = slot.index
        seq.num_computed = seq.num_cached = placement.reused
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        return placement.copy_cost

    @staticmethod
    def _chunk(seq: Sequence, max_tokens: int) -> ScheduledChunk:
        """The next chunk of `seq`: its decode token, or a prompt chunk of at most `max_tokens`.

        A prompt chunk never leaves a last chunk shorter than `seq.min_final_chunk`, and one that
        does not finish the prompt holds at least `MIN_FINAL_CHUNK` tokens; when the budget
        allows neither, the chunk is empty and the sequence waits for the next step.
        """
        start = seq.num_computed
        size = min(seq.num_tokens - start, max_tokens)
        if seq.is_prefill:
            remaining = len(seq.prompt_ids) - start
            if 0 < remaining - size < seq.min_final_chunk:
                size = max(0, remaining - seq.min_final_chunk)
            if 0 < size < remaining and size < MIN_FINAL_CHUNK:
                size = 0
        return ScheduledChunk(
            seq=seq, start=start, token_ids=tuple(seq.token_ids[start : start + size])
        )
