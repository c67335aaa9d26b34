"""The tool offer of one generation: which tools the prompt shows, the schema a call must
satisfy, and whether a returned call is valid.

A step builds its offer here, in this order:

1. `offer_tools`: `tool_choice`, the request's tools and the turn. `none`, no tools, or a turn
   that reached `max_iterations` rounds (the loop guard's limit) offer nothing; `auto` shows the
   tools with no constraint (the model may answer or call); `required` constrains the output to
   a call of any tool; a named tool to a call of that tool.
2. `ToolOffer.routed`: the tool router's decision (chat/router.py), on models whose template has
   no tool format: for `auto` nothing (answer) or one tool, which is then called under its
   schema; for `required`, which tool.
3. `ToolOffer.narrowed`: grounding's bounds (chat/grounding.py) applied to the constraint's
   schemas; the second, grounded pass narrows it again.

Two properties of a request travel with the offer, so that every generation of a step honours
them: `answer_schema` (OpenAI's `response_format`), the JSON Schema a text answer must satisfy,
and `allows_parallel_calls` (OpenAI's `parallel_tool_calls`). The answer schema constrains a
generation only when the offer shows no tools (no tools, `tool_choice: "none"`, the round limit,
the router chose to answer, the loop guard's answer): with tools shown the model must stay free
to call one (`auto`) or is held to a call (`required`, a named tool), and a grammar cannot hold
"a call or an answer of this schema" apart in the tool-call parser's bare-JSON form.

Generation is constrained exactly when the offer has a constraint (`json_schema`), and the same
offer judges what the model wrote (`accept`): a call must name a shown tool and its arguments
must validate against that tool's own schema, the client's contract, whatever narrower schema
the grammar enforced. The grammar's schema is one call object, `{"name": <tool>, "arguments":
<parameters>}`, which the tool-call parser reads as a bare JSON call; the engine compiles it to
its own grammar (llama.cpp GBNF, xgrammar), so this layer never knows how a backend constrains
decoding.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from toolrpc.chat.loopguard import may_call_tools
from toolrpc.chat.toolcalls import InvalidToolCall, ToolCallParsed
from toolrpc.chat.turn import Turn
from toolrpc.errors import InvalidParams, ParamError
from toolrpc.protocol import NamedToolChoice, Tool, ToolCall, ToolChoice
from toolrpc.types import JSONObject

logger = logging.getLogger(__name__)

_LOCAL_REFS_ONLY: referencing.Registry[bool | Mapping[str, Any]] = referencing.Registry()
"""Resolves a tool schema's `$ref`s within the schema only: a client's schema must not make the
server fetch URLs (jsonschema's default registry does)."""


@dataclass(frozen=True)
class ToolOffer:
    """How tools are offered to one generation (module docstring)."""

    tools: tuple[Tool, ...] = ()
    """Shown in the prompt; a returned call must name one of them."""
    constraint: tuple[Tool, ...] | None = None
    """When set, the output must be a call to one of these (same names as `tools`, schemas
    possibly narrowed); None: free text, in which the model may write calls."""
    is_round_limited: bool = False
    """The turn reached `max_iterations` rounds, so tools were taken away (the loop guard)."""
    answer_schema: JSONObject | None = None
    """The JSON Schema a text answer must satisfy (enforced when no tools are shown)."""
    allows_parallel_calls: bool = True
    """False: at most one call is accepted from one generation (the first valid one)."""

    @property
    def is_constrained(self) -> bool:
        """True when generation must produce a call (a grammar holds it to `constraint`)."""
        return self.constraint is not None

    def json_schema(self) -> JSONObject | None:
        """The JSON Schema the engine must hold the whole output to, or None: a call when the
        offer is constrained, else the answer schema when no tools are shown."""
        if self.constraint is not None:
            return call_schema(self.constraint)
        return None if self.tools else self.answer_schema

    def without_tools(self) -> ToolOffer:
        """This offer with no tools shown (an answer): what the request asked of an answer
        stays."""
        return ToolOffer(
            is_round_limited=self.is_round_limited,
            answer_schema=self.answer_schema,
            allows_parallel_calls=self.allows_parallel_calls,
        )

    def routed(self, tool: Tool | None) -> ToolOffer:
        """The offer after the router chose: `tool` under its schema, or nothing (answer)."""
        if tool is None:
            return self.without_tools()
        return dataclasses.replace(self, tools=(tool,), constraint=(tool,))

    def narrowed(self, narrow: Callable[[Tool], Tool]) -> ToolOffer:
        """A constrained offer with the constraint's schemas replaced by `narrow(tool)` for each
        shown tool (a constraint always names exactly the shown tools): each narrowing starts
        from the tools' own schemas, so the grounded pass does not inherit the first pass's
        bounds. An unconstrained offer is returned as it is."""
        if self.constraint is None:
            return self
        return dataclasses.replace(self, constraint=tuple(narrow(tool) for tool in self.tools))

    def accept(self, event: ToolCallParsed | InvalidToolCall) -> ToolCall | None:
        """The call, when it names a shown tool and its arguments validate against that tool's
        own schema; else None (the reason is logged)."""
        if isinstance(event, InvalidToolCall):
            logger.info("dropped malformed tool call: %s", event.reason)
            return None
        tool = next((t for t in self.tools if t.name == event.name), None)
        if tool is None:
            logger.info("dropped call to a tool that was not offered: %s", event.name)
            return None
        problem = _validation_problem(tool.function.parameters, event.arguments)
        if problem is not None:
            logger.info("dropped call to %s: %s", event.name, problem)
            return None
        return ToolCall(id="", name=event.name, arguments=event.arguments)


def offer_tools(
    choice: ToolChoice,
    tools: Sequence[Tool],
    turn: Turn,
    max_iterations: int,
    *,
    answer_schema: JSONObject | None = None,
    allows_parallel_calls: bool = True,
) -> ToolOffer:
    """The offer `tool_choice` makes of `tools` in this turn, before routing, carrying the
    request's `answer_schema` and `allows_parallel_calls` (module docstring).

    Raises `InvalidParams` for a named tool that is not among the tools, and for `required`
    with no tools.
    """
    if isinstance(choice, NamedToolChoice):
        named = tuple(tool for tool in tools if tool.name == choice.name)
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
    answer = ToolOffer(answer_schema=answer_schema, allows_parallel_calls=allows_parallel_calls)
    if choice == "none" or not tools:
        return answer
    if not may_call_tools(turn, max_iterations):
        return dataclasses.replace(answer, is_round_limited=True)
    is_forced = choice == "required" or isinstance(choice, NamedToolChoice)
    return dataclasses.replace(
        answer, tools=tuple(tools), constraint=tuple(tools) if is_forced else None
    )


def call_schema(tools: Sequence[Tool]) -> JSONObject:
    """A JSON Schema that only a call to one of `tools` with valid arguments satisfies."""
    variants = [_one_call_schema(tool) for tool in tools]
    if len(variants) == 1:
        return variants[0]
    return {"anyOf": list(variants)}


def _one_call_schema(tool: Tool) -> JSONObject:
    parameters = dict(tool.function.parameters)
    if not parameters or parameters == {"type": "object"}:
        parameters = {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _validation_problem(schema: Mapping[str, Any], arguments: JSONObject) -> str | None:
    """Why `arguments` do not validate against `schema`, or None when they do."""
    try:
        validator = jsonschema.validators.validator_for(schema)(schema, registry=_LOCAL_REFS_ONLY)
        validator.validate(arguments)
    except jsonschema.ValidationError as exc:
        return f"invalid arguments: {exc.message}"
    except (referencing.exceptions.Unresolvable, RecursionError) as exc:
        return f"its schema cannot be applied: {exc!r}"
    return None
