"""Behaviour of the pure continuous-batching policy, stepped by hand without a model.

Each test plays the runner itself: it asks the scheduler for a plan and hands back a sampled
token for every chunk that asked for one, as `BatchLoop` does.
"""

from __future__ import annotations

import pytest

from toolrpc.scheduling.cost import StepCost
from toolrpc.scheduling.scheduler import MULTI_STEP_TOKENS, PREFILL_FLOOR, Scheduler
from toolrpc.scheduling.sequence import (
    SampledToken,
    ScheduledChunk,
    Sequence,
    SequenceStatus,
    StepPlan,
    TokenOutput,
)

SAMPLED_TOKEN = 7


def make_seq(seq_id: int, num_prompt: int, max_new_tokens: int = 100) -> Sequence:
    """A sequence whose prompt is `num_prompt` distinct token ids."""
    prompt = [1000 * (seq_id + 1) + i for i in range(num_prompt)]
    return Sequence(seq_id=seq_id, prompt_ids=prompt, max_new_tokens=max_new_tokens)


def complete_step(scheduler: Scheduler, chunks: list[ScheduledChunk]) -> list[TokenOutput]:
    """Report a step computed, with `SAMPLED_TOKEN` sampled wherever a chunk asks for one."""
    plan = StepPlan(tuple(chunks))
    return scheduler.postprocess(
        plan, 0, [sample(SAMPLED_TOKEN) if c.needs_sample else None for c in chunks]
    )


def sample(token_id: int, *, is_end: bool = False) -> SampledToken:
    """A token as the runner reports it."""
    return SampledToken(token_id, is_end_of_generation=is_end)


def run_step(scheduler: Scheduler) -> list[ScheduledChunk]:
    """Schedule one step and complete it."""
    chunks = list(scheduler.schedule().chunks)
    complete_step(scheduler, chunks)
    return chunks


def ids(chunks: list[ScheduledChunk]) -> list[int]:
    """The sequence ids of a step's chunks, in order."""
    return [chunk.seq.seq_id for chunk in chunks]


def test_impossible_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        Scheduler(num_slots=0, token_budget=8, max_waiting=0)
    with pytest.raises(ValueError):
        Scheduler(num_slots=4, token_budget=5, max_waiting=0)
    with pytest.raises(ValueError):
        Scheduler(num_slots=1, token_budget=8, max_waiting=-1)


def test_an_empty_scheduler_has_no_work_and_schedules_nothing() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=8, max_waiting=4)

    assert not scheduler.has_work
    assert scheduler.schedule().chunks == ()


def test_sequences_are_admitted_up_to_the_number_of_slots() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=100, max_waiting=4)
    seqs = [make_seq(i, 3) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)

    chunks = run_step(scheduler)

    assert ids(chunks) == [0, 1]
    assert scheduler.running == seqs[:2]
    assert list(scheduler.waiting) == [seqs[2]]
    assert [seq.status for seq in seqs] == [
        SequenceStatus.RUNNING,
        SequenceStatus.RUNNING,
        SequenceStatus.WAITING,
    ]
    assert {seqs[0].slot, seqs[1].slot} == {0, 1}
    assert seqs[2].slot is None
    assert scheduler.num_slots_free == 0


def test_sequences_are_admitted_first_come_first_served() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=100, max_waiting=8)
    # Arrival order differs from id order, and a later short prompt must not jump the queue.
    seqs = [make_seq(3, 50), make_seq(1, 2), make_seq(2, 9), make_seq(0, 1)]
    for seq in seqs:
        scheduler.add(seq)

    admitted: list[int] = []
    for _ in seqs:
        chunks = run_step(scheduler)
        (chunk,) = chunks
        admitted.append(chunk.seq.seq_id)
        scheduler.finish(chunk.seq)

    assert admitted == [3, 1, 2, 0]


def test_decode_tokens_are_scheduled_before_prompt_chunks() -> None:
    scheduler = Scheduler(num_slots=3, token_budget=100, max_waiting=4)
    first, second = make_seq(0, 4), make_seq(1, 4)
    scheduler.add(first)
    scheduler.add(second)
    run_step(scheduler)  # both prefilled in one step; both now decode
    late = make_seq(2, 6)
    scheduler.add(late)

    chunks = run_step(scheduler)

    assert ids(chunks) == [0, 1, 2]
    assert [len(chunk.token_ids) for chunk in chunks] == [1, 1, 6]
    assert [chunk.token_ids for chunk in chunks[:2]] == [(SAMPLED_TOKEN,), (SAMPLED_TOKEN,)]


