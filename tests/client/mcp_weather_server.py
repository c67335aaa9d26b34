"""A tiny MCP server over stdio for the tests: one weather tool and one that fails."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("weather")


@server.tool()
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny and 21 C in {city}"


@server.tool(name="station.status")
def station_status(station: str) -> str:
    """Fails: the station is offline."""
    raise ToolError(f"station {station} is offline")


if __name__ == "__main__":
    server.run("stdio")
