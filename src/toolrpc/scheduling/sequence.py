"""A sequence (one request's tokens as the scheduler sees them) and the values of one step:
the plan the scheduler hands out and the tokens it takes back."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from toolrpc.types import EngineFinishReason

MIN_FINAL_CHUNK = 2
"""Prompt tokens always computed together in the chunk whose last row is sampled (see the
scheduler's docstring on exact prefix reuse)."""


MIN_PREFILL_CHUNK = 4
"""The smallest cap on prompt tokens a step beside running decodes may take
(`prefill_budget_while_decoding`, `--prefill-chunk`): with less, a prompt chunk could not both
progress and leave a final chunk of `MIN_FINAL_CHUNK`."""


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """The prompt and generated tokens of one request, and how many of them are in the KV cache.

    `num_computed` counts the leading tokens whose keys and values the runner holds for this
    sequence's slot; the next chunk to run is `token_ids[num_computed:]`, cut to the budget.
    """

    seq_id: int
    prompt_ids: list[int]
    max_new_tokens: int
    output_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    slot: int | None = None
    num_computed: int = 0
    num_cached: int = 0
    score_from: int | None = None
    """For a scoring sequence: the prompt position where the scored continuation starts."""
    is_background: bool = False
    """A scheduler-made sequence that prefills a finished answer again while the engine idles
    (scheduler docstring); it has no request and samples nothing."""

    @property
    def is_scoring(self) -> bool:
        """True for a sequence that scores its prompt's tail instead of generating."""
        return self.score_from is not None

    @property
    def min_final_chunk(self) -> int:
        """Prompt tokens the last prompt chunk must hold: 2, or the whole scored tail (its
        rows' logits are read in one step) plus the row before it."""
        if self.score_from is None:
            return MIN_FINAL_CHUNK
        return max(MIN_FINAL_CHUNK, len(self.prompt_ids) - self.score_from + 1)

    @property
    def token_ids(self) -> list[int]:
        """Prompt followed by the generated tokens."""
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_pending(self) -> int:
        """Tokens not yet in the KV cache (1 while decoding: the last sampled token)."""
        return self.num_tokens - self.num_computed

    @property
    def is_prefill(self) -> bool:
        """True while part of the prompt is still to be computed."""
        return self.num_computed < len(self.prompt_ids)

    @property
    def num_output(self) -> int:
        """Generated tokens so far."""
        return len(self.output_ids)


@dataclass(frozen=True)
class ScheduledChunk:
    """Tokens of one sequence to run in this step, starting at position `start`.

    When `needs_sample` is set the chunk reaches the end of the sequence's known tokens, so the
    runner samples the next token from the logits of its last position.
    """

    seq: Sequence
    start: int
    token_ids: tuple[int, ...]

    @property
    def needs_sample(self) -> bool:
        """Whether this chunk completes the sequence's known tokens (and asks for a token)."""
        is_end = self.start + len(self.token_ids) == self.seq.num_tokens
        return is_end and not self.seq.is_background


@dataclass(frozen=True)
class StepPlan:
    """What the runner should compute next: `chunks` in one step, then, when `num_steps` > 1
    (every chunk a single decode token), up to `num_steps - 1` further decode steps, each
    feeding every sequence the token it sampled in the step before."""

    chunks: tuple[ScheduledChunk, ...]
    num_steps: int = 1


@dataclass(frozen=True)
class SampledToken:
    """A token the runner sampled for a chunk, and whether it ends generation (EOS/EOT)."""

    token_id: int
    is_end_of_generation: bool


@dataclass(frozen=True)
class TokenOutput:
    """What one step gave one request's sequence.

    `token_id` is the token appended to its output (None when the step ended it without one:
    an end-of-generation token, or a scoring sequence whose tail was scored). `finish_reason`
    is set when the step ended the sequence: "stop" at end of generation or after scoring,
    "length" when the output reached `max_new_tokens`.
    """

    seq: Sequence
    token_id: int | None
    finish_reason: EngineFinishReason | None = None
