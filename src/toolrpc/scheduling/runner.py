"""The ModelRunner seam: what a local backend gives the scheduler's loop.

A runner holds one model and a KV cache with `num_slots` independent sequences, and may hold
`num_scoring_slots` more for scoring prompts (short: the tool router's), numbered after them.
The loop calls it from a single worker thread, one method at a time, so implementations need
no locking; every method may block (they never run on the event loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from toolrpc.generation import ContinuationScore, SamplingParams
from toolrpc.types import JSONObject


class TokenSampler(Protocol):
    """Per-sequence sampling state (random generator, grammar) owned by a runner."""

    def close(self) -> None:
        """Release the sampler's native resources."""
        ...


@dataclass(frozen=True)
class RunnerChunk:
    """Tokens to feed into `slot` at positions `start, start+1, ...`.

    When `sampler` is set, the runner samples the next token from the last position's logits.
    When `score_from` is set, the chunk ends a scoring prompt: the runner sums the
    log-probabilities of the tokens at positions `score_from` and after, each given the ones
    before it (every one of them is in this chunk).
    """

    slot: int
    start: int
    token_ids: tuple[int, ...]
    sampler: TokenSampler | None
    score_from: int | None = None

    @property
    def scored_rows(self) -> range:
        """Rows (indices into `token_ids`) whose logits score the token after them: from the row
        before position `score_from` to the last but one; empty unless the chunk scores."""
        if self.score_from is None:
            return range(0)
        return range(max(0, self.score_from - 1 - self.start), len(self.token_ids) - 1)

    @property
    def rows_with_logits(self) -> range:
        """Rows whose logits the runner must compute: the scored rows, the last row when the
        chunk samples, else none (a prompt chunk only fills the KV cache)."""
        if self.score_from is not None:
            return self.scored_rows
        if self.sampler is not None:
            return range(len(self.token_ids) - 1, len(self.token_ids))
        return range(0)


class ModelRunner(Protocol):
    """One model, one KV cache of `num_slots` sequences, stepped a batch at a time."""

    @property
    def num_slots(self) -> int:
        """How many sequences the KV cache holds at once."""
        ...

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold (prompt plus output)."""
        ...

    @property
    def num_scoring_slots(self) -> int:
        """Further sequences, numbered after the `num_slots`, that hold scoring prompts only
        (of at most `scoring_context_length` tokens); 0 when scoring shares the slots."""
        ...

    @property
    def scoring_context_length(self) -> int:
        """Tokens one scoring slot may hold (0 without scoring slots)."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens in the text are parsed)."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for in generated text (may be part of a UTF-8 character)."""
        ...

    def is_end_of_generation(self, token_id: int) -> bool:
        """True for end-of-sequence / end-of-turn tokens."""
        ...

    def new_sampler(self, sampling: SamplingParams, json_schema: JSONObject | None) -> TokenSampler:
        """A sampler for one sequence. Raises `ValueError` for a schema it cannot enforce."""
        ...

    def step(self, chunks: list[RunnerChunk]) -> list[int | ContinuationScore | None]:
        """Run one batch; return, per chunk, the sampled token, the score of a scoring chunk,
        or None."""
        ...

    def trim_slot(self, slot: int, keep: int) -> None:
        """Drop `slot`'s KV cache from position `keep` on (0: all of it)."""
        ...

    def copy_slot(self, source: int, slot: int, keep: int) -> None:
        """Replace `slot`'s KV cache with the first `keep` positions of `source`'s, byte for
        byte (two slots of one pool: both conversation slots, or both scoring slots)."""
        ...

    def close(self) -> None:
        """Release the model and the KV cache."""
        ...
