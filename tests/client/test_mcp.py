"""MCP tools: an MCP server started by the test (over stdio, and over streamable HTTP as a
process of its own) whose tool the model calls."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

import httpx

from tests.client.servers import tool_call
from tests.server.apps import make_app
from toolrpc.client import AsyncClient
from toolrpc.client.mcp import McpServers
from toolrpc.testing import free_port, running_server

SERVER = shlex.join([sys.executable, str(Path(__file__).with_name("mcp_weather_server.py"))])
WAIT_S = 60.0  # starting a Python process with the MCP SDK takes seconds on a busy machine


async def test_the_tools_of_a_stdio_mcp_server_are_offered_with_their_schemas() -> None:
    async with asyncio.timeout(WAIT_S), McpServers(SERVER) as servers:
        tools = {tool.definition.name: tool.definition for tool in servers.tools}

    assert set(tools) == {"get_weather", "station_status"}
    assert tools["get_weather"].function.parameters["required"] == ["city"]
    assert tools["get_weather"].function.description == "Current weather for a city."


async def test_the_models_call_runs_on_the_mcp_server_and_its_failure_is_an_error_result() -> None:
    script = [
        tool_call("get_weather", city="Paris") + tool_call("station_status", station="S1"),
        "It is sunny in Paris.",
    ]
    app, engine = make_app(*script)
    transport = httpx.ASGITransport(app=app)
    async with (
        asyncio.timeout(WAIT_S),
        McpServers(SERVER) as servers,
        AsyncClient("http://test", transport=transport) as client,
    ):
        result = await client.run("Weather in Paris?", tools=servers.tools)

    weather, station = result.exchanges
    assert weather.result.content == "Sunny and 21 C in Paris"
    assert not weather.result.is_error
    assert station.result.is_error
    assert "offline" in str(station.result.content)
    assert result.text == "It is sunny in Paris."
    assert "Sunny and 21 C in Paris" in engine.requests[-1].prompt


async def test_the_tools_of_a_streamable_http_mcp_server_run_there(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("mcp_weather_server.py")), "--http"]
    script = [tool_call("get_weather", city="Oslo"), "It is sunny in Oslo."]
    app, _engine = make_app(*script)
    transport = httpx.ASGITransport(app=app)
    with running_server([*argv, str(port)], port, tmp_path / "mcp.log", timeout_s=WAIT_S):
        async with (
            asyncio.timeout(WAIT_S),
            McpServers(f"http://127.0.0.1:{port}/mcp") as servers,
            AsyncClient("http://test", transport=transport) as client,
        ):
            names = {tool.definition.name for tool in servers.tools}
            result = await client.run("Weather in Oslo?", tools=servers.tools)

    assert names == {"get_weather", "station_status"}
    (weather,) = result.exchanges
    assert weather.result.content == "Sunny and 21 C in Oslo"
    assert result.text == "It is sunny in Oslo."
