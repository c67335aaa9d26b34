"""What one conversation step took, measured where the steps run (the service) for whoever
counts them (the server's /metrics): a `StepObserver` seam, so the service keeps no Prometheus
state and the metrics know nothing of steps' insides.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from toolrpc.chat.conversation import (
    DeltaEvent,
    DoneEvent,
    StepEvent,
    StepReport,
    ToolCallsEvent,
)
from toolrpc.errors import ToolRpcError


@dataclass(frozen=True)
class StepRecord:
    """One finished (or failed) step.

    `ttft_s`: time to the first text or tool-call event (None when there was none);
    `e2e_s`: time to the result or the error; `outcome`: the result's finish reason, or
    `error:<code>`; `num_tool_calls`: calls the step returned (each one accepted by the offer).
    """

    ttft_s: float | None
    e2e_s: float
    completion_tokens: int
    outcome: str
    num_tool_calls: int
    num_rejected_calls: int = 0
    """Calls the model wrote that the offer did not accept."""
    route: str | None = None
    """The tool router's decision (`StepReport.route`), None when it did not decide."""


class StepObserver(Protocol):
    """Receives a `StepRecord` for every step."""

    def step_done(self, record: StepRecord) -> None:
        """Record one step; must not raise."""


async def observed(
    events: AsyncGenerator[StepEvent, None],
    observer: StepObserver,
    clock: Callable[[], float] = time.perf_counter,
) -> AsyncGenerator[StepEvent, None]:
    """`events`, unchanged, with one `StepRecord` sent to `observer` when they end.

    A step its client abandoned (the generator closed early) is not recorded: it has no outcome.
    """
    started = clock()
    first: float | None = None
    tokens, calls, outcome = 0, 0, ""
    report = StepReport()
    try:
        async with aclosing(events):
            async for event in events:
                if first is None and isinstance(event, DeltaEvent | ToolCallsEvent):
                    first = clock() - started
                if isinstance(event, DoneEvent):
                    report = event.report
                    tokens = event.result.usage.completion_tokens
                    outcome = event.result.finish_reason
                    if isinstance(event.result.content, list):
                        calls = len(event.result.content)
                yield event
    except ToolRpcError as exc:
        outcome = f"error:{exc.code}"
        raise
    finally:
        if outcome:
            observer.step_done(
                StepRecord(
                    first,
                    clock() - started,
                    tokens,
                    outcome,
                    calls,
                    report.num_rejected_calls,
                    report.route,
                )
            )
