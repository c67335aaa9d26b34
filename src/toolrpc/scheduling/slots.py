"""Slots and prefix reuse: which slot a new sequence takes, and what of its prompt is reused.

Pure, as the scheduler is: slots, token lists and the edits the runner must make to its KV
cache before the next step (`KvTrim`).

A slot whose sequence finished keeps the KV of its prompt. A new sequence goes to the idle slot
that shares the longest prefix with its prompt (the previous turn of the same conversation, a
shared system prompt and tool block), and only the rest is prefilled; with no useful match it
takes an empty slot, else the least recently used one.

A prefix held by a *busy* slot is copied: when a running sequence's computed prompt shares more
with the new prompt than any idle slot does (eight clients arriving together with one system
prompt, of which only the slot that served the last request holds the KV), the new sequence
takes an empty (else the least recently used) slot and the runner copies the running
sequence's KV into it, then drops what follows the shared prefix (`KvTrim.source`). The copy
moves bytes, so the reused KV is what prefilling would have computed, and the same rule as
reuse in place decides which tokens count (prompt tokens, generated ones only with
`reuse_generated`). A runner copies a sequence whole (llama.cpp's sequence state holds every
position, the one that follows the shared prefix too), so a copy is made only where it saves
more than it costs: at least `MIN_COPY_GAIN` prompt tokens, and no more than
`COPIED_PER_PROMPT_TOKEN` positions copied per prompt token saved. Measured with llama.cpp on
the embedded model, two cores: a 345-token sequence copied and trimmed in 18.6 ms (54 us a
position), where its 24-token shared prefix took 118.6 ms to prefill (4.9 ms a token, ~90x a
copied position). A copy takes time in the step that makes it, so the scheduler counts it
against that step's prompt tokens beside running streams (`Placement.copy_cost`, one prompt
token per `COPIED_PER_PROMPT_TOKEN` positions, rounded up: never more than it saves, and
about three times what it costs on this machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolrpc.scheduling.sequence import Sequence

MIN_COPY_GAIN = 8
"""Fewest prompt tokens a copy from a busy slot must save (module docstring)."""

COPIED_PER_PROMPT_TOKEN = 32
"""Most positions a copy may move per prompt token it saves: a copied position cost ~1/90 of a
prefilled token (module docstring), so a copy pays for itself well before this bound."""


@dataclass(frozen=True)
class KvTrim:
    """Keep only the first `keep` positions of `slot`'s KV cache (0: empty it); with `source`,
    the slot's own KV is dropped and those positions are copied from slot `source` (of the
    same pool) first."""

    slot: int
    keep: int
    source: int | None = None


@dataclass(eq=False)
class Slot:
    """One sequence's room in the KV cache: who runs in it, or which tokens it still holds."""

    index: int
    seq: Sequence | None = None
    cached: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    """Tokens after `cached` of the slot's last turn, whose KV is not computed as a prompt's."""
    last_used: int = -1


@dataclass(frozen=True)
class Placement:
    """Where a new sequence goes: `slot`, with its first `reused` prompt tokens in the KV
    already, copied from `source` when that is set (module docstring)."""

    slot: Slot
    reused: int
    source: Slot | None = None

    @property
    def copy_cost(self) -> int:
        """The copy's time in prompt tokens (module docstring); 0 without a copy."""
        if self.source is None or self.source.seq is None:
            return 0
        return -(-self.source.seq.num_computed // COPIED_PER_PROMPT_TOKEN)

    @property
    def kv_trim(self) -> KvTrim:
        """The KV edit that makes the slot hold exactly the reused prefix."""
        source = self.source.index if self.source is not None else None
        return KvTrim(self.slot.index, self.reused, source)


def common_prefix_len(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of `a` and `b`, at most `limit`."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def reusable(seq: Sequence, *, reuse_generated: bool) -> list[int]:
    """The tokens of `seq` whose KV another sequence may reuse: its computed prompt tokens, and
    its computed generated ones too with `reuse_generated` (decode-computed KV is not what a
    prompt chunk computes: the scheduler's docstring, exact reuse)."""
    kept = seq.token_ids if reuse_generated else seq.prompt_ids
    return kept[: seq.num_computed]


def num_free(slots: list[Slot]) -> int:
    """Slots of `slots` no request's running sequence holds (background prefill yields)."""
    return sum(slot.seq is None or slot.seq.is_background for slot in slots)


def place(seq: Sequence, pool: list[Slot], *, reuse_generated: bool) -> Placement:
    """The slot of `pool` for `seq` and the prefix it reuses (module docstring); `pool` must
    have an idle slot."""
    idle = [slot for slot in pool if slot.seq is None]
    limit = len(seq.prompt_ids) - seq.min_final_chunk
    best = max(
        idle, key=lambda s: (common_prefix_len(s.cached, seq.prompt_ids, limit), s.last_used)
    )
    reused = common_prefix_len(best.cached, seq.prompt_ids, limit)
    copy = _copy_source(seq, pool, limit, reused, reuse_generated)
    if copy is not None:
        source, shared = copy
        return Placement(_unwanted(idle), shared, source)
    if reused == 0:
        best = _unwanted(idle)
    return Placement(best, reused)


def _copy_source(
    seq: Sequence, pool: list[Slot], limit: int, reused: int, reuse_generated: bool
) -> tuple[Slot, int] | None:
    """The busy slot whose reusable KV shares the most with `seq`'s prompt, and how much, when
    copying it is worth it (module docstring); else None."""
    best: tuple[Slot, int] | None = None
    for slot in pool:
        running = slot.seq
        if running is None or running.is_background:
            continue
        held = reusable(running, reuse_generated=reuse_generated)
        shared = common_prefix_len(held, seq.prompt_ids, limit)
        gain = shared - reused
        if gain < MIN_COPY_GAIN or running.num_computed > gain * COPIED_PER_PROMPT_TOKEN:
            continue
        if best is None or shared > best[1]:
            best = (slot, shared)
    return best


def _unwanted(idle: list[Slot]) -> Slot:
    """The idle slot whose cache is least worth keeping: the lowest empty one (keeps running
    ids together), else the least recently used."""
    return min(idle, key=lambda s: (1, s.last_used) if s.cached else (0, s.index))