def test_running_prompts_are_continued_before_new_ones_are_admitted() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=4, max_waiting=4)
    long = make_seq(0, 10)
    scheduler.add(long)
    run_step(scheduler)  # 4 of 10 prompt tokens
    scheduler.add(make_seq(1, 3))

    chunks = run_step(scheduler)

    assert ids(chunks) == [0]
    assert chunks[0].start == 4
    assert len(chunks[0].token_ids) == 4


def test_no_step_schedules_more_tokens_than_the_budget() -> None:
    budget = 10
    scheduler = Scheduler(num_slots=3, token_budget=budget, max_waiting=8)
    seqs = [
        make_seq(i, n, max_new_tokens=m)
        for i, (n, m) in enumerate([(25, 3), (4, 8), (11, 2), (1, 5), (17, 4)])
    ]
    for seq in seqs:
        scheduler.add(seq)

    num_steps = 0
    while scheduler.has_work:
        chunks = run_step(scheduler)
        assert chunks, "a scheduler with work must schedule something"
        assert sum(len(chunk.token_ids) for chunk in chunks) <= budget
        for chunk in chunks:
            if chunk.seq.num_output >= chunk.seq.max_new_tokens:
                scheduler.finish(chunk.seq)
        num_steps += 1
        assert num_steps < 100, "scheduler did not drain"

    assert all(seq.status is SequenceStatus.FINISHED for seq in seqs)
    assert [seq.num_output for seq in seqs] == [3, 8, 2, 5, 4]


def test_a_long_prompt_is_prefilled_over_several_steps_while_running_sequences_keep_decoding() -> (
    None
):
    scheduler = Scheduler(num_slots=3, token_budget=8, max_waiting=4)
    short_a, short_b = make_seq(0, 2), make_seq(1, 3)
    scheduler.add(short_a)
    scheduler.add(short_b)
    run_step(scheduler)
    long = make_seq(2, 30)
    scheduler.add(long)

    prefill_chunks: list[ScheduledChunk] = []
    prefill_samples: list[bool] = []
    while long.is_prefill:
        num_output_before = (short_a.num_output, short_b.num_output)
        chunks = list(scheduler.schedule().chunks)
        prefill_samples.append(chunks[2].needs_sample)
        complete_step(scheduler, chunks)
        assert ids(chunks) == [0, 1, 2]
        assert [len(chunk.token_ids) for chunk in chunks[:2]] == [1, 1]
        assert (short_a.num_output, short_b.num_output) == (
            num_output_before[0] + 1,
            num_output_before[1] + 1,
        )
        prefill_chunks.append(chunks[2])
        assert len(prefill_chunks) < 10, "prefill did not finish"

    assert [len(chunk.token_ids) for chunk in prefill_chunks] == [6, 6, 6, 6, 6]
    assert [chunk.start for chunk in prefill_chunks] == [0, 6, 12, 18, 24]
    assert sum((chunk.token_ids for chunk in prefill_chunks), ()) == tuple(long.prompt_ids)
    assert prefill_samples == [False] * 4 + [True]
    assert long.num_output == 1


def test_only_the_chunk_reaching_the_end_of_known_tokens_needs_a_sample() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=4, max_waiting=1)
    seq = make_seq(0, 9)
    scheduler.add(seq)

    planned: list[tuple[int, tuple[int, ...], bool]] = []
    for _ in range(4):
        (chunk,) = scheduler.schedule().chunks
        planned.append((chunk.start, chunk.token_ids, chunk.needs_sample))
        complete_step(scheduler, [chunk])

    prompt = tuple(seq.prompt_ids)
    assert (
        planned
        == [
            (0, prompt[0:4], False),
            (4, prompt[4:7], False),  # shortened: the sampled chunk is never a single token
            (7, prompt[7:9], True),
            (9, (SAMPLED_TOKEN,), True),
        ]
    )
    assert seq.num_output == 2


def test_adding_beyond_free_slots_plus_waiting_room_raises_overflow() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=8, max_waiting=1)
    for i in range(3):
        assert scheduler.can_accept
        scheduler.add(make_seq(i, 2))

    assert not scheduler.can_accept
    with pytest.raises(OverflowError):
        scheduler.add(make_seq(3, 2))

    run_step(scheduler)  # two admitted, one waiting: still full

    assert not scheduler.can_accept
    with pytest.raises(OverflowError):
        scheduler.add(make_seq(4, 2))


