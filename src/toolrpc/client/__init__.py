"""A Python client of toolrpc that runs the tool loop (`Client`, `AsyncClient`).

    from toolrpc.client import Client, tool

    @tool
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
        '''Current weather for a city.

        Args:
            city: the city's name, e.g. Paris
        '''
        return {"city": city, "temp": 18, "unit": unit}

    with Client("http://127.0.0.1:8000") as client:
        answer = client.run("What's the weather in Paris?", tools=[get_weather])
        print(answer.text)            # the final answer
        history = answer.history      # send it back with the next message

`create_message` and `stream` are one protocol step each; `run` and `run_stream` run a whole
turn: they run every call the model asks for (validated against the function's signature first;
an exception is sent back as an `is_error` result) and send the results back until the server
answers with text, a final answer or the loop guard's. Errors are the classes of
`toolrpc.errors`, mapped from the server's JSON-RPC codes (`Overloaded.retry_after_s`; opt in to
retrying with `retry=Retry()`), plus `ServerUnreachable` for a failed connection.

This package speaks only the wire protocol: it imports `toolrpc.protocol` (the wire models),
`toolrpc.errors` and `toolrpc.types`, never the server, the chat layer or an engine, so it works
against any toolrpc server. MCP servers' tools: `toolrpc.client.mcp` (the `toolrpc[mcp]`
extra); a terminal chat over this client: `toolrpc chat` (`toolrpc.chat_cli`).
"""

from toolrpc.client.async_client import AsyncClient
from toolrpc.client.errors import ServerUnreachable, UnexpectedResponse, error_from_wire
from toolrpc.client.events import (
    RunDone,
    RunEvent,
    RunResult,
    StepDone,
    StreamEvent,
    StreamFailed,
    TextDelta,
    ToolCallsRequested,
    ToolExchange,
)
from toolrpc.client.retry import Retry
from toolrpc.client.sync_client import Client
from toolrpc.client.tools import ClientTool, FunctionTool, ToolOutcome, tool
from toolrpc.client.wire import Options

__all__ = [
    "AsyncClient",
    "Client",
    "ClientTool",
    "FunctionTool",
    "Options",
    "Retry",
    "RunDone",
    "RunEvent",
    "RunResult",
    "ServerUnreachable",
    "StepDone",
    "StreamEvent",
    "StreamFailed",
    "TextDelta",
    "ToolCallsRequested",
    "ToolExchange",
    "ToolOutcome",
    "UnexpectedResponse",
    "error_from_wire",
    "tool",
]
