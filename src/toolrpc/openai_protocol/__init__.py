"""OpenAI's chat-completions wire (`/v1`) as pydantic models: requests and responses.

Only shapes live here; `server/openai/translate.py` maps them onto the chat layer and back.
Requests ignore unknown fields (`user`, `logit_bias`, `frequency_penalty`, ...), as OpenAI and
the OpenAI-compatible servers do, so clients written for OpenAI work unchanged; what toolrpc
cannot honour where honouring matters (`n` > 1, `logprobs`, `echo`, a content part that is not
text) is refused here with its location, so it becomes a 400 that names the field.

`messages.py` holds what a request and a client of an OpenAI-compatible server share (messages,
tools; `ChatMessage.to_message` / `ChatMessage.of` convert one message each way, so the upstream
engine, which speaks this wire to vLLM, SGLang or llama-server, converts as `/v1` does);
`requests.py` the request bodies; `responses.py` the answers, chunks and errors.
"""

from toolrpc.openai_protocol.messages import (
    ChatMessage,
    ChatTool,
    ChatToolCall,
    ContentPart,
    FunctionCall,
    FunctionDefinition,
    OpenAIRequest,
)
from toolrpc.openai_protocol.requests import (
    JSON_OBJECT_SCHEMA,
    ChatCompletionRequest,
    ChosenFunction,
    CompletionRequest,
    JsonSchemaFormat,
    NamedChoice,
    ResponseFormat,
    SamplingRequest,
    StreamOptions,
)
from toolrpc.openai_protocol.responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
    ErrorDetail,
    FunctionDelta,
    ModelCard,
    ModelList,
    OpenAIFinishReason,
    PromptTokensDetails,
    TextChoice,
    TextCompletion,
    ToolCallDelta,
)

__all__ = [
    "JSON_OBJECT_SCHEMA",
    "AssistantMessage",
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatTool",
    "ChatToolCall",
    "ChosenFunction",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionRequest",
    "CompletionUsage",
    "ContentPart",
    "ErrorDetail",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionDelta",
    "JsonSchemaFormat",
    "ModelCard",
    "ModelList",
    "NamedChoice",
    "OpenAIFinishReason",
    "OpenAIRequest",
    "PromptTokensDetails",
    "ResponseFormat",
    "SamplingRequest",
    "StreamOptions",
    "TextChoice",
    "TextCompletion",
    "ToolCallDelta",
]