def test_finishing_a_running_sequence_frees_its_slot_once_and_admits_the_next_waiting_one() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=8, max_waiting=2)
    first, second = make_seq(0, 3), make_seq(1, 3)
    scheduler.add(first)
    scheduler.add(second)
    run_step(scheduler)
    slot = first.slot
    assert slot is not None

    scheduler.finish(first)

    assert first.status is SequenceStatus.FINISHED
    assert scheduler.num_slots_free == 1
    assert scheduler.can_accept
    assert scheduler.slots[slot].cached == first.token_ids[: first.num_computed]

    chunks = run_step(scheduler)

    assert ids(chunks) == [1]
    assert second.status is SequenceStatus.RUNNING
    assert second.slot == slot


def test_finishing_a_waiting_sequence_removes_it_without_freeing_a_slot() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=8, max_waiting=2)
    running, waiting, behind = make_seq(0, 3), make_seq(1, 3), make_seq(2, 3)
    for seq in (running, waiting, behind):
        scheduler.add(seq)
    run_step(scheduler)

    scheduler.finish(waiting)

    assert waiting.status is SequenceStatus.FINISHED
    assert list(scheduler.waiting) == [behind]
    assert scheduler.num_slots_free == 0

    scheduler.finish(running)
    run_step(scheduler)

    assert scheduler.running == [behind]


def test_finishing_a_sequence_twice_is_harmless() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=8, max_waiting=2)
    running, waiting = make_seq(0, 3), make_seq(1, 3)
    scheduler.add(running)
    run_step(scheduler)
    scheduler.add(waiting)

    for _ in range(2):
        scheduler.finish(running)
        scheduler.finish(waiting)

    assert scheduler.num_slots_free == 2
    assert scheduler.running == []
    assert list(scheduler.waiting) == []
    assert not scheduler.has_work


def finished_in_slot(scheduler: Scheduler, seq: Sequence) -> int:
    """Run `seq` alone through its prefill and first token, then finish it; returns its slot."""
    scheduler.add(seq)
    while seq.is_prefill or not seq.output_ids:
        run_step(scheduler)
    scheduler.finish(seq)
    assert seq.slot is not None
    return seq.slot


def test_a_follow_up_reuses_the_slot_holding_its_prefix_and_prefills_only_the_rest() -> None:
    scheduler = Scheduler(num_slots=3, token_budget=64, max_waiting=4)
    first = make_seq(0, 10)
    slot = finished_in_slot(scheduler, first)
    scheduler.take_kv_trims()
    follow_up = Sequence(seq_id=1, prompt_ids=[*first.token_ids, 7, 8, 9], max_new_tokens=10)
    scheduler.add(follow_up)

    [chunk] = scheduler.schedule().chunks

    reused = len(first.prompt_ids)  # only prompt tokens are kept (module docstring)
    assert follow_up.slot == slot
    assert follow_up.num_cached == reused
    assert chunk.start == reused
    assert chunk.token_ids == tuple(follow_up.prompt_ids[reused:])
    assert [(t.slot, t.keep) for t in scheduler.take_kv_trims()] == [(slot, reused)]


def test_an_identical_prompt_still_computes_its_last_two_tokens() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=64, max_waiting=4)
    first = make_seq(0, 6)
    finished_in_slot(scheduler, first)
    again = Sequence(seq_id=1, prompt_ids=list(first.prompt_ids), max_new_tokens=10)
    scheduler.add(again)

    [chunk] = scheduler.schedule().chunks

    assert again.num_cached == 4
    assert chunk.token_ids == tuple(first.prompt_ids[-2:])
    assert chunk.needs_sample


def test_without_a_shared_prefix_an_empty_slot_is_taken_before_a_cached_one() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=64, max_waiting=4)
    cached_slot = finished_in_slot(scheduler, make_seq(0, 5))
    other = make_seq(1, 5)
    scheduler.add(other)

    scheduler.schedule()

    assert other.slot != cached_slot
    assert other.num_cached == 0
    assert scheduler.slots[cached_slot].cached  # the cached prefix survives


