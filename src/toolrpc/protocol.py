"""Wire shapes of docs/protocol.md as pydantic models (shared by server, rpc, chat and client).

Only shapes that cross the wire live here. Validation that a client can fail (a bad tool name, a
`parameters` that is not a JSON Schema, neither `message` nor `tool_results`) is done by these
models, so every such mistake becomes an `InvalidParams` (-32602 / HTTP 422) with its location.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from toolrpc.types import FinishReason

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SCHEMA_NESTING = 64
"""Deeper schemas are refused before `jsonschema` checks them (it recurses per level)."""

Role = Literal["system", "user", "assistant", "tool"]


def checked_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` itself when it is a valid JSON Schema (for pydantic validators); raises
    `ValueError` saying what is wrong otherwise."""
    if _nesting(schema) > MAX_SCHEMA_NESTING:
        raise ValueError(f"the schema nests deeper than {MAX_SCHEMA_NESTING} levels")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
    return schema


class WireModel(BaseModel):
    """Base of the request-side models: unknown fields are refused, so typos are reported."""

    model_config = ConfigDict(extra="forbid")


class ToolFunction(WireModel):
    """The function part of a tool: its name, what it does, and a JSON Schema for its arguments."""

    name: Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("parameters")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return checked_json_schema(schema)


def _nesting(value: object) -> int:
    """How deep `value` nests (objects and arrays), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack += [(child, depth + 1) for child in node.values()]
        elif isinstance(node, list):
            stack += [(child, depth + 1) for child in node]
    return deepest


class Tool(WireModel):
    """A tool the model may call, in the OpenAI form; the bare `{name, ...}` form is accepted."""

    type: Literal["function"] = "function"
    function: ToolFunction

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "function" not in data and "name" in data:
            return {"type": "function", "function": data}
        return data

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.function.name


class ToolCall(WireModel):
    """A call the model asks the client to run."""

    id: str
    name: str
    arguments: dict[str, Any]


class Message(WireModel):
    """One message of a conversation's history."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ToolResult(WireModel):
    """The client's result for one tool call."""

    tool_call_id: str
    content: JsonValue
    is_error: bool = False


class NamedToolChoice(WireModel):
    """`{"name": tool}`: the model must call this tool (OpenAI's nested form is accepted)."""

    name: Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]

    @model_validator(mode="before")
    @classmethod
    def _accept_openai_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("function"), dict):
            return {"name": data["function"].get("name")}
        return data


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class SamplingFields(WireModel):
    """Sampling options shared by `create_message` and `/stream`; None means the model default."""

    max_new_tokens: Annotated[int, Field(ge=1)] = 512
    temperature: Annotated[float, Field(ge=0, le=5)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**64)] | None = None
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings_not_empty(cls, stop: str | list[str] | None) -> str | list[str] | None:
        items = [stop] if isinstance(stop, str) else stop or []
        if any(s == "" for s in items):
            raise ValueError("stop strings must not be empty")
        return stop

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CreateMessageParams(SamplingFields):
    """Params of `create_message` (and the body of `POST /stream`)."""

    message: str | None = None
    history: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None
    tool_results: list[ToolResult] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    max_iterations: Annotated[int, Field(ge=1)] = 5
    system: str | None = None
    session_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _message_or_tool_results(self) -> CreateMessageParams:
        if self.message is None and not self.tool_results:
            raise ValueError("at least one of 'message' and 'tool_results' is required")
        return self


class Usage(BaseModel):
    """Token counts of one `create_message` step."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class CreateMessageResult(BaseModel):
    """The answer to one `create_message` step."""

    type: Literal["final_text", "tool_calls"]
    content: str | list[ToolCall]
    history: list[Message]
    iteration_count: int
    finish_reason: FinishReason
    usage: Usage


class ToolListResult(BaseModel):
    """The result of `tool_list`."""

    tools: list[Tool]


SessionId = Annotated[str, Field(min_length=1, max_length=128)]


class SessionParams(WireModel):
    """Params of `session_get` and `session_delete`."""

    session_id: SessionId


class SessionListParams(WireModel):
    """Params of `session_list`: a page of the caller's sessions, by id, after `cursor`."""

    cursor: str | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class SessionResult(BaseModel):
    """The result of `session_get`: a stored conversation; times are Unix seconds."""

    session_id: str
    history: list[Message]
    created_at: float
    updated_at: float
    turns: int


class SessionSummaryResult(BaseModel):
    """One session in `session_list` (no history)."""

    session_id: str
    created_at: float
    updated_at: float
    turns: int
    num_messages: int


class SessionListResult(BaseModel):
    """The result of `session_list`; pass `next_cursor` back for the next page (absent: last)."""

    sessions: list[SessionSummaryResult]
    next_cursor: str | None = None


class SessionDeleteResult(BaseModel):
    """The result of `session_delete`."""

    deleted: bool
