"""The client against a real server process on the embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.test_mcp import SERVER as MCP_SERVER
from tests.e2e.conftest import RunningServer, start_server, stop_server
from toolrpc.client import AsyncClient, Client, Options, StepDone, TextDelta, ToolExchange
from toolrpc.client.mcp import McpServers

pytestmark = pytest.mark.slow
WAIT_S = 240.0
GREEDY = Options(temperature=0, max_new_tokens=48)


def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city."""
    return {"city": city, "sky": "sunny", "temp_c": 21}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("embedded")
    running = start_server(folder / "server.log", "--parallel", "2", "--ctx-size", "2048")
    yield running
    stop_server(running)


def test_the_embedded_model_is_served_under_its_own_name(server: RunningServer) -> None:
    with Client(server.url) as client:
        assert client.health().model == "SmolLM2-135M-Instruct"


def test_run_executes_the_tool_the_model_chooses_and_answers_with_its_result(
    server: RunningServer,
) -> None:
    # The "done when", as written: tool_choice "auto" (the router decides on this
    # template), the function passed as it is.
    with Client(server.url, timeout_s=WAIT_S) as client:
        result = client.run("What's the weather in Paris?", tools=[get_weather], options=GREEDY)

    assert result.exchanges[0].call.name == "get_weather"
    assert result.exchanges[0].call.arguments == {"city": "Paris"}
    assert result.exchanges[0].result.content == {"city": "Paris", "sky": "sunny", "temp_c": 21}
    assert result.text.strip()
    assert [m.role for m in result.history][:3] == ["user", "assistant", "tool"]


async def test_an_mcp_tool_is_called_by_the_embedded_model_and_answers_stream(
    server: RunningServer,
) -> None:
    async with (
        asyncio.timeout(WAIT_S),
        McpServers(MCP_SERVER) as mcp,
        AsyncClient(server.url, timeout_s=WAIT_S) as client,
    ):
        weather = [t for t in mcp.tools if t.definition.name == "get_weather"]
        events = [
            event
            async for event in client.run_stream(
                "Weather in Rome?", tools=weather, tool_choice="get_weather", options=GREEDY
            )
        ]

    exchanges = [event for event in events if isinstance(event, ToolExchange)]
    assert exchanges and "Sunny and 21 C in" in str(exchanges[0].result.content)
    assert any(isinstance(e, TextDelta) and e.text for e in events)
    assert isinstance(events[-2], StepDone) and events[-2].result.type == "final_text"