def test_when_every_idle_slot_holds_a_prefix_the_least_recently_used_is_evicted() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=64, max_waiting=4)
    older = finished_in_slot(scheduler, make_seq(0, 5))
    newer = finished_in_slot(scheduler, make_seq(1, 5))
    assert older != newer
    stranger = make_seq(2, 5)
    scheduler.add(stranger)
    scheduler.take_kv_trims()

    scheduler.schedule()

    assert stranger.slot == older
    assert [(t.slot, t.keep) for t in scheduler.take_kv_trims()] == [(older, 0)]
    assert scheduler.slots[newer].cached


def test_finishing_without_keeping_the_cache_empties_the_slot() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=64, max_waiting=4)
    seq = make_seq(0, 5)
    scheduler.add(seq)
    run_step(scheduler)
    scheduler.take_kv_trims()

    scheduler.finish(seq, keep_cache=False)

    assert scheduler.slots[0].cached == []
    assert [(t.slot, t.keep) for t in scheduler.take_kv_trims()] == [(0, 0)]


def test_a_prompt_chunk_never_leaves_a_single_token_for_the_sampled_chunk() -> None:
    for num_prompt in range(2, 12):
        for budget in range(3, 8):
            scheduler = Scheduler(num_slots=1, token_budget=budget, max_waiting=1)
            seq = make_seq(0, num_prompt)
            scheduler.add(seq)
            sizes = []
            while seq.is_prefill:
                chunks = run_step(scheduler)
                sizes += [len(c.token_ids) for c in chunks]

            assert sum(sizes) == num_prompt
            assert sizes[-1] >= 2, (num_prompt, budget, sizes)
            assert min(sizes) >= 2, (num_prompt, budget, sizes)


def test_while_others_decode_prompt_chunks_share_the_smaller_prefill_budget() -> None:
    scheduler = Scheduler(
        num_slots=2, token_budget=64, max_waiting=2, prefill_budget_while_decoding=8
    )
    streaming, long_prompt = make_seq(0, 4), make_seq(1, 40)
    scheduler.add(streaming)
    run_step(scheduler)  # prefilled alone: the whole budget
    scheduler.add(long_prompt)

    sizes = []
    while long_prompt.is_prefill:
        chunks = run_step(scheduler)
        assert streaming in [chunk.seq for chunk in chunks]  # a token for the stream every step
        sizes += [len(c.token_ids) for c in chunks if c.seq is long_prompt]

    assert max(sizes) <= 8
    assert sum(sizes) == 40


def test_alone_a_prompt_gets_the_whole_budget() -> None:
    scheduler = Scheduler(
        num_slots=2, token_budget=64, max_waiting=2, prefill_budget_while_decoding=8
    )
    seq = make_seq(0, 40)
    scheduler.add(seq)

    [chunk] = scheduler.schedule().chunks

    assert len(chunk.token_ids) == 40


def test_scored_tails_stretched_to_their_minimum_never_overflow_the_step_budget() -> None:
    budget = 24
    scheduler = Scheduler(num_slots=6, token_budget=budget, max_waiting=16)
    seqs = [
        Sequence(seq_id=i, prompt_ids=list(range(100 * i, 100 * i + 15)), max_new_tokens=0)
        for i in range(12)
    ]
    for seq in seqs:
        seq.score_from = 3  # a scored tail of 12 tokens: the last chunk needs 13
        scheduler.add(seq)

    for _ in range(100):
        if not scheduler.has_work:
            break
        chunks = run_step(scheduler)
        assert 0 < sum(len(chunk.token_ids) for chunk in chunks) <= budget
        for chunk in chunks:
            if not chunk.seq.is_prefill:
                scheduler.finish(chunk.seq)
    assert all(seq.status is SequenceStatus.FINISHED for seq in seqs)


def test_with_reuse_generated_a_follow_up_also_reuses_the_decoded_answer() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=64, max_waiting=4, reuse_generated=True)
    first = make_seq(0, 10, max_new_tokens=5)
    scheduler.add(first)
    while first.num_output < 5:
        run_step(scheduler)
    scheduler.finish(first)
    follow_up = Sequence(seq_id=1, prompt_ids=[*first.token_ids, 7, 8, 9], max_new_tokens=10)
    scheduler.add(follow_up)

    [chunk] = scheduler.schedule().chunks

    reused = len(first.prompt_ids) + 4  # the last sampled token was never fed back
    assert follow_up.num_cached == reused
    assert chunk.token_ids == tuple(follow_up.prompt_ids[reused:])


