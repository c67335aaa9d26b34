"""KV cache memory: bytes a token takes per cache type, and slots that fit a memory budget.

llama.cpp reserves each slot's whole context of KV at start (`kv_unified=False`: one stream
per sequence, which keeps batched greedy output equal to single-sequence output), and its
clearing the cache made every page resident, so resident memory grew with slots x context
whatever the conversations held; the cleared pages are now given back (engines/resident.py),
and the reservation only bounds what becomes resident as sequences write. Per token, each
layer stores a key and a value row of `n_head_kv x head_dim` elements: for SmolLM2-135M (30
layers, 3 KV heads of 64) that is 23,040 bytes at f16 and 12,240 at q8_0 (34 bytes per block
of 32). Measured on the embedded model, resident memory right after creating a context of 4
slots x 4,096 tokens: 513 MB at f16, 429 MB with keys alone at q8_0, 345 MB with keys and
values at q8_0 (the model alone: 151 MB), before the pages were given back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KvCacheType = Literal["f16", "q8_0"]
KV_CACHE_TYPES: tuple[KvCacheType, ...] = ("f16", "q8_0")

BYTES_PER_ELEMENT: dict[KvCacheType, float] = {"f16": 2.0, "q8_0": 34 / 32}
"""GGML storage per element: q8_0 keeps a block of 32 int8 values and one f16 scale."""

MAX_SLOTS = 64
"""Most sequences a memory budget is turned into (`--parallel` has the same bound)."""

SCORING_CONTEXT_LENGTH = 512
"""Tokens of a scoring slot (`--scoring-slots`; llama.cpp pads a sequence's context to a
multiple of 256): the tool router's prompts are a tool's task and the request (at most 300
characters), or the request and a tool's line, or the answer option with this turn's results
(at most 600 characters); a longer one runs in a conversation's slot."""


@dataclass(frozen=True)
class KvShape:
    """What one token's KV holds: `num_layers` x (key and value rows of `num_kv_heads` heads)."""

    num_layers: int
    num_kv_heads: int
    key_head_dim: int
    value_head_dim: int

    def bytes_per_token(self, kv_type: KvCacheType) -> int:
        """KV bytes of one token in every layer, keys and values stored as `kv_type`."""
        elements = self.num_layers * self.num_kv_heads * (self.key_head_dim + self.value_head_dim)
        return round(elements * BYTES_PER_ELEMENT[kv_type])


def slots_within(
    memory_bytes: int, context_length: int, bytes_per_token: int, *, max_slots: int = MAX_SLOTS
) -> int:
    """How many slots of `context_length` tokens fit in `memory_bytes` of KV, at most
    `max_slots`. Raises `ValueError` when not even one fits (the message says how much one
    needs)."""
    per_slot = context_length * bytes_per_token
    slots = min(memory_bytes // per_slot, max_slots)
    if slots < 1:
        need_mib = per_slot / 2**20
        raise ValueError(
            f"one conversation of {context_length} tokens needs {need_mib:.1f} MiB of KV; "
            f"the budget is {memory_bytes / 2**20:.1f} MiB"
        )
    return slots
