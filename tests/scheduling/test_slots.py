"""Where a new sequence goes and what of its prompt it reuses: in place, or copied from a busy
slot (scheduling/slots.py), and the scheduler's trims that carry it out."""

from __future__ import annotations

from toolrpc.scheduling.cost import StepCost
from toolrpc.scheduling.scheduler import Scheduler
from toolrpc.scheduling.sequence import SampledToken, Sequence, SequenceStatus
from toolrpc.scheduling.slots import (
    COPIED_PER_PROMPT_TOKEN,
    MIN_COPY_GAIN,
    KvTrim,
    Slot,
    place,
)

SYSTEM = list(range(100, 124))
"""A shared 24-token prefix: a chat template's system prompt."""


def request(seq_id: int, prefix: list[int], num_own: int = 10) -> Sequence:
    """A sequence whose prompt is `prefix` and then `num_own` tokens of its own."""
    own = [10_000 * (seq_id + 1) + i for i in range(num_own)]
    return Sequence(seq_id=seq_id, prompt_ids=[*prefix, *own], max_new_tokens=20)


def sample() -> SampledToken:
    return SampledToken(7, is_end_of_generation=False)


def running_in(slot: Slot, seq: Sequence, num_computed: int) -> Slot:
    """`slot` with `seq` running in it, `num_computed` of its tokens in the KV."""
    seq.status, seq.slot, seq.num_computed = SequenceStatus.RUNNING, slot.index, num_computed
    slot.seq = seq
    return slot


def test_a_prefix_only_a_busy_slot_holds_is_copied_into_an_empty_slot() -> None:
    pool = [Slot(0), Slot(1), Slot(2)]
    holder = request(0, SYSTEM)
    running_in(pool[1], holder, len(holder.prompt_ids))

    placement = place(request(1, SYSTEM), pool, reuse_generated=False)

    assert placement.slot is pool[0]
    assert placement.reused == len(SYSTEM)
    assert placement.kv_trim == KvTrim(slot=0, keep=len(SYSTEM), source=1)


def test_a_copy_leaves_idle_caches_alone_and_takes_the_least_recently_used_slot() -> None:
    older = Slot(0, cached=[1, 2, 3], last_used=1)
    newer = Slot(1, cached=[4, 5, 6], last_used=2)
    holder = request(0, SYSTEM)
    pool = [older, newer, running_in(Slot(2), holder, len(holder.prompt_ids))]

    placement = place(request(1, SYSTEM), pool, reuse_generated=False)

    assert placement.slot is older
    assert placement.source is pool[2]


def test_an_idle_slot_with_the_same_prefix_is_reused_in_place_without_a_copy() -> None:
    idle = Slot(0, cached=request(5, SYSTEM).prompt_ids, last_used=1)
    holder = request(0, SYSTEM)
    pool = [idle, running_in(Slot(1), holder, len(holder.prompt_ids)), Slot(2)]

    placement = place(request(1, SYSTEM), pool, reuse_generated=False)

    assert (placement.slot, placement.reused, placement.source) == (idle, len(SYSTEM), None)


def test_a_copy_saves_at_least_min_copy_gain_tokens() -> None:
    short = SYSTEM[: MIN_COPY_GAIN - 1]
    holder = request(0, short)
    pool = [Slot(0), running_in(Slot(1), holder, len(holder.prompt_ids))]

    placement = place(request(1, short), pool, reuse_generated=False)

    assert (placement.slot, placement.reused, placement.source) == (pool[0], 0, None)


def test_a_long_source_is_not_copied_for_a_short_prefix() -> None:
    holder = request(0, SYSTEM, num_own=len(SYSTEM) * COPIED_PER_PROMPT_TOKEN)
    pool = [Slot(0), running_in(Slot(1), holder, len(holder.prompt_ids))]

    assert place(request(1, SYSTEM), pool, reuse_generated=False).source is None


def test_only_computed_prompt_tokens_of_the_source_count() -> None:
    """Generated tokens' KV is decode-computed (not reused unless `reuse_generated`), and a
    prompt still prefilling holds only its computed part."""
    holder = request(0, SYSTEM, num_own=0)
    holder.output_ids = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    follow_up = Sequence(seq_id=1, prompt_ids=[*holder.token_ids, 1, 2], max_new_tokens=5)
    pool = [Slot(0), running_in(Slot(1), holder, len(holder.token_ids))]

    assert place(follow_up, pool, reuse_generated=False).reused == len(SYSTEM)
    assert place(follow_up, pool, reuse_generated=True).reused == len(holder.token_ids)

    holder.num_computed = 12
    assert place(follow_up, pool, reuse_generated=False).reused == 12


def test_background_prefill_is_never_a_source() -> None:
    background = Sequence(seq_id=-1, prompt_ids=request(0, SYSTEM).prompt_ids, max_new_tokens=0)
    background.is_background = True
    pool = [Slot(0), running_in(Slot(1), background, len(background.prompt_ids))]

    assert place(request(1, SYSTEM), pool, reuse_generated=False).source is None


def test_a_burst_with_one_system_prompt_copies_it_instead_of_prefilling_it_eight_times() -> None:
    """Eight requests arrive while the last one before them holds the shared prefix: each
    prefills only its own tokens, the copies trimmed in order after the holder's own trim."""
    scheduler = Scheduler(num_slots=8, token_budget=512, max_waiting=8)
    first = request(0, SYSTEM)
    scheduler.add(first)
    while first.is_prefill:
        scheduler.postprocess(plan := scheduler.schedule(), 0, [None for _ in plan.chunks])
    scheduler.finish(first)
    scheduler.take_kv_trims()
    burst = [request(i, SYSTEM) for i in range(1, 9)]
    for seq in burst:
        scheduler.add(seq)

    chunks = scheduler.schedule().chunks

    assert sum(len(c.token_ids) for c in chunks) == 8 * 10
    trims = scheduler.take_kv_trims()
    holder_slot = burst[0].slot
    assert trims[0] == KvTrim(holder_slot, len(SYSTEM))
    assert all(t.source == holder_slot and t.keep == len(SYSTEM) for t in trims[1:])
    assert {t.slot for t in trims} == {seq.slot for seq in burst}


def test_a_copy_beside_a_running_stream_takes_its_time_out_of_the_steps_prompt_tokens() -> None:
    """Beside a decoding stream, a step holds the prompt tokens that keep it within the gap
    target (90 here), less the copy's time in prompt tokens (one per 32 positions copied)."""
    cost = StepCost(fixed_s=0.010, per_decode_row_s=0.010, per_prompt_token_s=0.002)
    scheduler = Scheduler(num_slots=3, token_budget=512, max_waiting=4, max_token_gap_s=0.2)
    holder = request(0, SYSTEM, num_own=296)
    scheduler.add(holder)
    while not holder.output_ids:
        plan = scheduler.schedule(step_cost=cost)
        scheduler.postprocess(plan, 0, [sample() if c.needs_sample else None for c in plan.chunks])
    newcomer = request(1, SYSTEM, num_own=100)
    scheduler.add(newcomer)

    chunks = scheduler.schedule(step_cost=cost).chunks

    [decode, prompt] = chunks
    assert decode.seq is holder and len(decode.token_ids) == 1
    assert scheduler.take_kv_trims()[-1].source == holder.slot
    copied = holder.num_computed  # 320 prompt tokens and the first sampled one
    within_gap = cost.prompt_tokens_within(0.2, 1)
    assert len(prompt.token_ids) == within_gap - -(-copied // COPIED_PER_PROMPT_TOKEN)
