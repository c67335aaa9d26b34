"""The official `openai` SDK, unchanged, talking in-process to an app over a FakeEngine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
from fastapi import FastAPI

from toolrpc.config import Settings
from toolrpc.engines.fake import FakeEngine
from toolrpc.server import create_app

BASE_URL = "http://test/v1"

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def v1_app(engine: FakeEngine, settings: Settings | None = None) -> FastAPI:
    """An app over `engine` served as `fake` (`--engine fake`), the tool router off (these
    tests script the model)."""
    settings = settings or Settings()
    for name, value in (("tool_router", "off"), ("engine", "fake")):
        if name not in settings.model_fields_set:
            settings = settings.model_copy(update={name: value})
    return create_app(settings, engine=engine)


@asynccontextmanager
async def sdk(app: FastAPI) -> AsyncIterator[openai.AsyncOpenAI]:
    """An `AsyncOpenAI` client whose requests go to `app` in-process (no retries)."""
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield openai.AsyncOpenAI(
            api_key="unused", base_url=BASE_URL, http_client=http, max_retries=0
        )


@asynccontextmanager
async def client_of(
    *script: str, settings: Settings | None = None
) -> AsyncIterator[tuple[openai.AsyncOpenAI, FakeEngine]]:
    """The SDK over a FakeEngine that says `script`, one reply per generation."""
    engine = FakeEngine(script)
    async with sdk(v1_app(engine, settings)) as client:
        yield client, engine
