"""The tools of MCP servers, offered to the model and run on those servers (`toolrpc[mcp]`).

    async with McpServers("python weather_server.py", "http://127.0.0.1:9000/mcp") as mcp:
        async with AsyncClient() as client:
            answer = await client.run("Weather in Paris?", tools=mcp.tools)

Each server is a command line (started as a subprocess, spoken to over stdio) or an `http(s)://`
URL (streamable HTTP); both through the official `mcp` SDK's `Client`. Each tool's input schema
becomes the toolrpc tool's `parameters`; a call runs `tools/call` on its server, and its
text parts joined (or its structured content) are the result, `isError` the result's `is_error`.
A name the protocol refuses (dots, spaces) is offered with those characters replaced by `_`.
MCP sessions are bound to the event loop that opened them, so these tools are for `AsyncClient`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import mcp
import mcp_types
from pydantic import ValidationError

from toolrpc.client.tools import ToolOutcome, raised
from toolrpc.protocol import Tool, ToolFunction

MAX_TOOL_PAGES = 100
"""A bound on `tools/list` pages per server, so a server whose cursor never ends cannot hang."""


@dataclass(frozen=True)
class McpTool:
    """One tool of an MCP server, as a `ClientTool`."""

    definition: Tool
    remote_name: str
    session: mcp.Client

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Run the tool on its server; an MCP error or a broken connection is an `is_error`
        outcome, as a raising function's is."""
        try:
            result = await self.session.call_tool(self.remote_name, dict(arguments))
        except Exception as exc:
            return raised(exc)
        return outcome_of(result)


def outcome_of(result: mcp_types.CallToolResult) -> ToolOutcome:
    """The result sent to the model: the content parts joined (text as it is, other parts
    named by their type); the structured content only when there are no parts. Text first,
    because servers wrap a plain return value as `{"result": ...}` in the structured content,
    and a small model reads the plain text better."""
    if not result.content and result.structured_content is not None:
        return ToolOutcome(result.structured_content, is_error=result.is_error)
    parts = [
        part.text if isinstance(part, mcp_types.TextContent) else f"[{part.type}]"
        for part in result.content
    ]
    return ToolOutcome("\n".join(parts), is_error=result.is_error)


def server_target(spec: str) -> str | mcp.StdioServerParameters:
    """A URL as it is (streamable HTTP); anything else a command line to start (stdio).
    Raises `ValueError` for an empty command."""
    if re.match(r"^https?://", spec):
        return spec
    words = shlex.split(spec)
    if not words:
        raise ValueError("an MCP server needs a command or a URL")
    return mcp.StdioServerParameters(command=words[0], args=words[1:])


def offered_name(name: str) -> str:
    """The MCP tool's name as the protocol allows it (`^[A-Za-z0-9_-]{1,64}$`)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "tool"


class McpServers:
    """Connections to MCP servers and their tools; an async context manager (see the module
    docstring). Entering raises `ValueError` when two tools would have the same name or a
    server's schema is not a JSON Schema, and the SDK's errors when a server cannot start."""

    def __init__(self, *servers: str) -> None:
        self.specs = servers
        self.tools: list[McpTool] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> McpServers:
        try:
            for spec in self.specs:
                session = await self._stack.enter_async_context(mcp.Client(server_target(spec)))
                self.tools += await list_tools(session, spec)
            _refuse_duplicates(self.tools)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()


async def list_tools(session: mcp.Client, spec: str) -> list[McpTool]:
    """Every tool of one connected server (all pages, at most MAX_TOOL_PAGES)."""
    found: list[McpTool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await session.list_tools(cursor=cursor)
        found += [mcp_tool(session, spec, tool) for tool in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


def mcp_tool(session: mcp.Client, spec: str, tool: mcp_types.Tool) -> McpTool:
    """One MCP tool as toolrpc's. Raises `ValueError` when its input schema is refused."""
    try:
        function = ToolFunction(
            name=offered_name(tool.name),
            description=tool.description or tool.title or "",
            parameters=dict(tool.input_schema),
        )
    except ValidationError as exc:
        raise ValueError(f"MCP server {spec!r}: tool {tool.name!r} is refused: {exc}") from exc
    return McpTool(Tool(function=function), tool.name, session)


def _refuse_duplicates(tools: Sequence[McpTool]) -> None:
    names = [tool.definition.name for tool in tools]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"MCP tools with the same name: {', '.join(twice)}")
