"""A scripted OpenAI-compatible server, run as a real process: `python -m
tests.upstream.fake_openai --port N --name A`.

The last user message says what to do:

- `call NAME JSON`: stream a call of tool NAME with arguments JSON, in two fragments;
- `hold`: stream one chunk, then keep the stream open (one chunk each 50 ms, at most 60 s) until
  the client goes away; the server counts the disconnect;
- `fail`: answer 500 (the replica is broken for this request);
- anything else: stream `replica NAME: TEXT` in two chunks.

`GET /stats` reports what the server saw (requests, disconnects, the last request's body), so
a test can check what the upstream was sent and that a client disconnect reached it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

MODEL = "fake-model"
HOLD_LIMIT_S = 60.0


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One SSE event with one chat-completion chunk."""
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def usage_chunk() -> bytes:
    """The usage chunk of `stream_options.include_usage`."""
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    body = {"id": "chatcmpl-fake", "choices": [], "usage": usage}
    return f"data: {json.dumps(body)}\n\n".encode()


def build_app(name: str) -> FastAPI:
    """The fake server; `name` goes into its answers."""
    app = FastAPI()
    seen: dict[str, Any] = {"requests": 0, "disconnects": 0, "holding": 0, "last_body": None}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    @app.get("/stats")
    async def stats() -> JSONResponse:
        return JSONResponse(seen)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        seen["requests"] += 1
        seen["last_body"] = body
        users = [m for m in body["messages"] if m["role"] == "user"]
        words = (users[-1]["content"] if users else "").split(" ", 2)
        if words[0] == "fail":
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        if words[0] == "hold":
            return StreamingResponse(hold(request), media_type="text/event-stream")
        if words[0] == "call":
            return StreamingResponse(call(words[1], words[2]), media_type="text/event-stream")
        text = " ".join(words)
        return StreamingResponse(answer(f"replica {name}: {text}"), media_type="text/event-stream")

    async def answer(text: str) -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        half = len(text) // 2
        yield chunk({"content": text[:half]})
        yield chunk({"content": text[half:]}, finish="stop")
        yield usage_chunk()
        yield b"data: [DONE]\n\n"

    async def call(tool: str, arguments: str) -> AsyncIterator[bytes]:
        half = len(arguments) // 2
        first = {"index": 0, "id": "call_1", "type": "function"}
        yield chunk({"role": "assistant", "content": None})
        yield chunk(
            {"tool_calls": [{**first, "function": {"name": tool, "arguments": arguments[:half]}}]}
        )
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]})
        yield chunk({}, finish="tool_calls")
        yield usage_chunk()
        yield b"data: [DONE]\n\n"

    async def hold(request: Request) -> AsyncIterator[bytes]:
        seen["holding"] += 1
        try:
            yield chunk({"role": "assistant", "content": f"replica {name}: holding"})
            deadline = time.monotonic() + HOLD_LIMIT_S
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    break
                yield chunk({"content": "."})
                await asyncio.sleep(0.05)
        finally:
            seen["holding"] -= 1
            seen["disconnects"] += 1

    return app


def main() -> None:
    """Serve on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.name), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