def finish_turn(scheduler: Scheduler, seq: Sequence, num_output: int) -> None:
    scheduler.add(seq)
    while seq.num_output < num_output:
        run_step(scheduler)
    scheduler.finish(seq)


def test_when_idle_a_finished_answer_is_prefilled_again_as_a_prompt() -> None:
    scheduler = Scheduler(
        num_slots=2, token_budget=64, max_waiting=4, prefill_budget_while_decoding=4
    )
    first = make_seq(0, 10, max_new_tokens=6)
    finish_turn(scheduler, first, 6)
    scheduler.take_kv_trims()
    assert scheduler.has_work  # the answer is pending

    steps = []
    while scheduler.has_work:
        steps.append(run_step(scheduler))

    assert [len(chunk.token_ids) for step in steps for chunk in step] == [4, 2]  # chunked
    assert not any(chunk.needs_sample for step in steps for chunk in step)
    assert steps[0][0].start == len(first.prompt_ids)
    assert [(t.slot, t.keep) for t in scheduler.take_kv_trims()] == [(first.slot, 10)]
    follow_up = Sequence(seq_id=1, prompt_ids=[*first.token_ids, 1, 2, 3], max_new_tokens=5)
    scheduler.add(follow_up)
    [chunk] = scheduler.schedule().chunks
    assert follow_up.num_cached == len(first.token_ids)  # prompt and answer, exactly as cold
    assert chunk.token_ids == (1, 2, 3)


def test_a_new_request_stops_the_background_prefill_and_keeps_what_it_computed() -> None:
    scheduler = Scheduler(
        num_slots=1, token_budget=64, max_waiting=4, prefill_budget_while_decoding=4
    )
    first = make_seq(0, 10, max_new_tokens=9)
    finish_turn(scheduler, first, 9)
    [background] = run_step(scheduler)  # 4 of the 9 answer tokens
    assert background.seq.is_background

    follow_up = Sequence(seq_id=1, prompt_ids=[*first.token_ids, 1, 2], max_new_tokens=5)
    scheduler.add(follow_up)
    [chunk] = scheduler.schedule().chunks

    assert background.seq.status is SequenceStatus.FINISHED
    assert follow_up.slot == 0 and follow_up.num_cached == 14
    assert chunk.token_ids == (*first.output_ids[4:], 1, 2)


def test_nothing_is_prefilled_in_the_background_with_reuse_generated() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=64, max_waiting=4, reuse_generated=True)
    finish_turn(scheduler, make_seq(0, 10, max_new_tokens=6), 6)

    assert not scheduler.has_work


def decoding(scheduler: Scheduler, *seqs: Sequence) -> None:
    """Add `seqs` and run steps until each has sampled its first token."""
    for seq in seqs:
        scheduler.add(seq)
    while any(not seq.output_ids for seq in seqs):
        run_step(scheduler)


def test_an_end_of_generation_token_ends_the_sequence_without_joining_its_output() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=16, max_waiting=1)
    seq = make_seq(0, 4)
    decoding(scheduler, seq)
    plan = scheduler.schedule()

    outputs = scheduler.postprocess(plan, 0, [sample(99, is_end=True)])

    assert outputs == [TokenOutput(seq, None, "stop")]
    assert seq.output_ids == [SAMPLED_TOKEN]
    assert seq.status is SequenceStatus.FINISHED
    assert scheduler.num_slots_free == 1


def test_max_new_tokens_ends_the_sequence_on_its_last_token_with_length() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=16, max_waiting=1)
    seq = make_seq(0, 4, max_new_tokens=2)
    decoding(scheduler, seq)
    plan = scheduler.schedule()

    outputs = scheduler.postprocess(plan, 0, [sample(8)])

    assert outputs == [TokenOutput(seq, 8, "length")]
    assert seq.output_ids == [SAMPLED_TOKEN, 8]
    assert seq.status is SequenceStatus.FINISHED


def test_a_scoring_sequence_ends_once_its_tail_is_scored() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=16, max_waiting=1)
    seq = Sequence(seq_id=0, prompt_ids=[1, 2, 3, 4, 5], max_new_tokens=0, score_from=3)
    scheduler.add(seq)
    plan = scheduler.schedule()

    outputs = scheduler.postprocess(plan, 0, [None])

    assert outputs == [TokenOutput(seq, None, "stop")]
    assert seq.status is SequenceStatus.FINISHED
    assert seq.output_ids == []


