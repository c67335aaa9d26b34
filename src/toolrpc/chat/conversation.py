"""One step of a conversation: history and tool results in, final text or tool calls out.

`ChatSession.step` is an async iterator of `StepEvent`s: text deltas as the model writes them,
the tool calls when it asks for tools, and last the full `CreateMessageResult`. `/rpc` consumes
it whole and `/stream` forwards it, so both answer identically by construction.

A step:
1. appends the tool results (checked against the pending calls) and the new user message;
2. decides how tools are offered: not at all (`none`, no tools, or the loop guard's round limit),
   freely (`auto`), or through a JSON Schema constraint (`required`, a named tool);
3. generates, parsing the text with the tool-call state machine, so markup never reaches a delta;
4. returns valid calls (with fresh ids), or when a call repeats one already answered in this turn
   generates once more with tools off and ends the turn with `finish_reason: "loop_guard"`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from toolrpc.chat.constraints import call_schema
from toolrpc.chat.grounding import (
    bounded_parameters,
    grounded_parameters,
    source_texts,
    ungrounded_arguments,
)
from toolrpc.chat.loopguard import TurnState
from toolrpc.chat.prompt import render_prompt
from toolrpc.chat.router import ToolRouter
from toolrpc.chat.template import ChatTemplate
from toolrpc.chat.toolcalls import InvalidToolCall, TextDelta, ToolCallParsed, ToolCallParser
from toolrpc.engines.base import Engine, GenerationRequest, SamplingParams
from toolrpc.errors import InvalidParams, ParamError, ToolProtocolError
from toolrpc.protocol import (
    CreateMessageParams,
    CreateMessageResult,
    Message,
    NamedToolChoice,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)
from toolrpc.types import FinishReason, JSONValue

logger = logging.getLogger(__name__)

LOOP_GUARD_NOTE = (
    "Tool use is over for this request. Do not call any tool. Answer the user now, "
    "using the tool results above."
)

_LOCAL_REFS_ONLY: referencing.Registry[bool | Mapping[str, Any]] = referencing.Registry()
"""Resolves a tool schema's `$ref`s within the schema only: a client's schema must not make the
server fetch URLs (jsonschema's default registry does)."""


@dataclass(frozen=True)
class DeltaEvent:
    """Text the model produced (never tool-call markup)."""

    text: str


@dataclass(frozen=True)
class ToolCallsEvent:
    """The model asks the client to run these calls."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class DoneEvent:
    """The step is over; `result` is what `create_message` returns."""

    result: CreateMessageResult


StepEvent = DeltaEvent | ToolCallsEvent | DoneEvent


@dataclass
class _Pass:
    """What one generation produced."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)


class ChatSession:
    """Runs conversation steps on one engine with one chat template."""

    def __init__(
        self,
        engine: Engine,
        template: ChatTemplate,
        *,
        router: ToolRouter | None = None,
        ground_arguments: bool = False,
    ) -> None:
        self.engine = engine
        self.template = template
        self.router = router
        self.ground_arguments = ground_arguments

    async def step(
        self, params: CreateMessageParams, tools: Sequence[Tool]
    ) -> AsyncGenerator[StepEvent, None]:
        """Run one step (module docstring). Raises `ToolProtocolError`, `InvalidParams` and
        whatever the engine raises (`ContextLengthExceeded`, `Overloaded`, ...)."""
        history = _with_system(_apply_inputs(params), params.system)
        turn = TurnState.of(history)
        offered = _offered_tools(params, tools, turn)
        is_round_limited = bool(tools) and params.tool_choice != "none" and not offered
        prompt_history = _guarded(history) if is_round_limited else history
        total = Usage()
        first = _Pass()
        offered, forced = await self._route(params, history, offered)
        bounded = self._bounded(offered, prompt_history) if forced else None
        async for text in self._generate(
            first, params, prompt_history, offered, constrained=forced, constraint=bounded
        ):
            yield DeltaEvent(text)
        _add_usage(total, first.usage)
        if forced and self.ground_arguments:
            first = await self._grounded(first, params, prompt_history, offered, total)
        repeats = [call for call in first.calls if turn.is_repeat(call)]
        if offered and first.calls and not repeats:
            calls = [c.model_copy(update={"id": _new_call_id()}) for c in first.calls]
            history.append(Message(role="assistant", content=first.text or None, tool_calls=calls))
            yield ToolCallsEvent(tuple(calls))
            yield DoneEvent(
                _result("tool_calls", calls, history, turn.num_rounds + 1, "tool_calls", total)
            )
            return
        text, reason = first.text, first.finish_reason
        if repeats:
            logger.info("loop guard: repeated call %s; answering without tools", repeats[0].name)
            guard = _Pass()
            separator = "\n\n" if text.strip() else ""
            async for delta in self._generate(
                guard, params, _guarded(history), [], constrained=False
            ):
                if separator:  # keep the first pass's text apart from the final answer
                    yield DeltaEvent(separator)
                    text, separator = text + separator, ""
                yield DeltaEvent(delta)
            _add_usage(total, guard.usage)
            text += guard.text
        if repeats or is_round_limited:
            reason = "loop_guard"
        history.append(Message(role="assistant", content=text))
        yield DoneEvent(_result("final_text", text, history, turn.num_rounds, reason, total))

    async def _route(
        self, params: CreateMessageParams, history: list[Message], offered: list[Tool]
    ) -> tuple[list[Tool], bool]:
        """The tools to offer and whether the call is forced, after the router (if any) chose:
        for `auto` a tool or none, for `required` which tool (router.py)."""
        forced = _is_forced(params)
        if self.router is None or not offered or isinstance(params.tool_choice, NamedToolChoice):
            return offered, forced
        decision = await self.router.decide(history, offered, may_answer=not forced)
        if decision.tool is None:
            return [], False
        return [decision.tool], True

    def _bounded(self, tools: Sequence[Tool], history: Sequence[Message]) -> list[Tool] | None:
        """With grounding on, `tools` with their free-text values bounded in length by the
        conversation's texts (grounding.py); else None (each tool's own schema)."""
        texts = source_texts(history)
        if not self.ground_arguments or not texts:
            return None
        return [
            _with_parameters(tool, bounded_parameters(tool.function.parameters, texts))
            for tool in tools
        ]

    async def _grounded(
        self,
        first: _Pass,
        params: CreateMessageParams,
        history: list[Message],
        tools: Sequence[Tool],
        total: Usage,
    ) -> _Pass:
        """The forced call again with its arguments grounded in the conversation, when the
        first one used words no one wrote or failed (grounding.py); else `first`."""
        texts = source_texts(history)
        if len(tools) != 1 or not texts:
            return first
        tool = tools[0]
        parameters = tool.function.parameters
        arguments = first.calls[0].arguments if len(first.calls) == 1 else None
        if arguments is not None and not ungrounded_arguments(arguments, parameters, texts):
            return first
        grounded = _with_parameters(tool, grounded_parameters(parameters, arguments, texts))
        logger.info("grounding the arguments of a call to %s", tool.name)
        second = _Pass()
        async for _ in self._generate(
            second, params, history, tools, constrained=True, constraint=[grounded]
        ):
            pass  # a constrained pass yields no text
        _add_usage(total, second.usage)
        return second if second.calls else first

    async def _generate(
        self,
        out: _Pass,
        params: CreateMessageParams,
        history: list[Message],
        tools: Sequence[Tool],
        *,
        constrained: bool,
        constraint: Sequence[Tool] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Generate once into `out`, yielding text deltas; calls to unknown tools, and calls
        whose arguments do not validate, are dropped. The prompt shows `tools`; a constrained
        pass follows the schemas of `constraint` (default: the same tools)."""
        schema_tools = tools if constraint is None else constraint
        request = GenerationRequest(
            prompt=render_prompt(self.template, history, tools),
            max_new_tokens=params.max_new_tokens,
            sampling=SamplingParams(params.temperature, params.top_p, params.top_k, params.seed),
            stop=params.stop_strings(),
            json_schema=call_schema(schema_tools) if constrained and schema_tools else None,
        )
        parser = ToolCallParser(allow_bare_json=bool(tools), hold_whitespace=bool(tools))
        by_name = {tool.name: tool for tool in schema_tools}
        async with aclosing(self.engine.generate(request)) as chunks:
            async for chunk in chunks:
                for event in parser.feed(chunk.text):
                    if isinstance(event, TextDelta):
                        if not constrained:
                            out.text += event.text
                            yield event.text
                    else:
                        _take_call(out, event, by_name)
                if chunk.finish_reason is not None:
                    out.finish_reason = chunk.finish_reason
                    if chunk.usage is not None:
                        out.usage = Usage(
                            prompt_tokens=chunk.usage.prompt_tokens,
                            completion_tokens=chunk.usage.completion_tokens,
                            cached_tokens=chunk.usage.cached_tokens,
                        )
        for event in parser.finish():
            if isinstance(event, TextDelta):
                if not constrained:  # a constrained output is a call or nothing (cut short)
                    out.text += event.text
                    yield event.text
            else:
                _take_call(out, event, by_name)


def _take_call(out: _Pass, event: ToolCallParsed | InvalidToolCall, tools: dict[str, Tool]) -> None:
    """Keep a parsed call when it names an offered tool and its arguments validate."""
    if isinstance(event, InvalidToolCall):
        logger.info("dropped malformed tool call: %s", event.reason)
        return
    tool = tools.get(event.name)
    if tool is None:
        logger.info("dropped call to a tool that was not offered: %s", event.name)
        return
    schema = tool.function.parameters
    try:
        validator = jsonschema.validators.validator_for(schema)(schema, registry=_LOCAL_REFS_ONLY)
        validator.validate(event.arguments)
    except jsonschema.ValidationError as exc:
        logger.info("dropped call to %s with invalid arguments: %s", event.name, exc.message)
        return
    except (referencing.exceptions.Unresolvable, RecursionError) as exc:
        logger.info("dropped call to %s: its schema cannot be applied: %r", event.name, exc)
        return
    out.calls.append(ToolCall(id="", name=event.name, arguments=event.arguments))


def _with_parameters(tool: Tool, parameters: dict[str, Any]) -> Tool:
    """`tool` with another parameters schema (a constraint of the chat layer's own)."""
    return tool.model_copy(
        update={"function": tool.function.model_copy(update={"parameters": parameters})}
    )


def _apply_inputs(params: CreateMessageParams) -> list[Message]:
    """The history with the tool results and the new user message appended."""
    history = list(params.history)
    pending = _pending_calls(history)
    if params.tool_results:
        history.extend(_tool_messages(pending, params.tool_results))
    elif pending:
        missing = ", ".join(call.id for call in pending)
        raise ToolProtocolError(
            f"the last assistant message asked for tool calls ({missing}); send their tool_results",
            {"missing_tool_call_ids": [call.id for call in pending if call.id]},
        )
    if params.message is not None:
        history.append(Message(role="user", content=params.message))
    return history


def _pending_calls(history: Sequence[Message]) -> list[ToolCall]:
    """Calls of the last assistant message that no tool message answers yet."""
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if message.role == "assistant":
            answered = {m.tool_call_id for m in history[index + 1 :] if m.role == "tool"}
            return [call for call in message.tool_calls or () if call.id not in answered]
        if message.role == "user":
            return []
    return []


def _tool_messages(pending: Sequence[ToolCall], results: Sequence[ToolResult]) -> list[Message]:
    """One tool message per result; every pending call needs exactly one result."""
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


def _with_system(history: list[Message], system: str | None) -> list[Message]:
    """The history with `system` as its first message (replacing one that is there)."""
    if system is None:
        return list(history)
    rest = history[1:] if history and history[0].role == "system" else history
    return [Message(role="system", content=system), *rest]


def _guarded(history: list[Message]) -> list[Message]:
    """The history with the loop guard's note added to its system prompt (for the prompt only)."""
    system = ""
    if history and history[0].role == "system" and history[0].content:
        system = history[0].content + "\n\n"
    return _with_system(history, system + LOOP_GUARD_NOTE)


def _is_forced(params: CreateMessageParams) -> bool:
    return params.tool_choice == "required" or isinstance(params.tool_choice, NamedToolChoice)


def _offered_tools(
    params: CreateMessageParams, tools: Sequence[Tool], turn: TurnState
) -> list[Tool]:
    """The tools the model may call in this step (empty: answer in text)."""
    choice = params.tool_choice
    if isinstance(choice, NamedToolChoice):
        named = [tool for tool in tools if tool.name == choice.name]
        if not named:
            raise InvalidParams(
                f"tool_choice names {choice.name!r}, which is not among the tools",
                [ParamError(("tool_choice", "name"), "unknown tool")],
            )
        tools = named
    if choice == "required" and not tools:
        raise InvalidParams(
            "tool_choice 'required' needs at least one tool",
            [ParamError(("tool_choice",), "no tools to call")],
        )
    if choice == "none" or not turn.may_call_tools(params.max_iterations):
        return []
    return list(tools)


def _add_usage(total: Usage, more: Usage) -> None:
    total.prompt_tokens += more.prompt_tokens
    total.completion_tokens += more.completion_tokens
    total.cached_tokens += more.cached_tokens


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _result(
    kind: str,
    content: str | list[ToolCall],
    history: list[Message],
    iteration_count: int,
    reason: FinishReason,
    usage: Usage,
) -> CreateMessageResult:
    return CreateMessageResult.model_validate(
        {
            "type": kind,
            "content": content,
            "history": history,
            "iteration_count": iteration_count,
            "finish_reason": reason,
            "usage": usage,
        }
    )
