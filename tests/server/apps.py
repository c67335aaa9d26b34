"""In-process apps over a scripted FakeEngine, shared by the HTTP tests of this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from toolrpc.config import Settings
from toolrpc.engines.fake import FakeEngine, Reply
from toolrpc.server import create_app

PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def make_app(
    *script: Reply, settings: Settings | None = None, context_length: int = 4096
) -> tuple[FastAPI, FakeEngine]:
    """An app whose model says `script`, one reply per generation."""
    engine = FakeEngine(script, context_length=context_length)
    # The router (tested in tests/chat/test_router.py) is off unless `settings` turn it on:
    # these tests script the model.
    settings = settings or Settings()
    if "sessions_db" not in settings.model_fields_set:  # never the user's own sessions file
        settings = settings.model_copy(update={"sessions_db": ":memory:"})
    if "tool_router" not in settings.model_fields_set:
        settings = settings.model_copy(update={"tool_router": "off"})
    return create_app(settings, engine=engine), engine


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to `app` in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