def test_a_lone_decoding_sequence_is_planned_several_steps_per_runner_call() -> None:
    scheduler = Scheduler(num_slots=4, token_budget=16, max_waiting=4)
    alone = make_seq(0, 4)
    decoding(scheduler, alone)

    assert scheduler.schedule().num_steps == MULTI_STEP_TOKENS


def test_several_decoding_sequences_share_the_multi_step_tokens() -> None:
    scheduler = Scheduler(num_slots=4, token_budget=16, max_waiting=4)
    decoding(scheduler, make_seq(0, 4), make_seq(1, 4))

    assert scheduler.schedule().num_steps == MULTI_STEP_TOKENS // 2


def test_a_waiting_or_arriving_request_keeps_the_plan_to_one_step() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=16, max_waiting=4)
    decoding(scheduler, make_seq(0, 4))

    assert scheduler.schedule(num_arriving=1).num_steps == 1
    scheduler.add(make_seq(1, 4))  # waits: the only slot is taken
    assert scheduler.schedule().num_steps == 1


def test_a_plan_never_has_more_steps_than_a_sequence_may_still_generate() -> None:
    scheduler = Scheduler(num_slots=1, token_budget=16, max_waiting=1)
    decoding(scheduler, make_seq(0, 4, max_new_tokens=3))

    assert scheduler.schedule().num_steps == 2


def test_prompt_chunks_are_planned_one_step_at_a_time() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=16, max_waiting=4)
    scheduler.add(make_seq(0, 4))

    assert scheduler.schedule().num_steps == 1


def test_each_further_step_of_a_plan_feeds_the_token_sampled_before() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=16, max_waiting=4)
    first, second = make_seq(0, 4), make_seq(1, 4)
    decoding(scheduler, first, second)
    plan = scheduler.schedule()
    assert plan.num_steps == 2

    step0 = scheduler.postprocess(plan, 0, [sample(10), sample(20)])
    step1 = scheduler.postprocess(plan, 1, [sample(11), sample(21)])

    assert [o.token_id for o in step0 + step1] == [10, 20, 11, 21]
    assert first.output_ids == [SAMPLED_TOKEN, 10, 11]
    assert first.num_computed == len(first.prompt_ids) + 2  # SAMPLED_TOKEN and 10 fed back
    assert second.output_ids == [SAMPLED_TOKEN, 20, 21]


def test_a_sequence_finished_between_the_steps_of_a_plan_takes_no_more_tokens() -> None:
    scheduler = Scheduler(num_slots=2, token_budget=16, max_waiting=4)
    stopped, going = make_seq(0, 4), make_seq(1, 4)
    decoding(scheduler, stopped, going)
    plan = scheduler.schedule()
    scheduler.postprocess(plan, 0, [sample(10), sample(20)])
    scheduler.finish(stopped)  # the loop saw a stop string in its text

    outputs = scheduler.postprocess(plan, 1, [sample(11), sample(21)])

    assert outputs == [TokenOutput(going, 21)]
    assert stopped.output_ids == [SAMPLED_TOKEN, 10]


GAP_COST = StepCost(fixed_s=0.010, per_decode_row_s=0.010, per_prompt_token_s=0.002)
"""A step cost under which a 0.2 s step beside k decodes holds (0.19 - 0.01 k) / 0.002 tokens."""


def test_beside_running_streams_a_step_stays_within_the_token_gap_target() -> None:
    scheduler = Scheduler(num_slots=4, token_budget=512, max_waiting=8, max_token_gap_s=0.2)
    streams = [make_seq(i, 4) for i in range(2)]
    for seq in streams:
        scheduler.add(seq)
    complete_step(scheduler, list(scheduler.schedule(step_cost=GAP_COST).chunks))
    long_prompt = make_seq(9, 400)
    scheduler.add(long_prompt)

    while long_prompt.is_prefill:
        chunks = list(scheduler.schedule(step_cost=GAP_COST).chunks)
        decodes = sum(not chunk.seq.is_prefill for chunk in chunks)
        prompt_tokens = sum(len(c.token_ids) for c in chunks if c.seq is long_prompt)
        assert decodes == 2  # each stream gets its token every step
        assert GAP_COST.seconds(decodes, prompt_tokens) <= 0.2 + 1e-9
        complete_step(scheduler, chunks)


