"""The bodies of `POST /v1/chat/completions` and `POST /v1/completions`.

Unknown fields are ignored; what cannot be honoured where honouring matters (`n` > 1,
`logprobs`, `echo`, `suffix`) is refused with its location (the package docstring says why).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from toolrpc.openai_protocol.messages import ChatMessage, ChatTool, OpenAIRequest
from toolrpc.protocol import NamedToolChoice, ToolChoice, checked_json_schema
from toolrpc.types import JSONObject

JSON_OBJECT_SCHEMA: JSONObject = {"type": "object"}
"""`response_format: {"type": "json_object"}`: any JSON object."""


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
        return checked_json_schema(schema)


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
