"""OpenAI's messages and tools: the shapes a request and an OpenAI-compatible client share.

`ChatMessage.to_message` / `ChatMessage.of` convert one message each way (toolrpc's
`protocol.Message`), so `/v1` and a client of another server (the upstream engine) convert alike.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from toolrpc.protocol import Message, Tool, ToolCall, ToolFunction


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
