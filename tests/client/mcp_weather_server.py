"""A tiny MCP server for the tests: one weather tool and one that fails. Over stdio by default;
`--http PORT` serves it over streamable HTTP at `/mcp` on 127.0.0.1 (with `GET /health` for the
test to wait on)."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import PlainTextResponse

server = MCPServer("weather")


@server.tool()
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny and 21 C in {city}"


@server.tool(name="station.status")
def station_status(station: str) -> str:
    """Fails: the station is offline."""
    raise ToolError(f"station {station} is offline")


@server.custom_route("/health", methods=["GET"])
async def health(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
