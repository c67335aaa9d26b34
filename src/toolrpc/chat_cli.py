"""`toolrpc chat`: a terminal chat with a toolrpc server, tools run on this machine.

It talks to a running server (`--url`, default http://127.0.0.1:8000), or with `--model` /
`--engine` loads a model in this process and serves it on a free loopback port for itself (a
real server, so answers stream exactly as they do over the network). Answers stream token by
token; each tool call the model asks for is shown, run (`--tools module:function`, repeatable;
`--mcp COMMAND_OR_URL`, repeatable) and its result shown. Ctrl-C stops the current answer and
returns to the prompt; Ctrl-D or /quit leaves. Commands: /reset, /system [TEXT], /tools, /help.

It is a client of the wire protocol (`toolrpc.client`); only the in-process mode imports the
server, and only when asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from prompt_toolkit import PromptSession
from prompt_toolkit import print_formatted_text as print_styled
from prompt_toolkit.formatted_text import FormattedText

from toolrpc.client import (
    AsyncClient,
    ClientTool,
    Options,
    RunDone,
    StepDone,
    TextDelta,
    ToolCallsRequested,
    ToolExchange,
)
from toolrpc.client.tools import as_tool
from toolrpc.errors import ToolRpcError
from toolrpc.protocol import Message

HELP = """commands:
  /reset          forget the conversation
  /system [TEXT]  set the system prompt (no TEXT: show it)
  /tools          list the tools the model may call
  /quit           leave (Ctrl-D too); Ctrl-C stops an answer"""


@dataclass
class ChatState:
    """What the chat carries from one message to the next."""

    history: list[Message] = field(default_factory=list)
    system: str | None = None


def load_function_tools(specs: Sequence[str]) -> list[ClientTool]:
    """Import each `module:function` as a tool. Raises `ValueError` naming a spec that does not
    name an importable function."""
    tools = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"--tools {spec}: expected MODULE:FUNCTION")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
            tools.append(as_tool(value))
        except (ImportError, AttributeError, TypeError) as exc:
            raise ValueError(f"--tools {spec}: {exc}") from exc
    return tools


def say(style: str, text: str) -> None:
    """One styled line (prompt_toolkit's styles: 'ansired', 'ansigray', ...)."""
    print_styled(FormattedText([(style, text)]))


async def answer(
    client: AsyncClient, message: str, state: ChatState, tools: list[ClientTool], options: Options
) -> None:
    """Stream one turn: text as it comes, each call and its result; the history moves on only
    when the turn completes."""
    events = client.run_stream(
        message, tools=tools or None, history=state.history, system=state.system, options=options
    )
    async for event in events:
        if isinstance(event, TextDelta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ToolCallsRequested):
            for call in event.calls:
                say("ansimagenta", f"→ {call.name}({json.dumps(call.arguments)})")
        elif isinstance(event, ToolExchange):
            style = "ansired" if event.result.is_error else "ansigreen"
            say(style, f"← {event.call.name}: {json.dumps(event.result.content)[:500]}")
        elif isinstance(event, StepDone) and event.result.type == "final_text":
            sys.stdout.write("\n")
            if event.result.finish_reason != "stop":
                say("ansiyellow", f"[{event.result.finish_reason}]")
        elif isinstance(event, RunDone):
            state.history = list(event.result.history)


async def answer_until_interrupted(answering: asyncio.Future[None]) -> None:
    """Await the answer; Ctrl-C (SIGINT) cancels it instead of leaving the program."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, answering.cancel)
    try:
        await answering
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the chat itself is being cancelled, not just this answer
        say("ansiyellow", "\n[stopped]")
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def command(line: str, state: ChatState, tools: list[ClientTool]) -> bool:
    """Carry out a /command; False when it asks to leave."""
    name, _, rest = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/reset":
        state.history = []
        say("ansigray", "[conversation forgotten]")
    elif name == "/system":
        if rest.strip():
            state.system = rest.strip()
        say("ansigray", f"[system: {state.system or '(none)'}]")
    elif name == "/tools":
        for tool in tools:
            say("ansigray", f"  {tool.definition.name}: {tool.definition.function.description}")
        if not tools:
            say("ansigray", "[no client tools: the server's own tools, if any, are offered]")
    else:
        say("ansigray", HELP)
    return True


async def chat_loop(client: AsyncClient, tools: list[ClientTool], args: argparse.Namespace) -> None:
    """Read messages until /quit or Ctrl-D."""
    options = Options(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        max_iterations=args.max_iterations,
    )
    state = ChatState(system=args.system)
    session: PromptSession[str] = PromptSession()
    while True:
        try:
            line = (await session.prompt_async("you> ")).strip()
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        if not line:
            continue
        if line.startswith("/"):
            if not command(line, state, tools):
                return
            continue
        task = asyncio.ensure_future(answer(client, line, state, tools, options))
        try:
            await answer_until_interrupted(task)
        except ToolRpcError as exc:
            say("ansired", f"\nerror {exc.code}: {exc.message}")


@asynccontextmanager
async def in_process_server(args: argparse.Namespace) -> AsyncIterator[str]:
    """Load the model and serve it on a free loopback port in this process; yields its URL.
    Raises `ValueError` when the model cannot be loaded."""
    from toolrpc.config import Settings
    from toolrpc.engines.factory import load_engine
    from toolrpc.server.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = {"model": None if args.model in (None, "default") else args.model}
    settings = Settings(**flags, **({"engine": args.engine} if args.engine else {}))
    default = "the fake engine" if settings.engine_kind == "fake" else "the embedded model"
    say("ansigray", f"[loading {settings.model or default}…]")
    engine = await asyncio.to_thread(load_engine, settings)
    app = create_app(settings, engine=engine, close_engine=True)
    server = ReadyServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.wait(
            {serving, asyncio.ensure_future(server.ready.wait())}, return_when="FIRST_COMPLETED"
        )
        if serving.done():
            serving.result()  # raises what stopped it
            raise ValueError(f"the in-process server stopped at once (port {port})")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


class ReadyServer(uvicorn.Server):
    """A uvicorn server that says when it listens (`ready`), so nothing waits by polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening, then set `ready`."""
        await super().startup(sockets)
        self.ready.set()


async def chat(args: argparse.Namespace) -> int:
    """The whole session; returns the exit status (2: a bad flag, a server that is not there)."""
    try:
        tools = load_function_tools(args.tools)
    except ValueError as exc:
        print(f"toolrpc chat: error: {exc}", file=sys.stderr)
        return 2
    async with AsyncExitStack() as stack:
        url = args.url
        if args.model is not None or args.engine is not None:
            url = await stack.enter_async_context(in_process_server(args))
        if args.mcp:
            from toolrpc.client.mcp import McpServers

            servers = await stack.enter_async_context(McpServers(*args.mcp))
            tools += servers.tools
        client = await stack.enter_async_context(AsyncClient(url, api_key=args.api_key))
        try:
            health = await client.health()
        except ToolRpcError as exc:
            print(f"toolrpc chat: error: no toolrpc server at {url}: {exc}", file=sys.stderr)
            return 2
        say("ansigray", f"[{health.model} at {url}; /help for commands]")
        await chat_loop(client, tools, args)
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """`toolrpc chat`'s entry point (called by cli.main with the parsed flags); the working
    directory is importable, so `--tools my_tools:search` finds ./my_tools.py."""
    if "" not in sys.path:
        sys.path.insert(0, "")
    return asyncio.run(chat(args))
