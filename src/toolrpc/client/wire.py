"""What `Client` and `AsyncClient` share: request bodies, response parsing, the SSE decoder and
the bookkeeping of a run. Nothing here does I/O, so both clients are the same code around it.

A run is a sequence of `create_message` steps: the first sends the user's message, each next one
sends the history the server returned with the results of the calls it asked for, until the
server answers with text (a final answer, or the loop guard's). A forced `tool_choice`
(`"required"` or a named tool) applies to the first step only: kept, it would force a call every
round until the loop guard ended the turn. Server-side sessions (`session_id`) are the seam a
later version fills: `StepInput` would carry the id and send no history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import ValidationError

from toolrpc.client.errors import UnexpectedResponse, error_from_http, error_from_wire
from toolrpc.client.events import (
    RunResult,
    StepDone,
    StreamEvent,
    StreamFailed,
    TextDelta,
    ToolCallsRequested,
    ToolExchange,
)
from toolrpc.client.tools import ToolOutcome
from toolrpc.errors import InvalidParams, ToolRpcError
from toolrpc.protocol import (
    CreateMessageParams,
    CreateMessageResult,
    Message,
    NamedToolChoice,
    Tool,
    ToolCall,
    ToolResult,
)
from toolrpc.types import JSONValue

ToolChoiceArg = Literal["auto", "none", "required"] | str
"""`"auto"`, `"none"`, `"required"`, or the name of the tool the model must call."""


@dataclass(frozen=True)
class Options:
    """Sampling and limits of each step; None leaves the server's default."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    max_iterations: int | None = None


@dataclass(frozen=True)
class StepInput:
    """Everything one `create_message` step sends."""

    message: str | None = None
    history: tuple[Message, ...] = ()
    tools: tuple[Tool, ...] | None = None
    tool_results: tuple[ToolResult, ...] = ()
    tool_choice: ToolChoiceArg = "auto"
    system: str | None = None
    options: Options = field(default_factory=Options)

    def params(self) -> CreateMessageParams:
        """The validated params. Raises `InvalidParams` (as the server would) for a bad value."""
        choice: Any = self.tool_choice
        if choice not in ("auto", "none", "required"):
            choice = NamedToolChoice(name=choice)
        sampling = {k: v for k, v in vars(self.options).items() if v is not None}
        if "stop" in sampling:
            sampling["stop"] = list(sampling["stop"])
        try:
            return CreateMessageParams(
                message=self.message,
                history=list(self.history),
                tools=None if self.tools is None else list(self.tools),
                tool_results=list(self.tool_results),
                tool_choice=choice,
                system=self.system,
                **sampling,
            )
        except ValidationError as exc:
            raise InvalidParams.from_validation(exc) from exc

    def body(self) -> dict[str, Any]:
        """The JSON body (`/stream`) or params (`/rpc`)."""
        return self.params().model_dump(mode="json", exclude_none=True)

    def next_step(self, result: CreateMessageResult, results: Sequence[ToolResult]) -> StepInput:
        """The step that sends `results` for the calls `result` asked for."""
        return replace(
            self,
            message=None,
            history=tuple(result.history),
            tool_results=tuple(results),
            tool_choice="auto" if self.tool_choice != "none" else "none",
        )


@dataclass(frozen=True)
class ServerHealth:
    """`GET /health`: the served model and its context window."""

    model: str
    context_length: int


