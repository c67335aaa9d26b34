"""What `/v1` answers: completions, stream chunks, model lists and errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from toolrpc.openai_protocol.messages import ChatToolCall
from toolrpc.types import JSONObject


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
