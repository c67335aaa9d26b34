"""OpenAI's chat-completions wire (`/v1`) as pydantic models: requests and responses.

Only shapes live here; `server/openai/translate.py` maps them onto the chat layer and back.
Requests ignore unknown fields (`user`, `logit_bias`, `frequency_penalty`, ...), as OpenAI and
the OpenAI-compatible servers do, so clients written for OpenAI work unchanged; what toolrpc
cannot honour where honouring matters (`n` > 1, `logprobs`, `echo`, a content part that is not
text) is refused here with its location, so it becomes a 400 that names the field.

`ChatMessage.to_message` / `ChatMessage.of` convert one message each way, so the upstream engine
(which speaks this wire to vLLM, SGLang or llama-server) reuses the same conversion.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolrpc.protocol import Message, NamedToolChoice, Tool, ToolCall, ToolChoice, ToolFunction
from toolrpc.types import JSONObject

JSON_OBJECT_SCHEMA: JSONObject = {"type": "object"}
"""`response_format: {"type": "json_object"}`: any JSON object."""


class OpenAIRequest(BaseModel):
    """Base of the request models: unknown fields are ignored (module docstring)."""

    model_config = ConfigDict(extra="ignore")


class ContentPart(OpenAIRequest):
    """One part of a message's content; only `{"type": "text", "text": ...}` is served."""

    type: str
    text: str = ""


class FunctionCall(OpenAIRequest):
    """A call's function: its name and its arguments as a JSON string."""

    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as an object. Raises `ValueError` when they are not a JSON object."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not valid JSON: {exc.msg}") from exc
        if not isinstance(value, dict):
            raise ValueError("arguments must be a JSON object")
        return value


class ChatToolCall(OpenAIRequest):
    """A tool call in an assistant message (requests) or a response."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall) -> ChatToolCall:
        """OpenAI's form of a toolrpc call (arguments as compact JSON text)."""
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        return cls(id=call.id, function=FunctionCall(name=call.name, arguments=arguments))


class ChatMessage(OpenAIRequest):
    """One message of `messages`; `developer` is OpenAI's newer name for `system`."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        # Before validation, so the client reads one clear error, not one per union member.
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise ValueError(f"content parts of type {kind!r} are not supported; only 'text'")
        return content

    @model_validator(mode="after")
    def _tool_message_names_its_call(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs 'tool_call_id'")
        return self

    def text(self) -> str | None:
        """The content as one string (text parts joined), or None."""
        if self.content is None or isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def to_message(self) -> Message:
        """The toolrpc message. Raises `ValueError` when a call's arguments are not a JSON
        object."""
        role = "system" if self.role == "developer" else self.role
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.parsed_arguments())
            for c in self.tool_calls or []
        ]
        return Message(
            role=role,
            content=self.text(),
            tool_calls=calls or None,
            tool_call_id=self.tool_call_id,
            name=self.name if role == "tool" else None,
        )

    @classmethod
    def of(cls, message: Message) -> ChatMessage:
        """OpenAI's form of a toolrpc message."""
        calls = [ChatToolCall.of(c) for c in message.tool_calls or []]
        return cls(
            role=message.role,
            content=message.content,
            tool_calls=calls or None,
            tool_call_id=message.tool_call_id,
            name=message.name,
        )


class FunctionDefinition(ToolFunction):
    """A tool's function as OpenAI sends it (`strict` and other extras are ignored)."""

    model_config = ConfigDict(extra="ignore")


class ChatTool(OpenAIRequest):
    """One of `tools`."""

    type: Literal["function"] = "function"
    function: FunctionDefinition

    def to_tool(self) -> Tool:
        """The toolrpc tool."""
        f = self.function
        function = ToolFunction(name=f.name, description=f.description, parameters=f.parameters)
        return Tool(function=function)


class ChosenFunction(OpenAIRequest):
    """`{"name": ...}` of a named tool choice."""

    name: str


class NamedChoice(OpenAIRequest):
    """`{"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"] = "function"
    function: ChosenFunction


class JsonSchemaFormat(OpenAIRequest):
    """`response_format.json_schema`: a name and the schema the answer must satisfy."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(
        default_factory=lambda: dict(JSON_OBJECT_SCHEMA), alias="schema"
    )
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return schema


