"""The `toolrpc` command: `toolrpc serve [flags]` (also `python -m toolrpc`, `python server.py`)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

import uvicorn
from pydantic_settings import CliApp

from toolrpc.config import Settings

logger = logging.getLogger("toolrpc")

USAGE = "usage: toolrpc serve [--help] [flags]   (every flag is also a TOOLRPC_* variable)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        args = args[1:]
    elif args and not args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    settings = CliApp.run(Settings, cli_args=args)
    return serve(settings)


def serve(settings: Settings) -> int:
    """Load the model, then serve until interrupted."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from toolrpc.engines.factory import load_engine
    from toolrpc.server.app import create_app

    started = time.perf_counter()
    logger.info("loading the model (%s)", settings.model or "embedded default")
    try:
        engine = load_engine(settings)
        app = create_app(settings, engine=engine, close_engine=True)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info(
        "model %s loaded in %.1f s; serving on http://%s:%d",
        engine.info.model_name,
        time.perf_counter() - started,
        settings.host,
        settings.port,
    )
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False
    )
    return 0
