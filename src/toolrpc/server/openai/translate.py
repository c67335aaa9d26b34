"""OpenAI's wire onto the chat layer and back: pure functions, no I/O.

A chat completion is one chat step (`Chat.step`): `messages` become the step's conversation (the
turn, and so the loop guard, is read from them), `tools` / `tool_choice` / `parallel_tool_calls`
/ `response_format` become the step's offer, and the step's events become a `chat.completion`
or `chat.completion.chunk`s. Nothing here builds prompts, parses calls or guards loops; the chat
layer does, for `/rpc`, `/stream` and `/v1` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from toolrpc.chat.conversation import DeltaEvent, StepEvent, StepRequest, ToolCallsEvent
from toolrpc.chat.model import GenerationOptions
from toolrpc.chat.turn import append_inputs
from toolrpc.engines.base import SamplingParams
from toolrpc.errors import InvalidParams, ModelNotFound, ParamError
from toolrpc.generation import TokenUsage
from toolrpc.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChatToolCall,
    ChunkChoice,
    ChunkDelta,
    CompletionRequest,
    CompletionUsage,
    FunctionDelta,
    OpenAIFinishReason,
    PromptTokensDetails,
    SamplingRequest,
    ToolCallDelta,
)
from toolrpc.protocol import CreateMessageResult, Message, ToolCall, ToolResult, Usage
from toolrpc.types import FinishReason

ARGUMENT_FRAGMENT_CHARS = 16
"""Size of the argument fragments of a streamed call. The chat layer hands out a call only once
its arguments validate, so they arrive whole; they are still sent in fragments, because that is
the shape OpenAI streams and clients reassemble (some accumulate before parsing, some show the
arguments as they come)."""


def check_model(requested: str, served: str) -> None:
    """Raises `ModelNotFound` unless `requested` is the served model's name (vLLM does the
    same: a client that names the wrong model learns it, instead of getting another model)."""
    if requested != served:
        raise ModelNotFound(
            f"the model {requested!r} does not exist; this server serves {served!r}"
        )


def conversation(messages: Sequence[ChatMessage]) -> tuple[Message, ...]:
    """`messages` as the chat layer's conversation. What ends it is the step's input, checked
    as `/rpc` checks `tool_results` and `message` (`append_inputs`): the tool messages must
    answer each waiting call once, with no stray ids, and a new user message must not leave
    calls unanswered.

    Raises `InvalidParams` naming the message whose call arguments are not a JSON object, and
    `ToolProtocolError` for results that do not answer the last assistant message's calls.
    """
    converted = []
    for i, message in enumerate(messages):
        try:
            converted.append(message.to_message())
        except ValueError as exc:
            loc = ("messages", i, "tool_calls")
            raise InvalidParams(f"messages[{i}]: {exc}", [ParamError(loc, str(exc))]) from exc
    num_results = next(
        (n for n, m in enumerate(reversed(converted)) if m.role != "tool"), len(converted)
    )
    if num_results:
        results = [
            ToolResult(tool_call_id=m.tool_call_id or "", content=m.content or "")
            for m in converted[-num_results:]
        ]
        return tuple(append_inputs(converted[:-num_results], results, None))
    if converted[-1].role == "user":
        return tuple(append_inputs(converted[:-1], (), converted[-1].content or ""))
    return tuple(converted)


def generation_options(
    request: SamplingRequest, max_tokens: int | None, limit: int
) -> GenerationOptions:
    """Length and sampling of a request: `max_tokens` capped by the server's limit (the limit
    itself when the client gave none, as OpenAI lets an answer run to the model's end)."""
    return GenerationOptions(
        max_new_tokens=min(max_tokens or limit, limit),
        sampling=SamplingParams(request.temperature, request.top_p, None, request.seed),
        stop=request.stop_strings(),
    )


