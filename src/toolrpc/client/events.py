"""What the client hands back: stream events, tool exchanges and the result of a whole run.

`stream` yields `StreamEvent`s: `TextDelta`, `ToolCallsRequested`, then `StepDone` (or
`StreamFailed` when the server reports an error after the stream started). `run_stream` yields
`RunEvent`s: those of each step, a `ToolExchange` per call run, and last `RunDone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from toolrpc.errors import ToolRpcError
from toolrpc.protocol import CreateMessageResult, Message, ToolCall, ToolResult
from toolrpc.types import FinishReason


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text, as the model wrote it."""

    text: str


@dataclass(frozen=True)
class ToolCallsRequested:
    """The model asks for these calls (the step then ends with `type: tool_calls`)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class StepDone:
    """The step's result: the same object `create_message` returns."""

    result: CreateMessageResult


@dataclass(frozen=True)
class StreamFailed:
    """The server failed after the stream had started (`{"error", "code"}`); the stream ends."""

    error: ToolRpcError


StreamEvent: TypeAlias = TextDelta | ToolCallsRequested | StepDone | StreamFailed


@dataclass(frozen=True)
class ToolExchange:
    """One call the model asked for and the result the client sent back."""

    call: ToolCall
    result: ToolResult


@dataclass(frozen=True)
class RunResult:
    """A whole turn run to its final answer: the text, the full history to continue from, each
    step's result and each tool exchange, in order."""

    text: str
    history: tuple[Message, ...]
    finish_reason: FinishReason
    iteration_count: int
    steps: tuple[CreateMessageResult, ...]
    exchanges: tuple[ToolExchange, ...]

    @property
    def is_loop_guarded(self) -> bool:
        """True when the server's loop guard ended the turn (a repeated call, or too many
        rounds)."""
        return self.finish_reason == "loop_guard"


@dataclass(frozen=True)
class RunDone:
    """The last event of `run_stream`."""

    result: RunResult


RunEvent: TypeAlias = TextDelta | ToolCallsRequested | StepDone | ToolExchange | RunDone
