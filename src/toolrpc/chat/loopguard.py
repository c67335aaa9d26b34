"""The loop guard: may this turn still call tools, and is a call a repeat?

A turn that reached `max_iterations` tool-call rounds is offered no tools (chat/offer.py), and a
call whose name and arguments equal a call already answered in the turn is not returned (a
model that does not use the result it got tends to ask again, forever). Either way the step
answers in text, with `LOOP_GUARD_NOTE` added to the system prompt (for the prompt only, never
to the history a client gets back), and ends with `finish_reason: "loop_guard"`.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolrpc.chat.turn import Turn, with_system
from toolrpc.protocol import Message, ToolCall

LOOP_GUARD_NOTE = (
    "Tool use is over for this request. Do not call any tool. Answer the user now, "
    "using the tool results above."
)


def may_call_tools(turn: Turn, max_iterations: int) -> bool:
    """True while the turn has had fewer than `max_iterations` tool-call rounds."""
    return turn.num_rounds < max_iterations


def repeated_calls(calls: Sequence[ToolCall], turn: Turn) -> list[ToolCall]:
    """The calls that repeat one already answered in the turn."""
    return [call for call in calls if turn.is_repeat(call)]


def guarded(history: Sequence[Message]) -> list[Message]:
    """The history with the loop guard's note added to its system prompt."""
    system = ""
    if history and history[0].role == "system" and history[0].content:
        system = history[0].content + "\n\n"
    return with_system(history, system + LOOP_GUARD_NOTE)