def step_request(request: ChatCompletionRequest, *, max_new_tokens_limit: int) -> StepRequest:
    """The chat step a chat completion asks for. Raises `InvalidParams` (see `conversation`)."""
    return StepRequest(
        conversation=conversation(request.messages),
        tools=tuple(tool.to_tool() for tool in request.tools or ()),
        tool_choice=request.choice(),
        options=generation_options(request, request.token_limit(), max_new_tokens_limit),
        answer_schema=None
        if request.response_format is None
        else request.response_format.answer_schema(),
        parallel_tool_calls=request.parallel_tool_calls,
    )


def finish_reason(reason: FinishReason) -> OpenAIFinishReason:
    """OpenAI's finish reason: the loop guard's answer is an ordinary `stop` there."""
    return "stop" if reason == "loop_guard" else reason


def completion_usage(usage: Usage | TokenUsage) -> CompletionUsage:
    """`usage` with `prompt_tokens_details.cached_tokens`."""
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


@dataclass(frozen=True)
class Completion:
    """What every response and chunk of one completion repeats."""

    id: str
    created: int
    model: str


def chat_completion(result: CreateMessageResult, completion: Completion) -> ChatCompletion:
    """The `chat.completion` of a finished step: its text, or its calls (with any text the
    model wrote before them)."""
    last = result.history[-1]
    calls = result.content if isinstance(result.content, list) else []
    message = AssistantMessage(
        content=last.content, tool_calls=[ChatToolCall.of(c) for c in calls] or None
    )
    return ChatCompletion(
        id=completion.id,
        created=completion.created,
        model=completion.model,
        choices=[ChatChoice(message=message, finish_reason=finish_reason(result.finish_reason))],
        usage=completion_usage(result.usage),
    )


@dataclass(frozen=True)
class ChunkStream:
    """The `chat.completion.chunk`s of one streamed completion."""

    completion: Completion

    def role(self) -> ChatCompletionChunk:
        """The first chunk: the assistant's role, no content."""
        return self._chunk(ChunkDelta(role="assistant", content=""))

    def of_event(self, event: StepEvent) -> list[ChatCompletionChunk]:
        """The chunks of one step event: a content delta; each call as a chunk with its id
        and name then its argument fragments; the finishing chunk."""
        if isinstance(event, DeltaEvent):
            return [self._chunk(ChunkDelta(content=event.text))] if event.text else []
        if isinstance(event, ToolCallsEvent):
            return [chunk for i, call in enumerate(event.calls) for chunk in self._call(i, call)]
        return [self._chunk(ChunkDelta(), finish_reason(event.result.finish_reason))]

    def usage(self, usage: Usage | TokenUsage) -> ChatCompletionChunk:
        """The last chunk when the client asked for usage: no choices, the usage."""
        c = self.completion
        return ChatCompletionChunk(
            id=c.id, created=c.created, model=c.model, choices=[], usage=completion_usage(usage)
        )

    def _call(self, index: int, call: ToolCall) -> list[ChatCompletionChunk]:
        arguments = ChatToolCall.of(call).function.arguments
        start = ToolCallDelta(
            index=index,
            id=call.id,
            type="function",
            function=FunctionDelta(name=call.name, arguments=""),
        )
        pieces = [
            arguments[i : i + ARGUMENT_FRAGMENT_CHARS]
            for i in range(0, len(arguments), ARGUMENT_FRAGMENT_CHARS)
        ]
        fragments = [
            ToolCallDelta(index=index, function=FunctionDelta(arguments=p)) for p in pieces
        ]
        return [self._chunk(ChunkDelta(tool_calls=[delta])) for delta in [start, *fragments]]

    def _chunk(
        self, delta: ChunkDelta, reason: OpenAIFinishReason | None = None
    ) -> ChatCompletionChunk:
        c = self.completion
        return ChatCompletionChunk(
            id=c.id,
            created=c.created,
            model=c.model,
            choices=[ChunkChoice(delta=delta, finish_reason=reason)],
        )


def completion_options(request: CompletionRequest, limit: int) -> GenerationOptions:
    """The generation a `/v1/completions` request asks for (OpenAI's default: 16 tokens)."""
    return generation_options(request, request.max_tokens, limit)
