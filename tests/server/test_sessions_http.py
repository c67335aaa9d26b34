"""Server-side sessions over /rpc and /stream (in-process, FakeEngine, `:memory:` store)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.server.apps import PARIS, make_app, serving
from tests.server.test_rpc_http import WEATHER, post_rpc, request
from tests.server.test_stream_http import post_stream, sse_events
from toolrpc.engines.base import GenerationRequest

WAIT_S = 5.0


async def rpc(client: httpx.AsyncClient, method: str, params: Any) -> dict[str, Any]:
    """The whole JSON-RPC answer of one call."""
    response = await post_rpc(client, request(method, params))
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_session_keeps_a_tool_round_trip_and_the_next_turn_over_rpc() -> None:
    app, engine = make_app(PARIS, "It is sunny in Paris.", "You are welcome.")

    async with serving(app) as client:
        first = await rpc(
            client,
            "create_message",
            {
                "session_id": "s1",
                "message": "Weather in Paris?",
                "tools": [WEATHER],
            },
        )
        call_id = first["result"]["content"][0]["id"]
        second = await rpc(
            client,
            "create_message",
            {
                "session_id": "s1",
                "tools": [WEATHER],
                "tool_results": [{"tool_call_id": call_id, "content": {"sky": "sunny"}}],
            },
        )
        third = await rpc(client, "create_message", {"session_id": "s1", "message": "Thanks!"})
        stored = await rpc(client, "session_get", {"session_id": "s1"})

    assert first["result"]["type"] == "tool_calls"
    assert second["result"]["content"] == "It is sunny in Paris."
    assert third["result"]["content"] == "You are welcome."
    session = stored["result"]
    assert session["turns"] == 3
    assert session["history"] == third["result"]["history"]
    assert [m["role"] for m in session["history"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    # the last prompt held the whole conversation the client never resent
    assert "It is sunny in Paris." in engine.requests[-1].prompt


async def test_a_session_continues_over_stream_and_commits_the_turn_with_done() -> None:
    app, _ = make_app("Hello!", "Again!")

    async with serving(app) as client:
        await post_stream(client, {"session_id": "st", "message": "Hi"})
        response = await post_stream(client, {"session_id": "st", "message": "Once more"})
        stored = await rpc(client, "session_get", {"session_id": "st"})

    done = sse_events(response.text)[-1]
    assert done["result"]["content"] == "Again!"
    assert len(stored["result"]["history"]) == 4


async def test_an_unknown_session_without_a_message_is_32004_on_rpc_and_404_on_stream() -> None:
    app, engine = make_app()
    results = {"session_id": "nope", "tool_results": [{"tool_call_id": "c1", "content": "x"}]}

    async with serving(app) as client:
        answer = await rpc(client, "create_message", results)
        response = await post_stream(client, results)
        missing = await rpc(client, "session_get", {"session_id": "nope"})
        deleted = await rpc(client, "session_delete", {"session_id": "nope"})

    assert answer["error"]["code"] == -32004
    assert response.status_code == 404
    assert response.json()["error"]["code"] == -32004
    assert missing["error"]["code"] == -32004
    assert deleted["error"]["code"] == -32004
    assert engine.requests == []


async def test_history_that_differs_from_the_stored_one_is_32602() -> None:
    app, _ = make_app("Hello!", "Fine.")

    async with serving(app) as client:
        first = await rpc(client, "create_message", {"session_id": "h", "message": "Hi"})
        same = await rpc(
            client,
            "create_message",
            {
                "session_id": "h",
                "message": "And?",
                "history": first["result"]["history"],
            },
        )
        other = await rpc(
            client,
            "create_message",
            {
                "session_id": "h",
                "message": "And?",
                "history": [{"role": "user", "content": "x"}],
            },
        )

    assert same["result"]["content"] == "Fine."
    assert other["error"]["code"] == -32602


async def test_a_second_request_on_a_busy_session_is_refused_and_turns_never_interleave() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    app, engine = make_app("First answer.", "Second answer.")
    original = engine.generate

    async def gated(request: GenerationRequest) -> Any:
        entered.set()
        async with asyncio.timeout(WAIT_S):
            await release.wait()
        async for chunk in original(request):
            yield chunk

    engine.generate = gated  # type: ignore[method-assign]
    async with serving(app) as client:
        first = asyncio.create_task(
            rpc(client, "create_message", {"session_id": "b", "message": "one"})
        )
        async with asyncio.timeout(WAIT_S):
            await entered.wait()
        busy = await rpc(client, "create_message", {"session_id": "b", "message": "two"})
        release.set()
        async with asyncio.timeout(WAIT_S):
            done = await first
        after = await rpc(client, "create_message", {"session_id": "b", "message": "three"})
        stored = await rpc(client, "session_get", {"session_id": "b"})

    assert busy["error"]["code"] == -32000
    assert busy["error"]["data"]["retry_after_s"] > 0
    assert done["result"]["content"] == "First answer."
    assert after["result"]["content"] == "Second answer."
    contents = [m["content"] for m in stored["result"]["history"]]
    assert contents == ["one", "First answer.", "three", "Second answer."]


async def test_session_list_pages_the_callers_sessions_and_delete_removes_one() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        for name in ["a", "b", "c"]:
            await rpc(client, "create_message", {"session_id": name, "message": "Hi"})
        page = await rpc(client, "session_list", {"limit": 2})
        rest = await rpc(client, "session_list", {"cursor": page["result"]["next_cursor"]})
        deleted = await rpc(client, "session_delete", {"session_id": "b"})
        after = await rpc(client, "session_list", {})

    assert [s["session_id"] for s in page["result"]["sessions"]] == ["a", "b"]
    assert [s["session_id"] for s in rest["result"]["sessions"]] == ["c"]
    assert "next_cursor" not in rest["result"]
    assert deleted["result"] == {"deleted": True}
    assert [s["session_id"] for s in after["result"]["sessions"]] == ["a", "c"]