class ResponseFormat(OpenAIRequest):
    """`response_format`: free text, any JSON object, or JSON valid against a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs 'json_schema': {name, schema}")
        return self

    def answer_schema(self) -> JSONObject | None:
        """The schema a text answer must satisfy, or None for free text."""
        if self.type == "json_object":
            return dict(JSON_OBJECT_SCHEMA)
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_
        return None


class StreamOptions(OpenAIRequest):
    """`stream_options`: a last chunk with the usage, when asked."""

    include_usage: bool = False


def _only(value: object, allowed: object, message: str) -> None:
    if value is not None and value != allowed:
        raise ValueError(message)


class SamplingRequest(OpenAIRequest):
    """The fields `/v1/chat/completions` and `/v1/completions` share."""

    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        _only(n, 1, f"n={n}: this server returns one choice per request (n must be 1)")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        items = [stop] if isinstance(stop, str) else stop or []
        if any(s == "" for s in items) or len(items) > 16:
            raise ValueError("at most 16 stop strings, none of them empty")
        return stop

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def includes_usage(self) -> bool:
        """A stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingRequest):
    """The body of `POST /v1/chat/completions`."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[ChatTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool = True
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        _only(logprobs, False, "logprobs are not available on this server")
        return logprobs

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, top: int | None) -> int | None:
        _only(top, 0, "top_logprobs are not available on this server")
        return top

    def choice(self) -> ToolChoice:
        """toolrpc's tool_choice (OpenAI's default: `auto`)."""
        if isinstance(self.tool_choice, NamedChoice):
            return NamedToolChoice(name=self.tool_choice.function.name)
        return self.tool_choice or "auto"

    def token_limit(self) -> int | None:
        """`max_completion_tokens`, OpenAI's newer name, else `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    """The body of `POST /v1/completions`: a plain prompt, continued without a chat template."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] = 16
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _servable(self) -> CompletionRequest:
        _only(self.echo, False, "echo is not available on this server")
        _only(self.logprobs, 0, "logprobs are not available on this server")
        _only(self.suffix, "", "suffix (insertion) is not available on this server")
        return self

    def prompt_text(self) -> str:
        """The one prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class PromptTokensDetails(BaseModel):
    """`usage.prompt_tokens_details`."""

    cached_tokens: int = 0


class CompletionUsage(BaseModel):
    """`usage` of a response or of the last stream chunk."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class AssistantMessage(BaseModel):
    """The message of a chat completion's choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ChatToolCall] | None = None


OpenAIFinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    """One (the only) choice of a chat completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: OpenAIFinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    """The answer of `POST /v1/chat/completions` without `stream`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class FunctionDelta(BaseModel):
    """A piece of a streamed call: the name in its first chunk, then argument fragments."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """`delta.tool_calls[i]` of a chunk; `id` and `type` only in a call's first chunk."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class ChunkDelta(BaseModel):
    """`choices[0].delta` of a chunk: what this chunk adds."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    """The one choice of a chunk."""

    index: int = 0
    delta: ChunkDelta
    finish_reason: OpenAIFinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed chat completion (`choices` is empty in the usage chunk)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None

    def to_json(self, *, with_usage_field: bool) -> JSONObject:
        """The chunk as OpenAI sends it: a delta carries only what it adds, `finish_reason`
        is always there (null until the end), and `usage` (null but on the last chunk) only
        when the client asked for usage."""
        data = self.model_dump(mode="json", exclude={"choices", "usage"})
        data["choices"] = [
            {
                **c.model_dump(mode="json"),
                "delta": c.delta.model_dump(mode="json", exclude_none=True),
            }
            for c in self.choices
        ]
        if with_usage_field:
            data["usage"] = None if self.usage is None else self.usage.model_dump(mode="json")
        return data


class TextChoice(BaseModel):
    """One (the only) choice of a text completion or a text completion chunk."""

    index: int = 0
    text: str
    finish_reason: OpenAIFinishReason | None
    logprobs: None = None


class TextCompletion(BaseModel):
    """The answer of `POST /v1/completions` (and each of its stream chunks)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage | None = None


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "toolrpc"


class ModelList(BaseModel):
    """`GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """`{"error": {...}}` of every `/v1` error."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None
