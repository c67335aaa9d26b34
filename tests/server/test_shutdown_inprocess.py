"""The grace period in-process: new requests refused with 503, running steps cut with -32003."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.server.apps import make_app, serving
from tests.server.test_stream_http import sse_events
from toolrpc.engines.base import GenerationRequest
from toolrpc.errors import GenerationCancelled
from toolrpc.shutdown import Shutdown

WAIT_S = 5.0


async def test_while_draining_new_requests_get_503_and_health_still_answers() -> None:
    app, engine = make_app()
    app.state.toolrpc.service.shutdown.expire()

    async with serving(app) as client:
        rpc = await client.post("/rpc", json={"jsonrpc": "2.0", "method": "tool_list", "id": 1})
        stream = await client.post("/stream", json={"message": "Hi"})
        health = await client.get("/health")

    assert rpc.status_code == 503
    assert rpc.json()["error"]["code"] == -32000
    assert stream.status_code == 503
    assert health.status_code == 200
    assert engine.requests == []


async def test_a_step_still_running_at_the_deadline_ends_with_32003_on_both_routes() -> None:
    app, engine = make_app()
    shutdown: Shutdown = app.state.toolrpc.service.shutdown
    both_running = asyncio.Event()
    started: list[GenerationRequest] = []
    original = engine.generate

    async def endless(request: GenerationRequest) -> Any:
        async for chunk in original(request):
            yield chunk
            break
        started.append(request)
        if len(started) == 2:
            both_running.set()
        await asyncio.Event().wait()  # a generation that never finishes on its own

    engine.generate = endless  # type: ignore[method-assign]
    body = {"jsonrpc": "2.0", "method": "create_message", "params": {"message": "Hi"}, "id": 1}
    async with serving(app) as client:
        rpc = asyncio.create_task(client.post("/rpc", json=body))
        stream = asyncio.create_task(client.post("/stream", json={"message": "Hi"}))
        async with asyncio.timeout(WAIT_S):
            await both_running.wait()
        shutdown.expire()
        async with asyncio.timeout(WAIT_S):
            rpc_answer, stream_answer = await asyncio.gather(rpc, stream)

    assert rpc_answer.json()["error"]["code"] == GenerationCancelled.code
    assert sse_events(stream_answer.text)[-1]["code"] == GenerationCancelled.code
