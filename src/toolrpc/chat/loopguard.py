"""The loop guard: may this turn still call tools, and is a call a repeat?

A user turn starts at its user message. Each assistant message with tool calls after it is one
tool-call round. The guard stops a turn that reached `max_iterations` rounds, and any call whose
name and arguments equal a call already answered in the turn (a model that does not use the
result it got tends to ask again, forever).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from toolrpc.protocol import Message, ToolCall


def call_key(name: str, arguments: object) -> str:
    """A canonical key of a call: its name and its arguments as sorted, compact JSON."""
    return name + ":" + json.dumps(arguments, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TurnState:
    """What the current user turn has done so far."""

    num_rounds: int
    answered: frozenset[str]

    @classmethod
    def of(cls, history: Sequence[Message]) -> TurnState:
        """The state of the turn that ends `history` (messages after the last user message)."""
        start = 0
        for index, message in enumerate(history):
            if message.role == "user":
                start = index
        turn = history[start:]
        answered_ids = {m.tool_call_id for m in turn if m.role == "tool"}
        rounds = [m for m in turn if m.role == "assistant" and m.tool_calls]
        answered = frozenset(
            call_key(call.name, call.arguments)
            for message in rounds
            for call in message.tool_calls or ()
            if call.id in answered_ids
        )
        return cls(num_rounds=len(rounds), answered=answered)

    def may_call_tools(self, max_iterations: int) -> bool:
        """True while the turn has had fewer than `max_iterations` tool-call rounds."""
        return self.num_rounds < max_iterations

    def is_repeat(self, call: ToolCall) -> bool:
        """True when an identical call was already answered in this turn."""
        return call_key(call.name, call.arguments) in self.answered