def steps_to_admit_a_burst(scheduler: Scheduler) -> int:
    """Steps until seven 40-token prompts, arriving while one stream decodes, have each got
    their first token."""
    first = make_seq(0, 40)
    scheduler.add(first)
    complete_step(scheduler, list(scheduler.schedule(step_cost=GAP_COST).chunks))
    burst = [make_seq(i, 40) for i in range(1, 8)]
    for seq in burst:
        scheduler.add(seq)
    num_steps = 0
    while any(seq.num_output == 0 for seq in burst):
        complete_step(scheduler, list(scheduler.schedule(step_cost=GAP_COST).chunks))
        num_steps += 1
        assert num_steps <= 20, "the burst was not admitted"
    return num_steps


def test_a_burst_beside_a_stream_is_admitted_in_as_few_steps_as_the_gap_target_allows() -> None:
    by_target = Scheduler(num_slots=8, token_budget=512, max_waiting=8, max_token_gap_s=0.2)
    fixed = Scheduler(
        num_slots=8, token_budget=512, max_waiting=8, prefill_budget_while_decoding=32
    )

    # 280 prompt tokens, 7 requests awaiting their first token beside 1 stream: the target
    # yields and one step prefills them all; a fixed cap of 32 still feeds 32 a step.
    assert steps_to_admit_a_burst(by_target) == 1
    assert steps_to_admit_a_burst(fixed) == 9


def test_the_gap_target_yields_only_to_more_awaiting_requests_than_running_streams() -> None:
    scheduler = Scheduler(num_slots=8, token_budget=512, max_waiting=8, max_token_gap_s=0.2)
    bounded = scheduler.prefill_budget(2, GAP_COST)

    assert bounded == 85  # (0.2 - 0.01 - 2 x 0.01) / 0.002
    assert scheduler.prefill_budget(2, GAP_COST, num_awaiting_first=2) == bounded
    assert scheduler.prefill_budget(2, GAP_COST, num_awaiting_first=3) == 512


def test_long_prompts_that_do_not_fit_in_one_step_never_lift_the_gap_target() -> None:
    """Three 400-token prompts beside one stream: lifting the target would stall the stream
    for several full steps, so every step stays within it."""
    scheduler = Scheduler(num_slots=8, token_budget=512, max_waiting=8, max_token_gap_s=0.2)
    stream = make_seq(0, 4)
    scheduler.add(stream)
    complete_step(scheduler, list(scheduler.schedule(step_cost=GAP_COST).chunks))
    for i in range(1, 4):
        scheduler.add(make_seq(i, 400))

    chunks = list(scheduler.schedule(step_cost=GAP_COST).chunks)

    prompt_tokens = sum(len(c.token_ids) for c in chunks if c.seq is not stream)
    assert prompt_tokens > 0 and GAP_COST.seconds(1, prompt_tokens) <= 0.2 + 1e-9


def test_scoring_prompts_beside_a_stream_stay_within_the_gap_target() -> None:
    scheduler = Scheduler(num_slots=8, token_budget=512, max_waiting=8, max_token_gap_s=0.2)
    stream = make_seq(0, 4)
    scheduler.add(stream)
    complete_step(scheduler, list(scheduler.schedule(step_cost=GAP_COST).chunks))
    for i in range(1, 6):
        scoring = make_seq(i, 60)
        scoring.score_from = 50
        scheduler.add(scoring)

    chunks = list(scheduler.schedule(step_cost=GAP_COST).chunks)

    prompt_tokens = sum(len(c.token_ids) for c in chunks if c.seq is not stream)
    assert GAP_COST.seconds(1, prompt_tokens) <= 0.2 + 1e-9


def test_a_fixed_prefill_cap_still_bounds_the_latency_budget() -> None:
    scheduler = Scheduler(
        num_slots=2,
        token_budget=512,
        max_waiting=2,
        prefill_budget_while_decoding=8,
        max_token_gap_s=0.2,
    )

    assert scheduler.prefill_budget(1, GAP_COST) == 8
    assert scheduler.prefill_budget(0, GAP_COST) == 512  # nothing decodes: no gap to keep


def test_when_decodes_alone_fill_the_target_a_prompt_still_gets_the_floor() -> None:
    scheduler = Scheduler(num_slots=40, token_budget=512, max_waiting=2, max_token_gap_s=0.2)

    assert scheduler.prefill_budget(30, GAP_COST) == PREFILL_FLOOR


