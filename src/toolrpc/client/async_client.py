"""`AsyncClient`: toolrpc's protocol and the tool loop for asyncio code.

The parallel of `Client` (the same methods, awaited); the calls of one round run concurrently
(`asyncio.gather`: async tools overlap, sync ones run in worker threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any

import httpx

from toolrpc.client.errors import (
    ServerUnreachable,
    error_from_http,
    translated_transport_errors,
)
from toolrpc.client.events import (
    RunDone,
    RunEvent,
    RunResult,
    StepDone,
    StreamEvent,
    StreamFailed,
    ToolExchange,
)
from toolrpc.client.retry import NO_RETRY, Retry
from toolrpc.client.tools import ClientTool, raised
from toolrpc.client.toolset import ToolLike, runnable_tools, step_input
from toolrpc.client.wire import (
    Options,
    ServerHealth,
    SseDecoder,
    StepInput,
    ToolChoiceArg,
    parse_health,
    parse_result,
    rpc_request,
    rpc_result,
    run_log,
    tool_result,
    unknown_tool,
)
from toolrpc.errors import Overloaded
from toolrpc.protocol import (
    CreateMessageResult,
    Message,
    Tool,
    ToolCall,
    ToolListResult,
    ToolResult,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 300.0
"""A step on a CPU can take minutes (a long answer from a large model); a stalled connection
is still noticed."""


class AsyncClient:
    """A client of one toolrpc server (see the package docstring). Use it as an async context
    manager, or call `aclose`. Every method raises the `toolrpc.errors` class of the server's
    error, and `ServerUnreachable` when the server cannot be reached."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: Retry = NO_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._retry = retry
        self._next_id = 0

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def create_message(
        self,
        message: str | None = None,
        *,
        history: Sequence[Message] = (),
        tools: Sequence[ToolLike] | None = None,
        tool_results: Sequence[ToolResult] = (),
        tool_choice: ToolChoiceArg = "auto",
        system: str | None = None,
        options: Options | None = None,
    ) -> CreateMessageResult:
        """One `create_message` step (`/rpc`). Raises `InvalidParams` before sending for params
        the server would refuse."""
        step = step_input(
            message,
            history=history,
            tools=tools,
            tool_results=tool_results,
            tool_choice=tool_choice,
            system=system,
            options=options,
        )
        return await self._create(step)

    def stream(
        self,
        message: str | None = None,
        *,
        history: Sequence[Message] = (),
        tools: Sequence[ToolLike] | None = None,
        tool_results: Sequence[ToolResult] = (),
        tool_choice: ToolChoiceArg = "auto",
        system: str | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """One step through `/stream`, event by event. An error before the stream starts is
        raised; one after is the last event (`StreamFailed`)."""
        step = step_input(
            message,
            history=history,
            tools=tools,
            tool_results=tool_results,
            tool_choice=tool_choice,
            system=system,
            options=options,
        )
        return self._stream(step)

    async def health(self) -> ServerHealth:
        """`GET /health`: the served model and its context window."""
        with translated_transport_errors():
            response = await self._http.get("/health")
        return parse_health(response.status_code, response.text)

    async def tool_list(self) -> list[Tool]:
        """The server's own tools (`--tools FILE`)."""
        value = await self._call("tool_list", None)
        return ToolListResult.model_validate(value).tools

    async def run(
        self,
        message: str,
        *,
        tools: Sequence[ToolLike] | None = None,
        history: Sequence[Message] = (),
        tool_choice: ToolChoiceArg = "auto",
        system: str | None = None,
        options: Options | None = None,
        on_exchange: Callable[[ToolExchange], None] | None = None,
    ) -> RunResult:
        """Run the turn to its final answer: send `message`, run each call the model asks for
        (the round's calls concurrently), send the results back, until the server answers
        with text. `on_exchange` sees each call and its result as they finish."""
        runnable = runnable_tools(tools)
        step = step_input(
            message,
            history=history,
            tools=tools,
            tool_choice=tool_choice,
            system=system,
            options=options,
        )
        log = run_log(step.options)
        while True:
            result = await self._create(step)
            log.add_step(result)
            if isinstance(result.content, str):
                return log.finish()
            exchanges = await run_calls(result.content, runnable)
            for exchange in exchanges:
                log.exchanges.append(exchange)
                if on_exchange is not None:
                    on_exchange(exchange)
            step = step.next_step(result, [exchange.result for exchange in exchanges])

    async def run_stream(
        self,
        message: str,
        *,
        tools: Sequence[ToolLike] | None = None,
        history: Sequence[Message] = (),
        tool_choice: ToolChoiceArg = "auto",
        system: str | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[RunEvent, None]:
        """`run` through `/stream`: yields each step's events, a `ToolExchange` per call run,
        and last `RunDone`. Raises the server's error when a step fails mid-stream."""
        runnable = runnable_tools(tools)
        step = step_input(
            message,
            history=history,
            tools=tools,
            tool_choice=tool_choice,
            system=system,
            options=options,
        )
        log = run_log(step.options)
        while True:
            result: CreateMessageResult | None = None
            async with aclosing(self._stream(step)) as events:
                async for event in events:
                    if isinstance(event, StreamFailed):
                        raise event.error
                    yield event
                    if isinstance(event, StepDone):
                        result = event.result
            if result is None:
                raise ServerUnreachable("the stream ended without a result")
            log.add_step(result)
            if isinstance(result.content, str):
                yield RunDone(log.finish())
                return
            exchanges = await run_calls(result.content, runnable)
            for exchange in exchanges:
                log.exchanges.append(exchange)
                yield exchange
            step = step.next_step(result, [exchange.result for exchange in exchanges])

    async def _create(self, step: StepInput) -> CreateMessageResult:
        return parse_result(await self._call("create_message", step.body()))

    async def _call(self, method: str, params: dict[str, Any] | None) -> Any:
        attempt = 1
        while True:
            try:
                return await self._post_rpc(method, params)
            except Overloaded as exc:
                wait_s = self._retry.wait_s(exc, attempt)
                if wait_s is None:
                    raise
                await asyncio.sleep(wait_s)
                attempt += 1

    async def _post_rpc(self, method: str, params: dict[str, Any] | None) -> Any:
        self._next_id += 1
        with translated_transport_errors():
            response = await self._http.post(
                "/rpc", json=rpc_request(method, params, self._next_id)
            )
        return rpc_result(response.status_code, response.text)

    async def _stream(self, step: StepInput) -> AsyncGenerator[StreamEvent, None]:
        body = step.body()
        attempt = 1
        while True:
            try:
                async with aclosing(self._stream_once(body)) as events:
                    async for event in events:
                        yield event
                return
            except Overloaded as exc:
                wait_s = self._retry.wait_s(exc, attempt)
                if wait_s is None:
                    raise
                await asyncio.sleep(wait_s)
                attempt += 1

    async def _stream_once(self, body: dict[str, Any]) -> AsyncGenerator[StreamEvent, None]:
        decoder = SseDecoder()
        with translated_transport_errors():
            async with self._http.stream("POST", "/stream", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_http(response.status_code, _json_or_none(response))
                async for line in response.aiter_lines():
                    event = decoder.feed(line)
                    if event is not None:
                        yield event
                        if isinstance(event, StepDone | StreamFailed):
                            return
        last = decoder.feed("")
        if not isinstance(last, StepDone | StreamFailed):
            raise ServerUnreachable("the stream ended without a result")
        yield last


async def run_calls(calls: Sequence[ToolCall], tools: dict[str, ClientTool]) -> list[ToolExchange]:
    """Run one round's calls concurrently; each exchange pairs a call with its result."""

    async def run_one(call: ToolCall) -> ToolExchange:
        tool = tools.get(call.name)
        if tool is None:
            return ToolExchange(call, tool_result(call, unknown_tool(call)))
        try:
            outcome = await tool.invoke(call.arguments)
        except Exception as exc:  # a ClientTool that broke its promise not to raise
            outcome = raised(exc)
        return ToolExchange(call, tool_result(call, outcome))

    return list(await asyncio.gather(*(run_one(call) for call in calls)))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
