"""A conversation's current user turn, read once per step.

A user turn starts at its user message. Each assistant message with tool calls after it is one
tool-call round; each tool message answers one of those calls. Every part of the chat layer that
asks about the turn (the loop guard, the router, grounding, the step) reads this one value
instead of scanning the history itself.

`append_inputs` is the other direction: it adds what a client sends with a step (tool results,
a new user message) to a history, checking the results against the calls they answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from toolrpc.errors import ToolProtocolError
from toolrpc.protocol import Message, ToolCall, ToolResult
from toolrpc.types import JSONValue


def call_key(call: ToolCall) -> str:
    """A canonical key of a call: its name and its arguments as sorted, compact JSON."""
    return call.name + ":" + json.dumps(call.arguments, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Exchange:
    """One tool result of the turn and the call it answers (None when no call of the turn has
    its id: a client may send a history that was edited)."""

    call: ToolCall | None
    name: str
    content: str


@dataclass(frozen=True)
class Turn:
    """What the current user turn holds (see the module docstring)."""

    request: str | None
    """The user message that opened the turn (None: the history has no user message)."""
    num_rounds: int
    """Tool-call rounds so far: assistant messages with calls after the user message."""
    exchanges: tuple[Exchange, ...]
    """The turn's tool results, in order, with their calls."""
    pending: tuple[ToolCall, ...]
    """Calls of the last assistant message that no tool message answers yet."""
    sources: tuple[str, ...]
    """Texts argument values may be grounded in (chat/grounding.py): the most recent user
    message first, then the earlier ones, then the tool results from the latest back."""
    answered: frozenset[str]
    """`call_key`s of the turn's calls that have a result."""

    @classmethod
    def of(cls, history: Sequence[Message]) -> Turn:
        """Read the turn that ends `history`."""
        start = max((i for i, m in enumerate(history) if m.role == "user"), default=0)
        turn = history[start:]
        calls = {call.id: call for m in turn for call in m.tool_calls or ()}
        exchanges = tuple(
            Exchange(
                call=calls.get(m.tool_call_id or ""),
                name=m.name or _name_of(calls.get(m.tool_call_id or "")),
                content=m.content or "",
            )
            for m in turn
            if m.role == "tool"
        )
        answered_ids = {m.tool_call_id for m in turn if m.role == "tool"}
        users = [m.content for m in history if m.role == "user" and m.content]
        results = [m.content for m in history if m.role == "tool" and m.content]
        return cls(
            request=next((m.content for m in reversed(history) if m.role == "user"), None),
            num_rounds=sum(1 for m in turn if m.role == "assistant" and m.tool_calls),
            exchanges=exchanges,
            pending=_pending(turn),
            sources=(*reversed(users), *reversed(results)),
            answered=frozenset(call_key(c) for c in calls.values() if c.id in answered_ids),
        )

    def is_repeat(self, call: ToolCall) -> bool:
        """True when an identical call (same name and arguments) was answered in this turn."""
        return call_key(call) in self.answered

    def check_answered(self) -> None:
        """Raise `ToolProtocolError` when the last assistant message's calls still wait for
        results: a step cannot continue a conversation whose tools have not answered."""
        if self.pending:
            missing: list[JSONValue] = [call.id for call in self.pending]
            raise ToolProtocolError(
                "the last assistant message asked for tool calls "
                f"({', '.join(map(str, missing))}); send their tool_results",
                {"missing_tool_call_ids": missing},
            )


def _name_of(call: ToolCall | None) -> str:
    return call.name if call is not None else "a tool"


def _pending(turn: Sequence[Message]) -> tuple[ToolCall, ...]:
    """Calls of the last assistant message of `turn` with no tool message after it."""
    for index in range(len(turn) - 1, -1, -1):
        message = turn[index]
        if message.role == "assistant":
            answered = {m.tool_call_id for m in turn[index + 1 :] if m.role == "tool"}
            return tuple(call for call in message.tool_calls or () if call.id not in answered)
        if message.role == "user":
            return ()
    return ()


def with_system(history: Sequence[Message], system: str | None) -> list[Message]:
    """`history` with `system` as its system prompt: it replaces the content of a system message
    that opens the history, or becomes the first message (one system prompt, the most many
    templates accept; a client may change it between calls). None leaves the history as is."""
    if system is None:
        return list(history)
    if history and history[0].role == "system":
        return [history[0].model_copy(update={"content": system}), *history[1:]]
    return [Message(role="system", content=system), *history]


def append_inputs(
    history: Sequence[Message], tool_results: Sequence[ToolResult], message: str | None
) -> list[Message]:
    """`history` with one tool message per result and then the new user message.

    Every call of the last assistant message that waits for a result needs exactly one; raises
    `ToolProtocolError` for a result no pending call has, a duplicate, or a missing one (a new
    message while calls wait for results included).
    """
    conversation = list(history)
    turn = Turn.of(history)
    if tool_results:
        conversation.extend(_tool_messages(turn.pending, tool_results))
    else:
        turn.check_answered()
    return conversation + ([Message(role="user", content=message)] if message is not None else [])


def _tool_messages(pending: Sequence[ToolCall], results: Sequence[ToolResult]) -> list[Message]:
    by_id = {call.id: call for call in pending}
    seen: set[str] = set()
    messages: list[Message] = []
    for result in results:
        call = by_id.get(result.tool_call_id)
        if call is None or result.tool_call_id in seen:
            problem = "duplicate result for" if call else "no pending tool call with"
            raise ToolProtocolError(
                f"{problem} id {result.tool_call_id!r}",
                {"tool_call_id": result.tool_call_id, "pending": list(by_id)},
            )
        seen.add(result.tool_call_id)
        content = (
            result.content
            if isinstance(result.content, str)
            else json.dumps(result.content, ensure_ascii=False)
        )
        if result.is_error:
            content = f"ERROR: {content}"
        messages.append(Message(role="tool", content=content, tool_call_id=call.id, name=call.name))
    missing: list[JSONValue] = [call_id for call_id in by_id if call_id not in seen]
    if missing:
        raise ToolProtocolError(
            f"missing tool_results for {', '.join(map(str, missing))}",
            {"missing_tool_call_ids": missing},
        )
    return messages