def test_a_burst_takes_every_free_slot_at_once_though_the_budget_prefills_only_some() -> None:
    scheduler = Scheduler(
        num_slots=8, token_budget=512, max_waiting=8, prefill_budget_while_decoding=32
    )
    first = make_seq(0, 40)
    scheduler.add(first)
    complete_step(scheduler, list(scheduler.schedule(step_cost=GAP_COST).chunks))
    burst = [make_seq(i, 40) for i in range(1, 8)]
    for seq in burst:
        scheduler.add(seq)

    plan = scheduler.schedule(step_cost=GAP_COST)

    assert not scheduler.waiting and scheduler.num_slots_free == 0
    assert {chunk.seq.seq_id for chunk in plan.chunks} < {seq.seq_id for seq in [first, *burst]}
    assert plan.num_steps == 1


def scoring_seq(seq_id: int, prefix: list[int], tail: list[int]) -> Sequence:
    """A scoring sequence: `prefix` (an option's task, say), then the scored `tail`."""
    return Sequence(
        seq_id=seq_id, prompt_ids=prefix + tail, max_new_tokens=0, score_from=len(prefix)
    )


def test_scoring_sequences_run_in_the_scoring_slots_beside_a_full_set_of_conversations() -> None:
    scheduler = Scheduler(
        num_slots=1, token_budget=64, max_waiting=0, num_scoring_slots=2, scoring_context_length=16
    )
    conversation = make_seq(0, 4)
    scheduler.add(conversation)
    run_step(scheduler)
    first, second = scoring_seq(1, [1, 2, 3], [4, 5]), scoring_seq(2, [6, 7, 8], [9])

    assert not scheduler.can_accept  # the conversation holds the only slot, and none may wait
    assert scheduler.accepts(first)  # the scoring slots are free
    scheduler.add(first)
    scheduler.add(second)
    chunks = run_step(scheduler)

    assert ids(chunks) == [0, 1, 2]
    assert (first.slot, second.slot) == (1, 2)  # numbered after the conversation slots
    assert first.status is second.status is SequenceStatus.FINISHED
    assert scheduler.num_slots_free == 0
    assert not scheduler.can_accept  # a conversation finds no slot, and no room to wait
    assert scheduler.accepts(scoring_seq(3, [1, 2, 3], [4]))


def test_a_scoring_prompt_longer_than_a_scoring_slot_runs_in_a_conversation_slot() -> None:
    scheduler = Scheduler(
        num_slots=1, token_budget=64, max_waiting=2, num_scoring_slots=1, scoring_context_length=4
    )
    long = scoring_seq(0, [1, 2, 3, 4], [5, 6])
    scheduler.add(long)
    run_step(scheduler)

    assert long.slot == 0


def test_an_option_prefix_stays_in_its_scoring_slot_for_the_next_request() -> None:
    scheduler = Scheduler(
        num_slots=1, token_budget=64, max_waiting=4, num_scoring_slots=2, scoring_context_length=32
    )
    tasks = [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]]
    for seq_id, task in enumerate(tasks):
        scheduler.add(scoring_seq(seq_id, task, [1, 2]))
    run_step(scheduler)
    again = [scoring_seq(2 + i, task, [3, 4, 5]) for i, task in enumerate(reversed(tasks))]
    for seq in again:
        scheduler.add(seq)

    chunks = run_step(scheduler)

    assert [seq.num_cached for seq in again] == [5, 5]  # its task but the last token
    assert [len(chunk.token_ids) for chunk in chunks] == [4, 4]  # the scored tail and one before
    assert [seq.slot for seq in again] == [2, 1]


def test_a_waiting_scoring_sequence_does_not_hold_back_a_conversation() -> None:
    scheduler = Scheduler(
        num_slots=1, token_budget=64, max_waiting=4, num_scoring_slots=1, scoring_context_length=16
    )
    scheduler.add(scoring_seq(0, [1, 2, 3], [4, 5]))
    scheduler.add(scoring_seq(1, [6, 7, 8], [9, 10]))  # waits for the one scoring slot
    conversation = make_seq(2, 4)
    scheduler.add(conversation)

    chunks = run_step(scheduler)

    assert ids(chunks) == [0, 2]
    assert [seq.seq_id for seq in scheduler.waiting] == [1]
    assert conversation.slot == 0
