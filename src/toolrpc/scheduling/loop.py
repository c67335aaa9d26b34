"""The one async loop that drives a ModelRunner with the Scheduler.

`BatchLoop.generate` queues a request and streams its chunks; a single background task runs
each step: the scheduler plans it (`Scheduler.schedule`), the runner carries the plan out in
its worker thread (one step, or several decode steps when the plan says so, cut short when a
request arrives or ends), and the scheduler takes each step's tokens back
(`Scheduler.postprocess`), ending sequences at end of generation and `max_new_tokens`. Each
runner call is timed and fed to a `StepCostEstimator`, whose current estimate the next plan is
given (the scheduler sizes prompt chunks beside running streams by it). What needs text stays
out of the scheduler: each request (`ActiveRequest`, scheduling/request.py) turns its tokens
into text, and a stop string ends its sequence here. Closing a request's stream (client gone,
time limit) finishes its sequence before the next step, so its slot and KV cache are free
within one step.

Requests that arrive together start together: when no stream decodes yet, a step waits (up to
`GATHER_S`) for the requests still on their way in (tokenizing, building a sampler). The tool
router's scoring prompts are sent at once but tokenized one by one in worker threads, and the
first used to start a step alone, the others waiting a whole step behind it: 1 then 9
sequences, 40-100 ms more than one step of 10 (benchmarks/README.md). A lone request waits
for nothing: it is no longer arriving when the loop looks.

Background prefill (the scheduler re-prefills a finished answer while nothing runs) starts only
after `BACKGROUND_AFTER_S` without a request arriving or ending. A client that sends its next
request at once (a tool loop with a local tool, a benchmark) used to find a background chunk
just started and wait for it: in a timeline of back-to-back `create_message` calls with tools,
the router's scoring step waited 0.11 s behind a 16-token chunk begun while the request was
still in the chat layer, before it reached the loop. A client that takes longer (a person
reading, a slow tool) still finds its answer prefilled. The wait is short because a client
that comes back quickly loses what it would have found done: a follow-up sent right after its
first turn found 16 tokens of its answer prefilled before, none now (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from toolrpc.errors import (
    ContextLengthExceeded,
    GenerationCancelled,
    InvalidParams,
    Overloaded,
)
from toolrpc.generation import (
    Chunk,
    ContinuationScore,
    EngineStats,
    GenerationRequest,
)
from toolrpc.scheduling.cost import StepCostEstimator
from toolrpc.scheduling.request import ActiveRequest
from toolrpc.scheduling.runner import ModelRunner, RunnerChunk
from toolrpc.scheduling.runner_calls import release, trim_and_step
from toolrpc.scheduling.scheduler import Scheduler
from toolrpc.scheduling.sequence import (
    SampledToken,
    ScheduledChunk,
    Sequence,
    SequenceStatus,
    StepPlan,
)
from toolrpc.scheduling.slots import common_prefix_len
from toolrpc.scheduling.text import TextAssembler
from toolrpc.scheduling.waits import QueueWaits

logger = logging.getLogger(__name__)

GATHER_S = 0.02
"""Longest wait of a step for requests on their way in, when no stream decodes (docstring)."""

BACKGROUND_AFTER_S = 0.03
"""Quiet time, no request arriving or ending, before background prefill starts (docstring):
longer than a request takes from its arrival to the loop (17 ms with ten tools)."""

T = TypeVar("T")


@dataclass(frozen=True)
class LoopConfig:
    """Limits of the batching loop (`max_token_gap_s`: the inter-token target a step beside
    running streams is sized for; None: prompt chunks are bounded by the token budget and
    `prefill_budget_while_decoding` only)."""

    token_budget: int = 512
    prefill_budget_while_decoding: int | None = None
    max_token_gap_s: float | None = None
    reuse_generated_kv: bool = False
    max_waiting: int = 64
    request_timeout_s: float = 600.0
    retry_after_s: float = 2.0


class BatchLoop:
    """Turns a ModelRunner into a stream of chunks per request, batching whatever runs at once."""

    def __init__(self, runner: ModelRunner, config: LoopConfig | None = None) -> None:
        self.runner = runner
        self.config = config or LoopConfig()
        self.scheduler = Scheduler(
            num_slots=runner.num_slots,
            token_budget=self.config.token_budget,
            max_waiting=self.config.max_waiting,
            prefill_budget_while_decoding=self.config.prefill_budget_while_decoding,
            max_token_gap_s=self.config.max_token_gap_s,
            reuse_generated=self.config.reuse_generated_kv,
            num_scoring_slots=runner.num_scoring_slots,
            scoring_context_length=runner.scoring_context_length,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolrpc-runner")
        self._requests: dict[int, ActiveRequest] = {}
        self._retired: list[ActiveRequest] = []
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._num_arriving = 0
        self._last_activity = time.monotonic()
        """When a request last arrived or ended (background prefill waits for quiet)."""
        self._num_reserved = 0
        self._queue_waits = QueueWaits()
        """Requests past the room check whose sequence is not queued yet (`_reserved`)."""
        self._interrupt = threading.Event()
        """Set when a request arrives or ends: a multi-step runner call stops after its step."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._totals = EngineStats()
        self.num_steps = 0
        self.step_costs = StepCostEstimator()
        """What a runner step costs, learnt from the calls so far (the plans are sized by it)."""

    def stats(self) -> EngineStats:
        """Counters since start, the queue-wait histogram and the current queue and KV gauges."""
        slots = self.scheduler.slots
        in_use = [slot.seq for slot in slots if slot.seq is not None]
        return dataclasses.replace(
            self._totals,
            num_running=sum(not seq.is_background for seq in self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_steps=self.num_steps,
            num_slots=len(slots),
            num_slots_in_use=sum(not seq.is_background for seq in in_use),
            num_kv_tokens=sum(
                slot.seq.num_computed if slot.seq is not None else len(slot.cached)
                for slot in slots
            ),
            queue_wait_counts=self._queue_waits.counts,
            queue_wait_sum_s=self._queue_waits.sum_s,
        )

    def _record_waits(self, plan: StepPlan) -> None:
        """Note how long each request that starts running in `plan` waited for its slot."""
        now = asyncio.get_running_loop().time()
        for chunk in plan.chunks:
            state = self._requests.get(chunk.seq.seq_id)
            if state is None or state.is_started:
                continue
            state.is_started = True
            self._queue_waits.record(max(0.0, now - state.queued_at))

    async def wait_idle(self) -> None:
        """Wait until the loop has nothing left to do, background prefill included."""
        await self._idle.wait()

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the continuation of `request.prompt`; see `Engine.generate` for the errors."""
        with self._arriving():
            prompt_ids = await self._tokenize(request.prompt)
            with self._reserved(len(prompt_ids)):
                try:
                    sampler = await self._call(
                        self.runner.new_sampler, request.sampling, request.json_schema
                    )
                except ValueError as exc:  # a schema the engine cannot turn into a grammar
                    raise InvalidParams(f"cannot constrain generation: {exc}") from exc
                room = self.runner.context_length - len(prompt_ids)
                max_new = min(request.max_new_tokens, room)
                seq = Sequence(
                    seq_id=next(self._ids), prompt_ids=prompt_ids, max_new_tokens=max_new
                )
                state = ActiveRequest(seq=seq, sampler=sampler, text=TextAssembler(request.stop))
                await self._admit(state)
        try:
            while True:
                item = await state.next_item()
                assert isinstance(item, Chunk)
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._retire(state)

    async def score(self, prompt: str, continuation: str) -> ContinuationScore:
        """How likely the model finds `continuation` right after `prompt`.

        Raises `ContextLengthExceeded`, `Overloaded`, `GenerationCancelled`, and
        `InvalidParams` when the continuation is too long to score in one step.
        """
        with self._arriving():
            prompt_ids = await self._tokenize(prompt)
            token_ids = await self._tokenize(prompt + continuation)
            self._check_room(len(token_ids), scoring=True)
            score_from = common_prefix_len(prompt_ids, token_ids, len(token_ids) - 1)
            seq = Sequence(
                seq_id=next(self._ids),
                prompt_ids=token_ids,
                max_new_tokens=0,
                score_from=score_from,
            )
            if seq.min_final_chunk > self.config.token_budget - self.runner.num_slots:
                raise InvalidParams("the continuation is too long to score")
            state = ActiveRequest(seq=seq, sampler=None, text=TextAssembler())
            await self._admit(state)
        try:
            item = await state.next_item()
            assert isinstance(item, ContinuationScore)
            return item
        finally:
            self._retire(state)

    @contextlib.contextmanager
    def _arriving(self) -> Iterator[None]:
        """Mark a request on its way in (tokenizing, building its sampler): the loop starts no
        background prefill meanwhile, so the request does not wait behind one."""
        self._num_arriving += 1
        self._last_activity = time.monotonic()
        self._interrupt.set()
        try:
            yield
        finally:
            self._num_arriving -= 1
            self._wake.set()

    async def _tokenize(self, text: str) -> list[int]:
        """Token ids, off the event loop (the vocabulary is read-only: no need to wait for the
        runner's thread)."""
        if self._closed:
            raise GenerationCancelled("the engine is shutting down")
        return await asyncio.to_thread(self.runner.tokenize, text)

    def _check_room(self, num_prompt: int, *, scoring: bool = False) -> None:
        """Refuse a prompt that cannot fit, or a request the queue cannot take (counting the
        places already promised to requests still on their way in)."""
        if num_prompt >= self.runner.context_length:
            raise ContextLengthExceeded(num_prompt, self.runner.context_length)
        if self.scheduler.num_places(num_prompt if scoring else None) <= self._num_reserved:
            raise Overloaded("the request queue is full", self.config.retry_after_s)

    @contextlib.contextmanager
    def _reserved(self, num_prompt: int) -> Iterator[None]:
        """Check the room for a request and hold its place while its sampler is built: that
        waits behind the model step in flight, and without the hold every request of a burst
        passed the check meanwhile and was refused only after it (seconds, not at once)."""
        self._check_room(num_prompt)
        self._num_reserved += 1
        try:
            yield
        finally:
            self._num_reserved -= 1

    async def _admit(self, state: ActiveRequest) -> None:
        """Queue a request's sequence and wake the loop (releases its sampler if refused)."""
        if not self.scheduler.accepts(state.seq) or self._closed:  # changed while we awaited
            if state.sampler is not None:
                await self._call(state.sampler.close)
            if self._closed:
                raise GenerationCancelled("the engine is shutting down")
            raise Overloaded("the request queue is full", self.config.retry_after_s)
        self.scheduler.add(state.seq)
        self._idle.clear()
        self._requests[state.seq.seq_id] = state
        self._count(num_requests=1, num_prompt_tokens=len(state.seq.prompt_ids))
        state.admitted(asyncio.get_running_loop().time(), self.config.request_timeout_s)
        self._ensure_running()
        self._wake.set()

    async def aclose(self) -> None:
        """Fail every open request, stop the loop and release the runner."""
        self._closed = True
        for state in list(self._requests.values()):
            state.queue.put_nowait(GenerationCancelled("the engine is shutting down"))
            self._retire(state)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._release_retired()
        await self._call(self.runner.close)
        self._executor.shutdown(wait=True)

    def _count(self, **increments: int) -> None:
        totals = self._totals
        self._totals = dataclasses.replace(
            totals, **{name: getattr(totals, name) + n for name, n in increments.items()}
        )

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking runner call on the runner's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="toolrpc-batch-loop")

    def _retire(self, state: ActiveRequest, *, keep_cache: bool = True) -> None:
        """Finish a request's sequence now; its sampler is closed after the step in flight."""
        if self._requests.pop(state.seq.seq_id, None) is None:
            return
        self._count(
            num_cancelled=0 if state.is_finished else 1,
            num_generated_tokens=state.seq.num_output,
            num_cached_tokens=state.seq.num_cached,
        )
        self.scheduler.finish(state.seq, keep_cache=keep_cache)
        self._last_activity = time.monotonic()
        self._interrupt.set()
        self._retired.append(state)
        self._wake.set()

    async def _release_retired(self) -> None:
        """Close retired samplers and apply pending KV trims on the runner thread."""
        samplers = [state.sampler for state in self._retired if state.sampler is not None]
        self._retired = []
        trims = self.scheduler.take_kv_trims()
        # Shielded: `aclose` cancels the loop task, and a cancelled job that had not started yet
        # would never run, leaking these samplers and slots.
        released = asyncio.get_running_loop().run_in_executor(
            self._executor, release, self.runner, samplers, trims
        )
        await asyncio.shield(released)

    async def _run(self) -> None:
        while not self._closed:
            if self._retired:
                await self._release_retired()
            has_work = self.scheduler.has_work
            if not has_work or (self._num_arriving and not self.scheduler.has_request_work):
                if not has_work:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            self._idle.clear()
            quiet_left = BACKGROUND_AFTER_S - (time.monotonic() - self._last_activity)
            if quiet_left > 0 and not self.scheduler.has_request_work:
                await self._wake_or_timeout(quiet_left)  # background work only: wait for quiet
                continue
            if self._num_arriving and not self._is_decoding():
                await self._gather_arrivals()
            try:
                await self._step()
            except Exception as exc:
                logger.exception("model step failed")
                self._fail_running(exc)

    def _is_decoding(self) -> bool:
        """True when some request's stream awaits its next token (its prompt computed)."""
        return any(not seq.is_prefill and not seq.is_background for seq in self.scheduler.running)

    async def _gather_arrivals(self) -> None:
        """Wait up to `GATHER_S` for the requests on their way in (module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_S
        while self._num_arriving and not self._closed and (left := deadline - loop.time()) > 0:
            await self._wake_or_timeout(left)

    async def _wake_or_timeout(self, timeout_s: float) -> None:
        """Wait until something wakes the loop (a request arrives, ends or is closed), at most
        `timeout_s`."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    def _fail_running(self, exc: Exception) -> None:
        """Fail every running request after a runner failure, not only those in the failed
        step: the runner's state is unknown after it, so every slot in use is emptied too
        (`keep_cache=False`). Waiting requests stay queued and run on fresh slots."""
        for state in list(self._requests.values()):
            if state.seq.status is SequenceStatus.RUNNING:
                state.queue.put_nowait(exc)
                self._retire(state, keep_cache=False)

    async def _step(self) -> None:
        """Plan a step, have the runner carry it out, and hand each step's results back."""
        plan = self.scheduler.schedule(
            num_arriving=self._num_arriving, step_cost=self.step_costs.cost()
        )
        if not plan.chunks:
            return
        self._record_waits(plan)
        runner_chunks = [self._runner_chunk(c) for c in plan.chunks]
        trims = self.scheduler.take_kv_trims()
        self._interrupt.clear()
        started = time.perf_counter()
        steps = await self._call(
            trim_and_step, self.runner, trims, runner_chunks, plan.num_steps, self._interrupt
        )
        self._observe_cost(runner_chunks, len(steps), time.perf_counter() - started)
        self.num_steps += len(steps)
        for step, results in enumerate(steps):
            self._on_step_results(plan, step, results)

    def _observe_cost(self, chunks: list[RunnerChunk], num_steps: int, seconds: float) -> None:
        """Feed a runner call's composition and wall time (hand-offs included: they are part
        of the gap a stream sees) to the cost estimate; steps after the first decode one row
        per chunk."""
        num_decodes = sum(len(c.token_ids) == 1 and c.score_from is None for c in chunks)
        num_prompt = sum(len(c.token_ids) for c in chunks) - num_decodes
        self.step_costs.observe(
            num_steps=num_steps,
            num_decode_rows=num_decodes + (num_steps - 1) * len(chunks),
            num_prompt_tokens=num_prompt,
            seconds=seconds,
        )

    def _on_step_results(
        self, plan: StepPlan, step: int, results: list[int | ContinuationScore | None]
    ) -> None:
        """Give the scheduler a step's tokens, then each request its score or its text."""
        scores = {
            chunk.seq.seq_id: result
            for chunk, result in zip(plan.chunks, results, strict=True)
            if isinstance(result, ContinuationScore)
        }
        sampled = [
            SampledToken(r, self.runner.is_end_of_generation(r)) if isinstance(r, int) else None
            for r in results
        ]
        for output in self.scheduler.postprocess(plan, step, sampled):
            state = self._requests.get(output.seq.seq_id)
            if state is None:
                continue
            score = scores.get(output.seq.seq_id)
            if score is not None:
                state.scored(score)
            else:
                token = output.token_id
                state.take_token(output, b"" if token is None else self.runner.token_bytes(token))
            if state.is_finished:
                self._retire(state)

    def _runner_chunk(self, chunk: ScheduledChunk) -> RunnerChunk:
        seq = chunk.seq
        assert seq.slot is not None
        state = self._requests.get(seq.seq_id)  # None: the scheduler's background prefill
        sampler = state.sampler if state is not None and chunk.needs_sample else None
        score_from = seq.score_from if chunk.needs_sample else None
        return RunnerChunk(seq.slot, chunk.start, chunk.token_ids, sampler, score_from)
