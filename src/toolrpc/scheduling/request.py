"""One request as the batching loop holds it: its sequence and sampler, and the queue its
consumer reads (text chunks, a score, or the error that ended it).

The loop's task puts; the consumer's task takes (`next_item`), each wait bounded by the
request's deadline. The text side (bytes to text, stop strings, the final chunk's usage) is
here too, so the loop only routes each step's tokens to their request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from toolrpc.errors import GenerationCancelled
from toolrpc.generation import Chunk, ContinuationScore, TokenUsage
from toolrpc.scheduling.runner import TokenSampler
from toolrpc.scheduling.sequence import Sequence, TokenOutput
from toolrpc.scheduling.text import TextAssembler
from toolrpc.types import EngineFinishReason


@dataclass(eq=False)
class ActiveRequest:
    """A request from its admission to its end (`is_finished`: it got its last item)."""

    seq: Sequence
    sampler: TokenSampler | None
    text: TextAssembler
    queue: asyncio.Queue[Chunk | ContinuationScore | BaseException] = field(
        default_factory=asyncio.Queue
    )
    is_finished: bool = False
    deadline: float = 0.0
    time_limit_s: float = 0.0
    queued_at: float = 0.0
    is_started: bool = False

    def admitted(self, now: float, time_limit_s: float) -> None:
        """Start the request's clock: it must end within `time_limit_s` of `now`."""
        self.queued_at = now
        self.time_limit_s = time_limit_s
        self.deadline = now + time_limit_s

    async def next_item(self) -> Chunk | ContinuationScore:
        """The request's next item. The deadline bounds each wait, never a `yield`: a consumer
        may read from another task between chunks, and a timeout spanning a yield would cancel
        whichever task entered it instead of ending this stream."""
        try:
            async with asyncio.timeout_at(self.deadline):
                item = await self.queue.get()
        except TimeoutError:
            raise GenerationCancelled(
                f"generation ran past the time limit of {self.time_limit_s:g} s"
            ) from None
        if isinstance(item, BaseException):
            raise item
        return item

    def scored(self, score: ContinuationScore) -> None:
        """Hand over a scoring request's score, its only item."""
        self.queue.put_nowait(score)
        self.is_finished = True

    def take_token(self, output: TokenOutput, token_bytes: bytes) -> None:
        """Turn the sequence's new token (`token_bytes`, empty when the scheduler ended it at end
        of generation) into text; a stop string ends the request here. `is_finished` then says
        the last chunk is queued."""
        if output.token_id is None:
            self._finish(self.text.flush(), "stop")
            return
        text = self.text.push(token_bytes)
        if self.text.is_stopped:
            self._finish(text, "stop")
        elif output.finish_reason is not None:
            self._finish(text + self.text.flush(), output.finish_reason)
        elif text:
            self.queue.put_nowait(Chunk(text))

    def _finish(self, text: str, reason: EngineFinishReason) -> None:
        seq = self.seq
        usage = TokenUsage(len(seq.prompt_ids), seq.num_output, seq.num_cached)
        self.queue.put_nowait(Chunk(text, finish_reason=reason, usage=usage))
        self.is_finished = True
