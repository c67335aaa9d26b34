"""One step of a conversation: a conversation in, final text or tool calls out.

`Chat.step` is an async iterator of `StepEvent`s: text deltas as the model writes them, the tool
calls when it asks for tools, and last the full `CreateMessageResult`. `/rpc` consumes it whole
and `/stream` forwards it, so both answer identically by construction.

A step:
1. reads the turn once (chat/turn.py) and builds the tool offer (chat/offer.py): `tool_choice`,
   the loop guard's round limit, the router's decision and grounding's bounds;
2. asks the model (chat/model.py) for one generation under the offer: constrained exactly when
   the offer has a constraint, markup never in a delta, every call accepted by the offer;
3. with grounding on, generates a forced call again when its arguments use words no one wrote
   (chat/grounding.py);
4. returns the accepted calls (with fresh ids); or, when a call repeats one already answered in
   this turn, generates once more with no tools and ends the turn with `finish_reason:
   "loop_guard"` (chat/loopguard.py), as it does when the round limit took the tools away.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from functools import partial

from toolrpc.chat.grounding import bounded, grounded, needs_grounding
from toolrpc.chat.loopguard import guarded, repeated_calls
from toolrpc.chat.model import ChatModel, Generation, GenerationOptions
from toolrpc.chat.offer import ToolOffer, offer_tools
from toolrpc.chat.router import ToolRouter
from toolrpc.chat.turn import Turn
from toolrpc.protocol import CreateMessageResult, Message, Tool, ToolCall, ToolChoice, Usage
from toolrpc.types import FinishReason, JSONObject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRequest:
    """What one step needs: the conversation so far (ending with the new user message or the
    tool results) and how to answer it."""

    conversation: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_iterations: int = 5
    options: GenerationOptions = field(default_factory=GenerationOptions)
    answer_schema: JSONObject | None = None
    """The JSON Schema a text answer must satisfy (OpenAI's `response_format`); enforced when
    the generation shows no tools (chat/offer.py says why)."""
    parallel_tool_calls: bool = True
    """False: the step returns at most one call."""


@dataclass(frozen=True)
class DeltaEvent:
    """Text the model produced (never tool-call markup)."""

    text: str


@dataclass(frozen=True)
class ToolCallsEvent:
    """The model asks the client to run these calls."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class StepReport:
    """What a step did beyond its result, for the operator's metrics."""

    route: str | None = None
    """The tool router's decision: `tool`, `answer`, `abstain` (no offered tool could be
    filled), or None when the router did not decide (off, or no tools to route)."""
    num_rejected_calls: int = 0
    """Calls the model wrote that were not accepted (malformed, unknown tool, invalid
    arguments), over every generation of the step."""


@dataclass(frozen=True)
class DoneEvent:
    """The step is over; `result` is what `create_message` returns."""

    result: CreateMessageResult
    report: StepReport = field(default_factory=StepReport)


StepEvent = DeltaEvent | ToolCallsEvent | DoneEvent


class Chat:
    """Runs conversation steps on one model (chat/model.py), with an optional tool router and
    grounding (both need a local engine: they score and constrain its output)."""

    def __init__(
        self,
        model: ChatModel,
        *,
        router: ToolRouter | None = None,
        ground_arguments: bool = False,
    ) -> None:
        self.model = model
        self.router = router
        self.ground_arguments = ground_arguments

    async def step(self, request: StepRequest) -> AsyncGenerator[StepEvent, None]:
        """Run one step (module docstring). Raises `ToolProtocolError`, `InvalidParams` and
        whatever the engine raises (`ContextLengthExceeded`, `Overloaded`, ...)."""
        history = list(request.conversation)
        turn = Turn.of(history)
        turn.check_answered()
        offer, route = await self._offer(request, turn)
        prompt = guarded(history) if offer.is_round_limited else history
        async for item in self.model.generate(prompt, offer, request.options):
            if isinstance(item, str):
                yield DeltaEvent(item)
            else:
                first = item
        first = await self._grounded(request, prompt, offer, first, turn)
        repeats = repeated_calls(first.calls, turn)
        if first.calls and not repeats:
            calls = [call.model_copy(update={"id": _new_call_id()}) for call in first.calls]
            history.append(Message(role="assistant", content=first.text or None, tool_calls=calls))
            yield ToolCallsEvent(tuple(calls))
            result = _result(calls, history, turn.num_rounds + 1, "tool_calls", first.usage)
            yield DoneEvent(result, StepReport(route, first.num_rejected))
            return
        answer = first
        if repeats:
            logger.info("loop guard: repeated call %s; answering without tools", repeats[0].name)
            async for item in self._answer_after(request, history, first):
                if isinstance(item, str):
                    yield DeltaEvent(item)
                else:
                    answer = item
        reason = "loop_guard" if repeats or offer.is_round_limited else answer.finish_reason
        history.append(Message(role="assistant", content=answer.text))
        result = _result(answer.text, history, turn.num_rounds, reason, answer.usage)
        yield DoneEvent(result, StepReport(route, answer.num_rejected))

    async def _offer(self, request: StepRequest, turn: Turn) -> tuple[ToolOffer, str | None]:
        """The offer for the first generation: tool_choice, the round limit, the router's
        decision and, with grounding, the bounds of a forced call's free-text values; and the
        router's decision as `StepReport.route` names it."""
        offer = offer_tools(
            request.tool_choice,
            request.tools,
            turn,
            request.max_iterations,
            answer_schema=request.answer_schema,
            allows_parallel_calls=request.parallel_tool_calls,
        )
        route = None
        if self.router is not None and offer.tools:
            may_answer = not offer.is_constrained
            decision = await self.router.decide(turn, offer.tools, may_answer=may_answer)
            offer = offer.routed(decision.tool)
            route = "tool" if decision.tool else "abstain" if decision.abstained else "answer"
        if self.ground_arguments:
            offer = offer.narrowed(partial(bounded, texts=turn.sources))
        return offer, route

    async def _grounded(
        self,
        request: StepRequest,
        prompt: Sequence[Message],
        offer: ToolOffer,
        first: Generation,
        turn: Turn,
    ) -> Generation:
        """A forced call to one tool generated again with its arguments grounded in the
        conversation, when the first used words no one wrote or failed (chat/grounding.py);
        else `first`."""
        if not self.ground_arguments or offer.constraint is None or len(offer.tools) != 1:
            return first
        tool = offer.tools[0]
        arguments = first.calls[0].arguments if len(first.calls) == 1 else None
        if not needs_grounding(tool, arguments, turn.sources):
            return first
        logger.info("grounding the arguments of a call to %s", tool.name)
        regrounded = offer.narrowed(lambda t: grounded(t, arguments, turn.sources))
        second = first
        async for item in self.model.generate(prompt, regrounded, request.options):
            if not isinstance(item, str):  # a constrained pass yields no text
                second = item
        chosen = second if second.calls else first
        return dataclasses.replace(
            chosen,
            usage=_sum(first.usage, second.usage),
            num_rejected=first.num_rejected + (second.num_rejected if second is not first else 0),
        )

    async def _answer_after(
        self, request: StepRequest, history: Sequence[Message], first: Generation
    ) -> AsyncGenerator[str | Generation, None]:
        """The loop guard's answer: generated with no tools after `first` repeated a call; its
        text follows `first`'s (kept apart by a blank line), its usage adds to `first`'s."""
        separator = "\n\n" if first.text.strip() else ""
        answer = first
        answer_offer = ToolOffer(answer_schema=request.answer_schema)
        async for item in self.model.generate(guarded(history), answer_offer, request.options):
            if isinstance(item, str):
                if separator:
                    yield separator
                    separator = ""
                yield item
            else:
                answer = item
        text = first.text + ("\n\n" if first.text.strip() and answer.text else "") + answer.text
        num_rejected = first.num_rejected + answer.num_rejected
        yield Generation(
            text, (), answer.finish_reason, _sum(first.usage, answer.usage), num_rejected
        )


def _sum(first: Usage, second: Usage) -> Usage:
    return Usage(
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        completion_tokens=first.completion_tokens + second.completion_tokens,
        cached_tokens=first.cached_tokens + second.cached_tokens,
    )


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _result(
    content: str | list[ToolCall],
    history: list[Message],
    iteration_count: int,
    reason: FinishReason,
    usage: Usage,
) -> CreateMessageResult:
    return CreateMessageResult(
        type="final_text" if isinstance(content, str) else "tool_calls",
        content=content,
        history=history,
        iteration_count=iteration_count,
        finish_reason=reason,
        usage=usage,
    )
