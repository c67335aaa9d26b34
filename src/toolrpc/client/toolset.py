"""The tools a request offers and the ones the client can run, from what the caller passed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from toolrpc.client.tools import ClientTool, as_tool
from toolrpc.client.wire import Options, StepInput, ToolChoiceArg
from toolrpc.protocol import Message, Tool, ToolResult

ToolLike: TypeAlias = Tool | ClientTool | Callable[..., Any]
"""A wire definition only (the model may call it; the caller runs it), a runnable tool, or a
plain function (made a tool by `toolrpc.client.tool`)."""


def definitions(tools: Sequence[ToolLike] | None) -> tuple[Tool, ...] | None:
    """The wire definitions to send; None (the server's own tools) when `tools` is None."""
    if tools is None:
        return None
    return tuple(item if isinstance(item, Tool) else as_tool(item).definition for item in tools)


def runnable_tools(tools: Sequence[ToolLike] | None) -> dict[str, ClientTool]:
    """The tools the client can run, by name. Raises `ValueError` when two share a name (the
    model could not tell them apart)."""
    found: dict[str, ClientTool] = {}
    for item in tools or ():
        if isinstance(item, Tool):
            continue
        runnable = as_tool(item)
        name = runnable.definition.name
        if name in found:
            raise ValueError(f"two tools are named {name!r}")
        found[name] = runnable
    return found


def step_input(
    message: str | None,
    *,
    history: Sequence[Message],
    tools: Sequence[ToolLike] | None,
    tool_results: Sequence[ToolResult] = (),
    tool_choice: ToolChoiceArg,
    system: str | None,
    options: Options | None,
) -> StepInput:
    """The first step of a call or a run, from the arguments the client's methods take."""
    return StepInput(
        message=message,
        history=tuple(history),
        tools=definitions(tools),
        tool_results=tuple(tool_results),
        tool_choice=tool_choice,
        system=system,
        options=options or Options(),
    )
