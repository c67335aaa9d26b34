"""API keys on every endpoint, and sessions invisible across keys (in-process)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.apps import make_app, serving
from toolrpc.config import Settings
from toolrpc.engines.base import GenerationRequest
from toolrpc.server.keys import ApiKeys

RIGHT = "key-right-0123"
OTHER = "key-other-4567"
WAIT_S = 5.0
ENDPOINTS = [
    ("POST", "/rpc", {"jsonrpc": "2.0", "method": "tool_list", "id": 1}),
    ("POST", "/stream", {"message": "Hi"}),
    ("GET", "/metrics", None),
    ("POST", "/v1/chat/completions", {"model": "m", "messages": []}),
    ("GET", "/docs", None),
]


def keyed_settings(**extra: Any) -> Settings:
    digest = hashlib.sha256(OTHER.encode()).hexdigest()
    return Settings(api_key=[RIGHT, f"sha256:{digest}"], **extra)


async def send(client: httpx.AsyncClient, method: str, path: str, body: Any, key: str | None):
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return await client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("key", [None, "wrong"])
async def test_every_endpoint_but_health_refuses_a_missing_or_wrong_key(
    method: str, path: str, body: Any, key: str | None
) -> None:
    app, engine = make_app(settings=keyed_settings())

    async with serving(app) as client:
        response = await send(client, method, path, body, key)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    if path == "/rpc":
        assert error["code"] == -32001
        assert response.json()["id"] is None
    elif path.startswith("/v1/"):
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert error["param"] is None
    else:
        assert error["code"] == -32001
    assert engine.requests == []


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS[:3])
@pytest.mark.parametrize("key", [RIGHT, OTHER])
async def test_a_right_key_in_clear_or_by_hash_is_let_through(
    method: str, path: str, body: Any, key: str
) -> None:
    app, _ = make_app(settings=keyed_settings())

    async with serving(app) as client:
        response = await send(client, method, path, body, key)

    assert response.status_code == 200


async def test_health_needs_no_key() -> None:
    app, _ = make_app(settings=keyed_settings())

    async with serving(app) as client:
        response = await client.get("/health")

    assert response.status_code == 200


async def test_sessions_are_invisible_across_keys() -> None:
    app, _ = make_app("Hello.", "Hi there.", settings=keyed_settings())
    start = {"jsonrpc": "2.0", "method": "create_message", "id": 1}

    async with serving(app) as client:
        mine = {**start, "params": {"session_id": "s", "message": "Hi"}}
        await send(client, "POST", "/rpc", mine, RIGHT)
        get = {"jsonrpc": "2.0", "method": "session_get", "params": {"session_id": "s"}, "id": 2}
        listing = {"jsonrpc": "2.0", "method": "session_list", "id": 3}
        theirs = await send(client, "POST", "/rpc", get, OTHER)
        their_list = await send(client, "POST", "/rpc", listing, OTHER)
        follow_up = {
            **start,
            "params": {"session_id": "s", "tool_results": [{"tool_call_id": "c", "content": "x"}]},
        }
        their_step = await send(client, "POST", "/rpc", follow_up, OTHER)
        my_list = await send(client, "POST", "/rpc", listing, RIGHT)

    assert theirs.json()["error"]["code"] == -32004
    assert their_list.json()["result"]["sessions"] == []
    assert their_step.json()["error"]["code"] == -32004
    assert [s["session_id"] for s in my_list.json()["result"]["sessions"]] == ["s"]


def test_a_keys_file_takes_keys_and_hashes_and_skips_comments(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"from-hash").hexdigest()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators\nplain-key\n\nsha256:{digest}\n")

    keys = ApiKeys.of([], keys_file)

    assert keys.owner_of("Bearer plain-key") is not None
    assert keys.owner_of("Bearer from-hash") == digest
    assert keys.owner_of("Bearer # operators") is None
    assert keys.owner_of("Basic plain-key") is None


def test_api_keys_come_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOOLRPC_API_KEYS", "a1, b2")

    assert Settings().api_key == ["a1", "b2"]
    assert "a1" not in repr(Settings())


async def test_past_the_per_key_limit_a_request_is_429_at_once_and_other_keys_go_on() -> None:
    app, engine = make_app(settings=keyed_settings(max_concurrent_per_key=1))
    release, entered = asyncio.Event(), asyncio.Event()
    original = engine.generate

    async def gated(request: GenerationRequest) -> Any:
        entered.set()
        async with asyncio.timeout(WAIT_S):
            await release.wait()
        async for chunk in original(request):
            yield chunk

    engine.generate = gated  # type: ignore[method-assign]
    body = {"jsonrpc": "2.0", "method": "create_message", "params": {"message": "Hi"}, "id": 1}
    async with serving(app) as client:
        first = asyncio.create_task(send(client, "POST", "/rpc", body, RIGHT))
        async with asyncio.timeout(WAIT_S):
            await entered.wait()
        refused = await send(client, "POST", "/stream", {"message": "Hi"}, RIGHT)
        other = await send(client, "POST", "/rpc", {**body, "method": "tool_list"}, OTHER)
        release.set()
        async with asyncio.timeout(WAIT_S):
            answered = await first

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == -32000
    assert refused.json()["error"]["data"]["retry_after_s"] > 0
    assert other.status_code == 200
    assert "result" in answered.json()
