"""The `toolrpc` command: `toolrpc serve [flags]` (also `python -m toolrpc`, `python server.py`).

The command line is argparse with one subparser per command, so `toolrpc chat` slots in beside
`serve`. `serve`'s flags are built from the `Settings` fields: the field's description is the
help, its `group` (see `config.FLAG_GROUPS`) the section, its type the metavar or the choices.
argparse, not pydantic-settings' `CliApp`: the latter prints `{str,null}` metavars and a second
`(default: null)` after descriptions that give the default, and has no argument groups.

Flags are parsed with `default=SUPPRESS`, so only the flags given reach `Settings(**flags)`, which
reads the rest from `TOOLRPC_*` variables (init values win over the environment: flags win). Every
bad flag, value or combination ends as one line on stderr, `toolrpc serve: error: ...`, and exit
code 2, as argparse's own errors do; never a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, NoReturn, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import SettingsError

from toolrpc.client.async_client import DEFAULT_URL
from toolrpc.config import FLAG_GROUPS, Settings

logger = logging.getLogger("toolrpc")

SERVE_DESCRIPTION = (
    "Serve a model over JSON-RPC 2.0 (/rpc), SSE (/stream) and the OpenAI API (/v1). Every flag "
    "is also an environment variable TOOLRPC_<NAME> (--ctx-size: TOOLRPC_CTX_SIZE); flags win."
)
METAVARS: Mapping[object, str] = types.MappingProxyType(
    {int: "N", float: "NUM", str: "TEXT", Path: "PATH"}
)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `PROG: error: MESSAGE`, and exit code 2.

    argparse's own `error` prints the whole usage first: with two dozen flags that buries the
    one line that matters.
    """

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE` on stderr and exit with code 2 (raises SystemExit)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class CommandLine:
    """The `toolrpc` parser and the parser of each of its subcommands."""

    toolrpc: argparse.ArgumentParser
    serve: argparse.ArgumentParser
    chat: argparse.ArgumentParser


def build_command_line() -> CommandLine:
    """The `toolrpc` parser with its `serve` subcommand, whose flags are the Settings fields.

    Raises `ValueError` if a Settings field names no `group` of `FLAG_GROUPS`.
    """
    toolrpc = OneLineErrorParser(
        prog="toolrpc", description="An LLM server with tool calling.", allow_abbrev=False
    )
    commands = toolrpc.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="serve a model (toolrpc serve --help lists its flags)",
        description=SERVE_DESCRIPTION,
        usage="toolrpc serve [options]",
        allow_abbrev=False,
    )
    groups: dict[object, argparse._ArgumentGroup] = {
        name: serve_parser.add_argument_group(name) for name in FLAG_GROUPS
    }
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        group = groups.get(extra.get("group"))
        if group is None:
            raise ValueError(f"Settings.{name} names no flag group of {FLAG_GROUPS}")
        metavar = extra.get("metavar")
        add_flag(group, name, field, metavar=metavar if isinstance(metavar, str) else None)
    chat_parser = commands.add_parser(
        "chat",
        help="chat in the terminal with a server, tools run here (toolrpc chat --help)",
        description="Chat with a toolrpc server in the terminal; tools run on this machine.",
        allow_abbrev=False,
    )
    add_chat_arguments(chat_parser)
    return CommandLine(toolrpc=toolrpc, serve=serve_parser, chat=chat_parser)


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `toolrpc chat`."""
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default: {DEFAULT_URL})")
    parser.add_argument("--api-key", metavar="KEY", help="sent as 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="serve this model in this process instead of using --url ('default': the "
        "embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--engine", choices=["auto", "llama.cpp", "hf", "fake"], help="the in-process engine"
    )
    parser.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a Python function (or toolrpc.client.tool) the model may call; repeatable",
    )
    parser.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="COMMAND_OR_URL",
        help="an MCP server whose tools the model may call (toolrpc[mcp]); repeatable",
    )
    parser.add_argument("--system", metavar="TEXT", help="the system prompt")
    parser.add_argument("--temperature", type=float, metavar="NUM", help="sampling temperature")
    parser.add_argument(
        "--max-new-tokens", type=int, default=512, metavar="N", help="per answer (default: 512)"
    )
    parser.add_argument("--max-iterations", type=int, metavar="N", help="tool rounds per turn")


def add_flag(
    group: argparse._ArgumentGroup, name: str, field: FieldInfo, *, metavar: str | None
) -> None:
    """Add `--NAME` for one Settings field: choices for a Literal, --no-NAME for a bool,
    repeatable for a list."""
    flag = "--" + name.replace("_", "-")
    value_type = plain_type(field.annotation)
    help_text = flag_help(field).replace("%", "%%")
    if value_type is bool:
        action = argparse.BooleanOptionalAction
        group.add_argument(
            flag, dest=name, action=action, default=argparse.SUPPRESS, help=help_text
        )
    elif get_origin(value_type) is list:  # repeatable: --api-key A --api-key B
        group.add_argument(
            flag,
            dest=name,
            action="append",
            metavar=metavar or name.upper(),
            default=argparse.SUPPRESS,
            help=help_text,
        )
    elif get_origin(value_type) is Literal:
        choices = [str(choice) for choice in get_args(value_type)]
        group.add_argument(
            flag, dest=name, choices=choices, default=argparse.SUPPRESS, help=help_text
        )
    else:
        parse = value_type if value_type in (int, float) else str
        group.add_argument(
            flag,
            dest=name,
            type=parse,
            metavar=metavar or METAVARS.get(value_type, name.upper()),
            default=argparse.SUPPRESS,
            help=help_text,
        )


def plain_type(annotation: object) -> object:
    """The type a flag's value has: `Annotated[...]` and `| None` removed."""
    if get_origin(annotation) is Annotated:
        return plain_type(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        return plain_type(members[0]) if len(members) == 1 else annotation
    return annotation


def flag_help(field: FieldInfo) -> str:
    """The field's description, with its default appended unless the description gives it."""
    text = field.description or ""
    if field.default is None or field.default_factory is not None or "default:" in text:
        return text
    shown = ("on" if field.default else "off") if isinstance(field.default, bool) else field.default
    return f"{text} (default: {shown})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: a bad command line or setting)."""
    command_line = build_command_line()
    try:
        args, unknown = command_line.toolrpc.parse_known_args(argv)
        if args.command is None and unknown:
            command_line.toolrpc.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command is None:
            command_line.toolrpc.print_help(sys.stderr)
            return 2
        command_parser = command_line.chat if args.command == "chat" else command_line.serve
        if unknown:
            command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse's --help (0) and its one-line errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "chat":
        # imported here: the terminal's libraries (prompt_toolkit) are no part of a server
        from toolrpc.chat_cli import run_chat

        return run_chat(args)
    flags = {name: value for name, value in vars(args).items() if name != "command"}
    try:
        settings = Settings(**flags)
    except (ValidationError, SettingsError) as exc:
        print(f"{command_line.serve.prog}: error: {describe(exc, flags)}", file=sys.stderr)
        return 2
    return serve(settings)


def describe(exc: ValidationError | SettingsError, flags: Mapping[str, object]) -> str:
    """One line for settings that failed validation, naming the flag or variable of each error."""
    if isinstance(exc, SettingsError):
        return one_line(str(exc))
    return "; ".join(describe_error(error, flags) for error in exc.errors())


def describe_error(error: ErrorDetails, flags: Mapping[str, object]) -> str:
    """`argument --port: ...` for a flag given, `TOOLRPC_PORT=abc: ...` for a variable."""
    cause = error.get("ctx", {}).get("error")
    message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    if not error["loc"]:  # a combination of fields: the message names the flags
        return one_line(message)
    name = str(error["loc"][0])
    message = one_line(message[:1].lower() + message[1:])
    if name in flags:
        return f"argument --{name.replace('_', '-')}: {message} (got {flags[name]!r})"
    variable = name if name.isupper() else f"TOOLRPC_{name.upper()}"  # an alias: MODEL_ID
    return f"{variable}={error['input']}: {message}"


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of spaces collapsed."""
    return " ".join(text.split())


def serve(settings: Settings) -> int:
    """Load the model, then serve until interrupted. Returns 2 when the model or tools cannot
    be loaded (one line on stderr), 0 after a clean shutdown."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from toolrpc.engines.factory import load_engine
    from toolrpc.server.app import create_app

    started = time.perf_counter()
    # httpx logs every request at INFO: the upstream engine's health checks would flood the log.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    default = {"fake": "no model", "upstream": ", ".join(settings.upstream)}.get(
        settings.engine_kind, "the embedded default"
    )
    logger.info("loading the %s engine (%s)", settings.engine_kind, settings.model or default)
    try:
        engine = load_engine(settings)
        app = create_app(settings, engine=engine, close_engine=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"toolrpc serve: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    logger.info(
        "model %s loaded in %.1f s; serving on http://%s:%d",
        engine.info.model_name,
        time.perf_counter() - started,
        settings.host,
        settings.port,
    )
    if not settings.api_key and settings.api_keys_file is None and not is_loopback(settings.host):
        logger.warning(
            "listening on %s without API keys: anyone who can reach this port can use the "
            "model and read its sessions (set --api-key or --api-keys-file)",
            settings.host,
        )
    from toolrpc.server.shutdown import graceful_server

    server = graceful_server(
        app,
        app.state.toolrpc.service.shutdown,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )
    server.run()
    return 0


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
