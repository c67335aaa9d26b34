"""The methods toolrpc serves, independent of transport: `create_message`, `tool_list`, streaming.

`ToolRpcService` applies the server's limits and defaults (its tools, the cap on
`max_new_tokens`) to a request and hands it to the chat layer. `/rpc` reaches it through the
JSON-RPC dispatcher (`methods()`), `/stream` through `stream_message`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from toolrpc.chat.conversation import ChatSession, DoneEvent, StepEvent
from toolrpc.errors import InvalidParams, ParamError, ToolRpcError
from toolrpc.protocol import CreateMessageParams, CreateMessageResult, Tool, ToolListResult
from toolrpc.rpc import Method

_TOOLS = TypeAdapter(list[Tool])


def load_tools(path: Path) -> list[Tool]:
    """Read the server's tools from a JSON file: a list of tools, or `{"tools": [...]}`.

    Raises `ValueError` naming the file and the problem.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "tools" in data:
            data = data["tools"]
        return _TOOLS.validate_python(data)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"cannot read tools from {path}: {exc}") from exc


class ToolRpcService:
    """create_message / tool_list / streaming over one ChatSession."""

    def __init__(
        self, chat: ChatSession, *, tools: Sequence[Tool] = (), max_new_tokens_limit: int = 2048
    ) -> None:
        self.chat = chat
        self.tools = list(tools)
        self.max_new_tokens_limit = max_new_tokens_limit

    def methods(self) -> list[Method]:
        """The JSON-RPC methods of this service."""
        return [
            Method("create_message", self.create_message, CreateMessageParams),
            Method("tool_list", self.tool_list, None),
        ]

    async def create_message(self, params: CreateMessageParams) -> CreateMessageResult:
        """Run one conversation step to its end."""
        async with aclosing(self.stream_message(params)) as events:
            async for event in events:
                if isinstance(event, DoneEvent):
                    return event.result
        raise ToolRpcError("the conversation step ended without a result")

    def stream_message(self, params: CreateMessageParams) -> AsyncGenerator[StepEvent, None]:
        """Run one conversation step, event by event."""
        if params.session_id is not None:
            raise InvalidParams(
                "server-side sessions are not available on this server; send 'history' instead",
                [ParamError(("session_id",), "sessions are not enabled")],
            )
        capped = min(params.max_new_tokens, self.max_new_tokens_limit)
        params = params.model_copy(update={"max_new_tokens": capped})
        tools = params.tools if params.tools is not None else self.tools
        return self.chat.step(params, tools)

    async def tool_list(self, _params: None) -> ToolListResult:
        """The tools configured on the server."""
        return ToolListResult(tools=self.tools)