def parse_health(status: int, text: str) -> ServerHealth:
    """The `/health` answer. Raises `UnexpectedResponse` when it is not toolrpc's."""
    try:
        body = json.loads(text)
        if status == 200:
            return ServerHealth(str(body["model"]), int(body["context_length"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UnexpectedResponse(f"not a toolrpc /health answer (HTTP {status})") from exc
    raise error_from_http(status, body)


def rpc_request(method: str, params: dict[str, Any] | None, request_id: int) -> dict[str, Any]:
    """A JSON-RPC 2.0 request object."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        request["params"] = params
    return request


def rpc_result(status: int, text: str) -> JSONValue:
    """The `result` of a `/rpc` response. Raises the mapped `ToolRpcError` for an error
    response, `UnexpectedResponse` for a body that is not a JSON-RPC response."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnexpectedResponse(
            f"the server answered HTTP {status} with a body that is not JSON",
            {"http_status": status},
        ) from exc
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise error_from_wire(body["error"])
    if not isinstance(body, dict) or "result" not in body:
        raise UnexpectedResponse(
            f"the server answered HTTP {status} without a JSON-RPC result", {"http_status": status}
        )
    result: JSONValue = body["result"]
    return result


def parse_result(value: JSONValue) -> CreateMessageResult:
    """A `create_message` result. Raises `UnexpectedResponse` when it does not fit."""
    try:
        return CreateMessageResult.model_validate(value)
    except ValidationError as exc:
        raise UnexpectedResponse(f"not a create_message result: {exc}") from exc


class SseDecoder:
    """Server-Sent Events lines in, toolrpc stream events out (one `data:` object per event)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> StreamEvent | None:
        """One line of the stream (without its newline); an event when it completes one.
        Raises `UnexpectedResponse` for an event that is not toolrpc's."""
        if line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
            return None
        if line or not self._data:
            return None  # comments, other fields, keep-alives
        text, self._data = "\n".join(self._data), []
        return stream_event(text)


def stream_event(text: str) -> StreamEvent:
    """The event for one `data:` payload. Raises `UnexpectedResponse` for an unknown one."""
    try:
        payload = json.loads(text)
        if "delta" in payload:
            return TextDelta(str(payload["delta"]))
        if "tool_calls" in payload:
            calls = [ToolCall.model_validate(call) for call in payload["tool_calls"]]
            return ToolCallsRequested(tuple(calls))
        if "error" in payload:
            return StreamFailed(error_from_wire({"message": payload["error"], **payload}))
        if payload.get("done") is True:
            return StepDone(parse_result(payload["result"]))
    except (json.JSONDecodeError, TypeError, ValidationError) as exc:
        raise UnexpectedResponse(f"not a toolrpc stream event: {text[:200]}") from exc
    raise UnexpectedResponse(f"not a toolrpc stream event: {text[:200]}")


def tool_result(call: ToolCall, outcome: ToolOutcome) -> ToolResult:
    """The `ToolResult` that answers `call`."""
    return ToolResult(tool_call_id=call.id, content=outcome.content, is_error=outcome.is_error)


def unknown_tool(call: ToolCall) -> ToolOutcome:
    """The outcome for a call of a tool the client does not have (a server-side `--tools`
    definition, or a name the model made up)."""
    return ToolOutcome(f"no tool named {call.name!r} on the client", is_error=True)


@dataclass
class RunLog:
    """What a run has seen so far; `finish` makes the `RunResult`. Bounds the run: a server
    must end a turn within its `max_iterations` rounds (the loop guard), so a step beyond that
    is a server fault, raised as `ToolRpcError` instead of looping on."""

    max_steps: int
    steps: list[CreateMessageResult] = field(default_factory=list)
    exchanges: list[ToolExchange] = field(default_factory=list)

    def add_step(self, result: CreateMessageResult) -> None:
        """Record a step. Raises `ToolRpcError` past `max_steps`."""
        self.steps.append(result)
        if result.type == "tool_calls" and len(self.steps) >= self.max_steps:
            raise ToolRpcError(f"the server asked for tools {len(self.steps)} times in one turn")

    def finish(self) -> RunResult:
        """The run's result (the last step is its final answer)."""
        last = self.steps[-1]
        return RunResult(
            text=last.content if isinstance(last.content, str) else "",
            history=tuple(last.history),
            finish_reason=last.finish_reason,
            iteration_count=last.iteration_count,
            steps=tuple(self.steps),
            exchanges=tuple(self.exchanges),
        )


DEFAULT_MAX_ITERATIONS = 5


def run_log(options: Options) -> RunLog:
    """A log bounded one step past the turn's allowed rounds (the loop guard's answer)."""
    rounds = options.max_iterations or DEFAULT_MAX_ITERATIONS
    return RunLog(max_steps=rounds + 2)
