"""Running chat steps from `create_message` params, as the service does (shared by the chat
tests): the params become a `StepRequest` through `ToolRpcService.step_request`, so the tests
drive the step exactly as `/rpc` and `/stream` do."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from toolrpc.chat.conversation import Chat, DoneEvent, StepEvent
from toolrpc.protocol import CreateMessageParams, CreateMessageResult, Tool
from toolrpc.service import ToolRpcService

WAIT_S = 2.0  # bound on every step in the fast chat tests


async def run_step(
    chat: Chat, tools: Sequence[Tool] = (), *, wait_s: float = WAIT_S, **params: Any
) -> tuple[list[StepEvent], CreateMessageResult]:
    """Run one step to its end (bounded by `wait_s`); return its events and its result."""
    request = CreateMessageParams.model_validate(params)
    service = ToolRpcService(chat, tools=tools)
    async with asyncio.timeout(wait_s):
        events = [event async for event in service.stream_message(request)]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert not any(isinstance(event, DoneEvent) for event in events[:-1])
    return events, done.result
