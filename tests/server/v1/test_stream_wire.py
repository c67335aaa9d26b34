"""The raw bytes of `/v1` streams: `data:` events, `[DONE]` last, an error after the first
chunk as one `{"error"}` event (in-process clients buffer, so this checks content, not timing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx2

from tests.server.v1.sdk import v1_app
from toolrpc.engines.base import Chunk, GenerationRequest
from toolrpc.engines.fake import FakeEngine
from toolrpc.errors import GenerationCancelled

WAIT_S = 5.0  # bound on every request here
ASK: Any = [{"role": "user", "content": "Hi"}]


class TimingOutEngine(FakeEngine):
    """Says one word, then runs past its time limit."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        yield Chunk("Hello")
        raise GenerationCancelled("the generation ran past its time limit")


async def stream_lines(engine: FakeEngine, path: str, body: Any) -> list[str]:
    transport = httpx2.ASGITransport(app=v1_app(engine))
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
        async with asyncio.timeout(WAIT_S):
            response = await http.post(path, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return [line for line in response.text.split("\n") if line]


async def test_every_event_is_a_data_line_and_done_comes_last() -> None:
    body = {"model": "fake", "messages": ASK, "stream": True}

    lines = await stream_lines(FakeEngine(["Hello there."]), "/v1/chat/completions", body)

    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all("usage" not in c for c in chunks)


async def test_an_error_after_the_first_chunk_is_an_error_event_before_done() -> None:
    body = {"model": "fake", "messages": ASK, "stream": True}

    lines = await stream_lines(TimingOutEngine(), "/v1/chat/completions", body)

    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][len("data: ") :])["error"]
    assert error["type"] == "timeout_error"
    first = json.loads(lines[0][len("data: ") :])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_a_streamed_completion_ends_with_its_finish_and_done() -> None:
    body = {"model": "fake", "prompt": "Once upon", "stream": True, "max_tokens": 2}

    lines = await stream_lines(FakeEngine(["a time there"]), "/v1/completions", body)

    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]"
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "a time"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
