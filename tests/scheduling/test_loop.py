"""Behaviour of BatchLoop, driven against a deterministic in-test ModelRunner.

`ScriptedRunner` has one token per character (the token id is the code point) and answers every
prompt with the prompt reversed, then end-of-sequence. It keeps a KV cache per slot as a list of
token ids and fails loudly when a chunk does not continue exactly what its slot holds, so a slot
reused without `trim_slot` shows up as an error. Steps run on the loop's worker thread; the only
blocking in this module happens there (on a `threading.Event`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field

import pytest

from toolrpc.errors import ContextLengthExceeded, GenerationCancelled, Overloaded
from toolrpc.generation import Chunk, ContinuationScore, GenerationRequest, SamplingParams
from toolrpc.scheduling import loop as loop_module
from toolrpc.scheduling.loop import GATHER_S, BatchLoop, LoopConfig
from toolrpc.scheduling.runner import RunnerChunk
from toolrpc.scheduling.scheduler import MULTI_STEP_TOKENS
from toolrpc.types import JSONObject

WAIT_S = 5.0  # bound on every wait in this module
EOS = 0


@dataclass(eq=False)
class ScriptedSampler:
    """Per-sequence state: the script is fixed the first time the sequence samples."""

    script: list[int] | None = None
    is_closed: bool = False

    def close(self) -> None:
        self.is_closed = True


@dataclass
class ScriptedRunner:
    """A ModelRunner that answers each prompt with the prompt reversed, then EOS.

    `gate`, when given, is waited on (bounded) in every step after the first `num_free_steps`,
    so a test can hold the runner mid-generation; `held` is set when a step waits there.
    `fail_when` decides, per batch, whether the step raises `RunnerFailure` instead of computing.
    """

    slots: int = 4
    context: int = 64
    scoring_slots: int = 0
    scoring_context: int = 0
    gate: threading.Event | None = None
    num_free_steps: int = 0
    fail_when: Callable[[list[RunnerChunk]], bool] = lambda chunks: False
    batches: list[list[RunnerChunk]] = field(default_factory=list)
    events: list[tuple[str, int]] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    samplers: list[ScriptedSampler] = field(default_factory=list)
    is_closed: bool = False
    _kv: dict[int, list[int]] = field(default_factory=dict)

    @property
    def num_slots(self) -> int:
        return self.slots

    @property
    def context_length(self) -> int:
        return self.context

    @property
    def num_scoring_slots(self) -> int:
        return self.scoring_slots

    @property
    def scoring_context_length(self) -> int:
        return self.scoring_context

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token_id: int) -> bytes:
        return chr(token_id).encode()

    def is_end_of_generation(self, token_id: int) -> bool:
        return token_id == EOS

    def new_sampler(
        self, sampling: SamplingParams, json_schema: JSONObject | None
    ) -> ScriptedSampler:
        sampler = ScriptedSampler()
        self.samplers.append(sampler)
        return sampler

    def step(self, chunks: list[RunnerChunk]) -> list[int | ContinuationScore | None]:
        self.events.append(("step", len(self.batches)))
        self.batches.append(list(chunks))
        if self.gate is not None and len(self.batches) > self.num_free_steps:
            self.held.set()
            self.gate.wait(WAIT_S)
        if self.fail_when(chunks):
            raise RunnerFailure("the model step failed")
        sampled: list[int | None] = []
        for chunk in chunks:
            kv = self._kv.setdefault(chunk.slot, [])
            if chunk.start != len(kv):
                raise AssertionError(f"slot {chunk.slot} holds {len(kv)}, chunk at {chunk.start}")
            kv.extend(chunk.token_ids)
            if chunk.score_from is not None:  # a score of -1 per scored token
                rows = len(chunk.scored_rows)
                sampled.append(ContinuationScore(logprob=-float(rows), num_tokens=rows))
            else:
                sampled.append(None if chunk.sampler is None else self._sample(chunk.sampler, kv))
        return sampled

    def trim_slot(self, slot: int, keep: int) -> None:
        self.events.append(("trim", slot))
        self._kv[slot] = self._kv.get(slot, [])[:keep]

    def copy_slot(self, source: int, slot: int, keep: int) -> None:
        self.events.append(("copy", slot))
        if len(self._kv.get(source, [])) < keep:
            raise AssertionError(f"copy of {keep} positions from slot {source}, which holds fewer")
        self._kv[slot] = self._kv[source][:keep]

    def close(self) -> None:
        self.is_closed = True

    @staticmethod
    def _sample(sampler: object, kv: list[int]) -> int:
        assert isinstance(sampler, ScriptedSampler)
        assert not sampler.is_closed, "sampled with a closed sampler"
        if sampler.script is None:  # first sample: the cache holds exactly the prompt
            sampler.script = [*reversed(kv), EOS]
        return sampler.script.pop(0)

    def slots_in(self, batch: list[RunnerChunk]) -> set[int]:
        return {chunk.slot for chunk in batch}


class RunnerFailure(RuntimeError):
    """The error a failing ScriptedRunner step raises."""


def request(
    prompt: str, max_new_tokens: int = 100, stop: tuple[str, ...] = ()
) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens, stop=stop)


@asynccontextmanager
async def batch_loop(
    runner: ScriptedRunner, config: LoopConfig | None = None
) -> AsyncIterator[BatchLoop]:
    """A BatchLoop over `runner`, closed (within the bound) on the way out."""
    loop = BatchLoop(runner, config)
    try:
        yield loop
    finally:
        if runner.gate is not None:
            runner.gate.set()
        async with asyncio.timeout(WAIT_S):
            await loop.aclose()


async def collect(loop: BatchLoop, req: GenerationRequest) -> list[Chunk]:
    """Every chunk of one request."""
    async with asyncio.timeout(WAIT_S), aclosing(loop.generate(req)) as chunks:
        return [chunk async for chunk in chunks]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def test_a_request_streams_its_text_and_ends_with_stop_and_usage() -> None:
    runner = ScriptedRunner()
    async with batch_loop(runner) as loop:
        chunks = await collect(loop, request("hello"))

    assert text_of(chunks) == "olleh"
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 5
    assert chunks[-1].usage.completion_tokens == 5
    assert len(chunks) > 2, "text is streamed token by token, not in one piece"
    assert runner.samplers[0].is_closed
    assert loop.scheduler.num_slots_free == runner.slots
    assert runner.is_closed


async def test_max_new_tokens_ends_the_request_with_length() -> None:
    runner = ScriptedRunner()
    async with batch_loop(runner) as loop:
        chunks = await collect(loop, request("abcdef", max_new_tokens=3))

    assert text_of(chunks) == "fed"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_the_output_is_capped_by_the_context_window() -> None:
    runner = ScriptedRunner(context=8)
    async with batch_loop(runner) as loop:
        chunks = await collect(loop, request("abcdef"))

    assert text_of(chunks) == "fe"
    assert chunks[-1].finish_reason == "length"


async def test_a_stop_string_ends_the_request_and_is_not_in_the_text() -> None:
    runner = ScriptedRunner()
    async with batch_loop(runner) as loop:
        chunks = await collect(loop, request("hello world", stop=("ow",)))

    assert text_of(chunks) == "dlr"
    assert chunks[-1].finish_reason == "stop"


async def test_concurrent_requests_share_steps_and_each_gets_its_own_text() -> None:
    runner = ScriptedRunner(slots=4)
    prompts = ["the quick brown", "jumps over", "a lazy dog!"]
    async with batch_loop(runner) as loop:
        results = await asyncio.gather(*(collect(loop, request(p)) for p in prompts))

    assert [text_of(chunks) for chunks in results] == [p[::-1] for p in prompts]
    assert all(chunks[-1].finish_reason == "stop" for chunks in results)
    assert max(len(runner.slots_in(batch)) for batch in runner.batches) == 3
    assert len(runner.batches) < sum(len(p) + 1 for p in prompts)


async def test_a_prompt_that_fills_the_context_window_is_rejected() -> None:
    runner = ScriptedRunner(context=8)
    async with batch_loop(runner) as loop:
        with pytest.raises(ContextLengthExceeded) as caught:
            await collect(loop, request("x" * 8))

    assert caught.value.code == -32002
    assert caught.value.data == {"prompt_tokens": 8, "context_length": 8}
    assert runner.batches == []
    assert runner.samplers == []


async def test_a_full_queue_rejects_a_request_at_once_with_retry_after() -> None:
    runner = ScriptedRunner(slots=1)
    async with batch_loop(runner, LoopConfig(max_waiting=0, retry_after_s=3.0)) as loop:
        async with asyncio.timeout(WAIT_S), aclosing(loop.generate(request("a" * 40))) as first:
            await anext(first)

            with pytest.raises(Overloaded) as caught:
                await collect(loop, request("rejected"))

        assert caught.value.code == -32000
        assert caught.value.retry_after_s == 3.0
        assert caught.value.data == {"retry_after_s": 3.0}
        assert len(runner.samplers) == 1

        assert text_of(await collect(loop, request("later"))) == "retal"


async def test_a_burst_is_refused_at_once_while_the_runner_is_busy() -> None:
    gate = threading.Event()
    runner = ScriptedRunner(slots=1, gate=gate, num_free_steps=1)
    config = LoopConfig(max_waiting=1, retry_after_s=1.0)
    async with (
        batch_loop(runner, config) as loop,
        aclosing(loop.generate(request("a" * 40))) as first,
    ):
        async with asyncio.timeout(WAIT_S):
            await anext(first)
            await asyncio.to_thread(runner.held.wait, WAIT_S)  # the runner thread is busy
        burst = [asyncio.ensure_future(collect(loop, request(f"b{i}"))) for i in range(3)]

        async with asyncio.timeout(WAIT_S / 4):  # well before the runner is free again
            done, _ = await asyncio.wait(burst[1:], return_when=asyncio.ALL_COMPLETED)

        assert all(isinstance(task.exception(), Overloaded) for task in done)
        assert not burst[0].done()  # its place is held while its sampler is built
        gate.set()
        async with asyncio.timeout(WAIT_S):
            assert text_of(await burst[0]) == "0b"


async def test_closing_a_stream_early_frees_its_slot_for_a_queued_request() -> None:
    gate = threading.Event()
    runner = ScriptedRunner(slots=1, gate=gate, num_free_steps=2)
    async with batch_loop(runner) as loop:
        async with asyncio.timeout(WAIT_S):
            abandoned = loop.generate(request("z" * 40))
            first = await anext(abandoned)
            queued = asyncio.create_task(collect(loop, request("queued")))
            # held in the second step of a multi-step decode call
            assert await asyncio.to_thread(runner.held.wait, WAIT_S)
            num_events_at_close = len(runner.events)
            await abandoned.aclose()
            gate.set()
            chunks = await queued

    assert first.finish_reason is None
    assert text_of(chunks) == "deueuq"
    assert_freed_within_one_step(runner, slot=0, after=num_events_at_close)
    assert runner.samplers[0].is_closed


async def test_cancelling_the_consuming_task_frees_its_slot_for_a_queued_request() -> None:
    gate = threading.Event()
    runner = ScriptedRunner(slots=1, gate=gate, num_free_steps=2)
    received: list[Chunk] = []
    got_first = asyncio.Event()

    async def consume() -> None:
        async with aclosing(loop.generate(request("y" * 40))) as chunks:
            async for chunk in chunks:
                received.append(chunk)
                got_first.set()

    async with batch_loop(runner) as loop:
        async with asyncio.timeout(WAIT_S):
            consumer = asyncio.create_task(consume())
            await got_first.wait()
            assert await asyncio.to_thread(runner.held.wait, WAIT_S)
            queued = asyncio.create_task(collect(loop, request("next")))
            num_events_at_close = len(runner.events)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            gate.set()
            chunks = await queued

    assert all(chunk.finish_reason is None for chunk in received)
    assert text_of(chunks) == "txen"
    assert_freed_within_one_step(runner, slot=0, after=num_events_at_close)
    assert runner.samplers[0].is_closed


def assert_freed_within_one_step(runner: ScriptedRunner, *, slot: int, after: int) -> None:
    """`slot` was reused (trimmed for its next sequence) after event `after`, with at most one
    step (the one in flight, though its call may have been for several) between."""
    later = runner.events[after:]
    assert ("trim", slot) in later
    steps_before_free = later[: later.index(("trim", slot))]
    assert len([kind for kind, _ in steps_before_free if kind == "step"]) <= 1


async def test_a_request_past_its_time_limit_is_cancelled() -> None:
    gate = threading.Event()
    runner = ScriptedRunner(gate=gate, num_free_steps=1)
    async with batch_loop(runner, LoopConfig(request_timeout_s=0.05)) as loop:
        with pytest.raises(GenerationCancelled) as caught:
            await collect(loop, request("slow"))
        gate.set()

    assert caught.value.code == -32003
    assert runner.samplers[0].is_closed
    assert loop.scheduler.num_slots_free == runner.slots


async def test_the_time_limit_holds_when_the_stream_is_read_from_another_task() -> None:
    # The server reads the first event in a task of its own and the rest in the response task.
    gate = threading.Event()
    runner = ScriptedRunner(gate=gate, num_free_steps=1)
    async with batch_loop(runner, LoopConfig(request_timeout_s=0.05)) as loop:
        async with (
            asyncio.timeout(WAIT_S) as bound,
            aclosing(loop.generate(request("slow"))) as chunks,
        ):
            first = await asyncio.create_task(anext(chunks))
            with pytest.raises(GenerationCancelled) as caught:
                await anext(chunks)
        gate.set()

    assert first.text == "w"
    assert caught.value.code == -32003
    assert not bound.expired(), "the time limit did not fire; only the test's own bound did"


async def test_a_failing_step_fails_the_running_requests_and_the_loop_keeps_serving() -> None:
    def fail_once_batched(chunks: list[RunnerChunk]) -> bool:
        if len(chunks) < 2 or failed:
            return False
        failed.append(True)
        return True

    failed: list[bool] = []
    runner = ScriptedRunner(fail_when=fail_once_batched)
    async with batch_loop(runner) as loop:
        outcomes = await asyncio.gather(
            collect(loop, request("first request")),
            collect(loop, request("second request")),
            return_exceptions=True,
        )
        chunks = await collect(loop, request("after"))

    assert [type(outcome) for outcome in outcomes] == [RunnerFailure, RunnerFailure]
    assert text_of(chunks) == "retfa"
    assert all(sampler.is_closed for sampler in runner.samplers[:2])
    failed_prompts = ([ord(c) for c in "first request"], [ord(c) for c in "second request"])
    assert not any(slot.cached in failed_prompts for slot in loop.scheduler.slots)


async def test_closing_the_loop_cancels_open_requests_and_closes_the_runner() -> None:
    gate = threading.Event()
    runner = ScriptedRunner(gate=gate, num_free_steps=1)
    loop = BatchLoop(runner)
    async with asyncio.timeout(WAIT_S), aclosing(loop.generate(request("open"))) as chunks:
        await anext(chunks)
        pending = asyncio.create_task(anext(chunks))
        gate.set()
        await loop.aclose()
        with pytest.raises(GenerationCancelled):
            await pending

    assert runner.is_closed
    assert runner.samplers[0].is_closed
    with pytest.raises(GenerationCancelled):
        await collect(loop, request("too late"))


async def test_closing_the_loop_right_after_requests_finish_still_releases_them() -> None:
    for _ in range(100):  # the release races the close; repeat to catch a lost release
        runner = ScriptedRunner(slots=2)
        loop = BatchLoop(runner)
        await asyncio.gather(collect(loop, request("ab")), collect(loop, request("cd")))
        async with asyncio.timeout(WAIT_S):
            await loop.aclose()

        assert all(sampler.is_closed for sampler in runner.samplers)


async def wait_until_idle(loop: BatchLoop) -> None:
    async with asyncio.timeout(WAIT_S):
        await loop.wait_idle()
    assert not loop.scheduler.has_work


async def test_a_follow_up_prompt_reuses_the_cached_prefix_and_reports_it() -> None:
    runner = ScriptedRunner(slots=2)
    async with batch_loop(runner) as loop:
        first = await collect(loop, request("abc"))
        await wait_until_idle(loop)  # the answer was prefilled again meanwhile
        follow_up = await collect(loop, request("abc" + "cba" + "de"))
        stats = loop.stats()

    assert text_of(first) == "cba"
    assert first[-1].usage is not None and first[-1].usage.cached_tokens == 0
    assert text_of(follow_up) == "edabccba"  # the runner checked every chunk continued its KV
    assert follow_up[-1].usage is not None
    assert follow_up[-1].usage.cached_tokens == 6  # the first prompt and its answer
    assert stats.num_cached_tokens == 6
    assert stats.num_running == 0


async def test_requests_arriving_together_copy_a_shared_prefix_from_the_slot_holding_it() -> None:
    runner = ScriptedRunner(slots=4, context=128)
    system = "You are a helpful assistant. "  # 29 tokens, shared by every prompt
    async with batch_loop(runner) as loop:
        await collect(loop, request(system + "first", max_new_tokens=1))
        await wait_until_idle(loop)
        runner.events.clear()
        prompts = [system + question for question in ("why?", "how so", "when!")]
        results = await asyncio.gather(*(collect(loop, request(p)) for p in prompts))

    # each answer is its prompt reversed: the runner checked every chunk continued its KV
    assert [text_of(chunks) for chunks in results] == [p[::-1] for p in prompts]
    assert [chunks[-1].usage.cached_tokens for chunks in results if chunks[-1].usage] == [
        len(system)
    ] * 3
    assert [kind for kind, _ in runner.events].count("copy") == 2  # the first reuses in place


async def test_background_prefill_waits_for_a_quiet_moment_and_then_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_module, "BACKGROUND_AFTER_S", 0.5)  # wide: a slow CI stays inside
    runner = ScriptedRunner(slots=2)
    async with batch_loop(runner) as loop:
        await collect(loop, request("x" * 20))  # a 20-token answer left to prefill again
        steps_after_answer = len(runner.batches)
        await asyncio.sleep(0.1)  # a client working out its next request
        steps_while_client_works = len(runner.batches) - steps_after_answer
        await wait_until_idle(loop)
        background_steps = len(runner.batches) - steps_after_answer

    assert steps_while_client_works == 0
    assert background_steps > 0


@dataclass
class SlowToTokenize(ScriptedRunner):
    """Tokenizing a prompt that starts with "slow" takes `delay_s`; records the steps meanwhile."""

    steps_while_tokenizing: int = -1
    delay_s: float = 0.05

    def tokenize(self, text: str) -> list[int]:
        if text.startswith("slow"):
            before = len(self.batches)
            time.sleep(self.delay_s)
            self.steps_while_tokenizing = len(self.batches) - before
        return super().tokenize(text)


async def test_no_background_prefill_starts_while_a_request_is_on_its_way_in() -> None:
    runner = SlowToTokenize(slots=2)
    config = LoopConfig(prefill_budget_while_decoding=4)
    async with batch_loop(runner, config) as loop:
        await collect(loop, request("x" * 40))  # a 40-token answer: 10 background chunks
        had_background_work = loop.scheduler.has_work
        second = await collect(loop, request("slow"))

    assert had_background_work
    assert 0 <= runner.steps_while_tokenizing <= 1  # at most the step already in flight
    assert text_of(second) == "wols"


async def test_scoring_prompts_sent_together_start_together_in_the_scoring_slots() -> None:
    runner = SlowToTokenize(slots=1, scoring_slots=4, scoring_context=32, delay_s=GATHER_S / 4)
    async with batch_loop(runner) as loop:
        scores = await asyncio.gather(
            loop.score("slow task: ", "abc"), loop.score("a task: ", "abc"), loop.score("b: ", "c")
        )

    assert [score.num_tokens for score in scores] == [3, 3, 1]
    assert len(runner.batches) == 1
    assert runner.slots_in(runner.batches[0]) == {1, 2, 3}  # numbered after the one slot


async def test_a_step_waits_for_a_slow_arrival_no_longer_than_the_gathering_bound() -> None:
    runner = SlowToTokenize(slots=1, scoring_slots=4, scoring_context=32, delay_s=GATHER_S * 5)
    async with batch_loop(runner) as loop:
        await asyncio.gather(loop.score("slow task: ", "abc"), loop.score("a task: ", "abc"))

    assert [len(batch) for batch in runner.batches] == [1, 1]  # the quick one went first
    assert runner.batches[0][0].token_ids[0] == ord("a")


@dataclass
class StepCountingRunner(ScriptedRunner):
    """Records, at every step, how many steps the loop had taken back (`BatchLoop.num_steps`).

    The loop adds a runner call's steps only once the call returns, so every step of one call
    sees the same count, and a new count marks a new call.
    """

    loop: BatchLoop | None = None
    seen: list[int] = field(default_factory=list)

    def step(self, chunks: list[RunnerChunk]) -> list[int | None]:
        assert self.loop is not None
        self.seen.append(self.loop.num_steps)
        return super().step(chunks)


async def test_a_lone_stream_decodes_several_steps_per_runner_call() -> None:
    runner = StepCountingRunner(slots=2)
    async with batch_loop(runner) as loop:
        runner.loop = loop
        chunks = await collect(loop, request("abcdefgh"))

    assert text_of(chunks) == "hgfedcba"
    # 1 prefill step, then 8 decode steps (7 tokens fed back + the end) in calls of 4; a
    # background prefill of the answer may follow
    assert MULTI_STEP_TOKENS == 4
    assert runner.seen[:9] == [0, 1, 1, 1, 1, 5, 5, 5, 5]


async def test_every_runner_call_is_fed_to_the_step_cost_estimate() -> None:
    runner = StepCountingRunner(slots=2)
    async with batch_loop(runner) as loop:
        runner.loop = loop
        await collect(loop, request("abcdefgh"))
        await asyncio.wait_for(loop.wait_idle(), WAIT_S)
        calls = len(set(runner.seen))

    assert loop.step_costs.num_observed == calls


async def test_stats_count_slots_kv_tokens_and_each_requests_wait_for_a_slot() -> None:
    runner = ScriptedRunner(slots=2)
    async with batch_loop(runner) as loop:
        await collect(loop, request("abc"))
        await collect(loop, request("abcd"))
        stats = loop.stats()

    assert (stats.num_slots, stats.num_slots_in_use) == (2, 0)
    assert stats.num_kv_tokens >= len("abcd")  # the kept prompt prefixes
    assert stats.queue_wait_counts[-1] == 2  # every admitted request waited some time, once
    assert stats.queue_wait_sum_s >= 0
