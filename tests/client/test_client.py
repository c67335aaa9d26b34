"""`AsyncClient` and `Client` against a toolrpc app over a scripted FakeEngine.

The async client talks to the app in-process (httpx's ASGI transport, which buffers whole
responses); the sync client to the same app served on a loopback port. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.client.servers import serving_on_loopback, tool_call
from tests.server.apps import make_app
from toolrpc.client import (
    AsyncClient,
    Client,
    Options,
    Retry,
    RunDone,
    ServerUnreachable,
    StepDone,
    TextDelta,
    ToolCallsRequested,
    ToolExchange,
    tool,
)
from toolrpc.engines.fake import Reply
from toolrpc.errors import ContextLengthExceeded, InvalidParams, Overloaded, ToolProtocolError

WAIT_S = 10.0


@tool
def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city."""
    return {"city": city, "sky": "sunny"}


@tool
async def get_time(city: str) -> str:
    """The local time in a city."""
    return f"12:00 in {city}"


def in_process(*script: Reply, **app_args: Any) -> AsyncClient:
    app, _engine = make_app(*script, **app_args)
    return AsyncClient("http://test", transport=httpx.ASGITransport(app=app))


async def test_run_executes_sync_and_async_tools_and_returns_the_final_text_and_history() -> None:
    script = [
        tool_call("get_weather", city="Paris") + tool_call("get_time", city="Paris"),
        "Sunny, noon.",
    ]
    seen: list[ToolExchange] = []
    async with in_process(*script) as client, asyncio.timeout(WAIT_S):
        result = await client.run(
            "Weather and time in Paris?", tools=[get_weather, get_time], on_exchange=seen.append
        )

    assert result.text == "Sunny, noon."
    assert result.finish_reason == "stop"
    assert [e.result.content for e in seen] == [{"city": "Paris", "sky": "sunny"}, "12:00 in Paris"]
    assert [m.role for m in result.history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert result.iteration_count == 1
    assert len(result.steps) == 2


async def test_the_calls_of_one_round_run_concurrently_in_the_async_client() -> None:
    arrived: list[str] = []
    both_arrived = asyncio.Event()

    async def meet(name: str) -> str:
        """Waits until the other call has started too: only concurrent calls both return."""
        arrived.append(name)
        if len(arrived) == 2:
            both_arrived.set()
        await asyncio.wait_for(both_arrived.wait(), WAIT_S / 2)
        return f"{name} met"

    script = [tool_call("meet", name="a") + tool_call("meet", name="b"), "Both met."]
    async with in_process(*script) as client, asyncio.timeout(WAIT_S):
        result = await client.run("Meet.", tools=[meet])

    assert [e.result.content for e in result.exchanges] == ["a met", "b met"]
    assert not any(e.result.is_error for e in result.exchanges)


async def test_a_tool_that_raises_is_sent_back_as_an_error_result_and_the_turn_goes_on() -> None:
    def broken(city: str) -> str:
        """Always fails."""
        raise RuntimeError("service down")

    async with in_process(tool_call("broken", city="Oslo"), "Sorry.") as client:
        result = await client.run("Weather in Oslo?", tools=[broken])

    assert result.text == "Sorry."
    assert result.exchanges[0].result.is_error
    assert result.exchanges[0].result.content == "RuntimeError: service down"


async def test_a_call_of_a_tool_the_client_lacks_gets_an_error_result() -> None:
    async with in_process(tool_call("get_weather", city="Rome"), "Unknown.") as client:
        result = await client.run("Weather?", tools=[get_time, get_weather.definition])

    assert result.exchanges[0].result.is_error


async def test_the_loop_guard_ends_a_turn_whose_model_repeats_its_call() -> None:
    paris = tool_call("get_weather", city="Paris")
    async with in_process(paris, paris, "It is sunny.") as client, asyncio.timeout(WAIT_S):
        result = await client.run("Weather in Paris?", tools=[get_weather])

    assert result.is_loop_guarded
    assert result.text == "It is sunny."
    assert len(result.exchanges) == 1


async def test_run_stream_yields_deltas_calls_exchanges_and_the_run_result_in_order() -> None:
    script = [tool_call("get_weather", city="Paris"), "It is sunny in Paris."]
    async with in_process(*script) as client, asyncio.timeout(WAIT_S):
        events = [event async for event in client.run_stream("Weather?", tools=[get_weather])]

    kinds = [type(event).__name__ for event in events]
    assert kinds[:3] == ["ToolCallsRequested", "StepDone", "ToolExchange"]
    assert kinds[-2:] == ["StepDone", "RunDone"]
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert text == "It is sunny in Paris."
    last = events[-1]
    assert isinstance(last, RunDone) and last.result.text == text


async def test_stream_is_one_step_and_create_message_matches_it() -> None:
    async with in_process("Hello there.", "Hello there.") as client, asyncio.timeout(WAIT_S):
        events = [event async for event in client.stream("Hi", options=Options(temperature=0))]
        result = await client.create_message("Hi")

    done = events[-1]
    assert isinstance(done, StepDone)
    assert done.result.content == result.content == "Hello there."
    assert all(isinstance(e, TextDelta) for e in events[:-1])


async def test_server_errors_are_raised_as_the_classes_of_the_error_tree() -> None:
    async with in_process("unused", context_length=8) as client:
        with pytest.raises(ContextLengthExceeded) as too_long:
            await client.create_message("a long message " * 20)
        with pytest.raises(ContextLengthExceeded):
            [event async for event in client.stream("a long message " * 20)]
        with pytest.raises(ToolProtocolError):
            await client.create_message(
                tool_results=[{"tool_call_id": "nope", "content": 1}]  # type: ignore[list-item]
            )

    assert too_long.value.context_length == 8
    assert too_long.value.prompt_tokens > 8


async def test_params_the_server_would_refuse_are_refused_before_sending() -> None:
    async with in_process() as client:
        with pytest.raises(InvalidParams) as refused:
            await client.create_message("hi", options=Options(temperature=-1))

    assert refused.value.errors[0].loc == ("temperature",)


def overloaded_then(answer: dict[str, Any], refusals: int) -> httpx.MockTransport:
    """A transport that refuses `refusals` times (-32000, retry after 0 s), then answers."""
    seen = [0]

    def handle(request: httpx.Request) -> httpx.Response:
        seen[0] += 1
        request_id = json.loads(request.content)["id"]
        if seen[0] <= refusals:
            error = {"code": -32000, "message": "busy", "data": {"retry_after_s": 0}}
            return httpx.Response(200, json={"jsonrpc": "2.0", "error": error, "id": request_id})
        return httpx.Response(200, json={"jsonrpc": "2.0", "result": answer, "id": request_id})

    return httpx.MockTransport(handle)


async def test_overloaded_carries_retry_after_and_is_retried_only_when_asked() -> None:
    tools: dict[str, Any] = {"tools": []}
    plain = AsyncClient("http://test", transport=overloaded_then(tools, refusals=1))
    retrying = AsyncClient(
        "http://test", transport=overloaded_then(tools, refusals=2), retry=Retry()
    )
    async with plain, retrying:
        with pytest.raises(Overloaded) as refused:
            await plain.tool_list()
        assert await retrying.tool_list() == []

    assert refused.value.retry_after_s == 0


async def test_an_unreachable_server_is_server_unreachable() -> None:
    async with AsyncClient("http://127.0.0.1:9", timeout_s=WAIT_S) as client:
        with pytest.raises(ServerUnreachable):
            await client.tool_list()


def test_the_sync_client_runs_the_loop_and_streams_against_a_real_server() -> None:
    script = [tool_call("get_weather", city="Paris"), "Sunny.", "Streamed answer."]
    app, _engine = make_app(*script)
    with serving_on_loopback(app) as url, Client(url, timeout_s=WAIT_S) as client:
        result = client.run("Weather in Paris?", tools=[get_weather])
        events = list(client.stream("And now?", history=result.history))

    assert result.text == "Sunny."
    assert result.exchanges[0].result.content == {"city": "Paris", "sky": "sunny"}
    assert isinstance(events[-1], StepDone)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Streamed answer."
    assert not any(isinstance(e, ToolCallsRequested) for e in events)
