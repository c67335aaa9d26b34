"""Behaviour of `POST /rpc` over in-process HTTP: JSON-RPC 2.0 as PROTOCOL.md describes it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.apps import PARIS, make_app, serving
from toolrpc.config import Settings

WAIT_S = 2.0  # bound on every wait in this module

WEATHER: dict[str, Any] = {
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

CLIENT_ERROR_CODES = {-32700, -32600, -32601, -32602, -32002, -32005}
"""The codes bad input may get; -32603 (internal error) would be a bug."""


async def post_rpc(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    """POST a JSON-RPC body: raw bytes as they are, anything else as JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with asyncio.timeout(WAIT_S):
        return await client.post(
            "/rpc", content=content, headers={"content-type": "application/json"}
        )


def request(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    return message


async def call(client: httpx.AsyncClient, method: str, params: Any = None) -> Any:
    """Call a method; return its result (the response must be a success)."""
    response = await post_rpc(client, request(method, params))
    assert response.status_code == 200
    answer = response.json()
    assert "error" not in answer, answer
    assert answer["id"] == 1
    return answer["result"]


async def call_error(client: httpx.AsyncClient, method: str, params: Any = None) -> Any:
    """Call a method; return its error object (the response must be an error, with HTTP 200)."""
    response = await post_rpc(client, request(method, params))
    assert response.status_code == 200
    answer = response.json()
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == 1
    assert "result" not in answer
    return answer["error"]


def write_tools(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


async def test_create_message_answers_a_plain_message() -> None:
    app, _ = make_app("Hello there!")

    async with serving(app) as client:
        result = await call(client, "create_message", {"message": "Hi"})

    assert result["type"] == "final_text"
    assert result["content"] == "Hello there!"
    assert result["iteration_count"] == 0
    assert result["finish_reason"] == "stop"
    assert result["history"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there!"},
    ]
    assert set(result["usage"]) == {"prompt_tokens", "completion_tokens", "cached_tokens"}


async def test_create_message_with_tools_returns_the_calls_to_run() -> None:
    app, _ = make_app(PARIS)

    async with serving(app) as client:
        result = await call(client, "create_message", {"message": "Paris?", "tools": [WEATHER]})

    assert result["type"] == "tool_calls"
    assert result["finish_reason"] == "tool_calls"
    assert result["iteration_count"] == 1
    [tool_call] = result["content"]
    assert tool_call["name"] == "get_weather"
    assert tool_call["arguments"] == {"city": "Paris"}
    assert tool_call["id"]
    assert result["history"][-1]["tool_calls"] == [tool_call]


async def test_tool_results_sent_back_give_the_final_answer() -> None:
    app, _ = make_app(PARIS, "It is sunny in Paris.")

    async with serving(app) as client:
        first = await call(client, "create_message", {"message": "Paris?", "tools": [WEATHER]})
        results = [{"tool_call_id": c["id"], "content": {"sky": "clear"}} for c in first["content"]]
        second = await call(
            client,
            "create_message",
            {"history": first["history"], "tool_results": results, "tools": [WEATHER]},
        )

    assert second["type"] == "final_text"
    assert second["content"] == "It is sunny in Paris."
    assert second["iteration_count"] == 1
    assert [m["role"] for m in second["history"]] == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize("form", ["list", "object"])
async def test_tool_list_returns_the_tools_configured_on_the_server(
    tmp_path: Path, form: str
) -> None:
    bare = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
    tools = [WEATHER, bare]
    path = write_tools(tmp_path, tools if form == "list" else {"tools": tools})
    app, _ = make_app(settings=Settings(tools=path))

    async with serving(app) as client:
        result = await call(client, "tool_list")

    assert [tool["function"]["name"] for tool in result["tools"]] == ["get_weather", "get_time"]
    assert result["tools"][0] == WEATHER
    assert all(tool["type"] == "function" for tool in result["tools"])


async def test_tool_list_is_empty_by_default() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        result = await call(client, "tool_list")

    assert result == {"tools": []}


async def test_create_message_uses_the_servers_tools_when_the_request_gives_none(
    tmp_path: Path,
) -> None:
    app, engine = make_app(
        PARIS, "plain", settings=Settings(tools=write_tools(tmp_path, [WEATHER]))
    )

    async with serving(app) as client:
        result = await call(client, "create_message", {"message": "Paris?"})
        await call(client, "create_message", {"message": "Paris?", "tools": []})

    assert result["type"] == "tool_calls"
    assert "get_weather" in engine.requests[0].prompt
    assert "get_weather" not in engine.requests[1].prompt


async def test_error_responses_are_sent_with_http_200() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        response = await post_rpc(client, request("no_such_method"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == -32601


async def test_an_unknown_method_is_method_not_found() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        error = await call_error(client, "delete_everything", {})

    assert error["code"] == -32601


async def test_a_notification_gets_http_204_with_an_empty_body() -> None:
    app, engine = make_app("Hello!")
    notification = {"jsonrpc": "2.0", "method": "create_message", "params": {"message": "Hi"}}

    async with serving(app) as client:
        response = await post_rpc(client, notification)

    assert response.status_code == 204
    assert response.content == b""
    assert len(engine.requests) == 1


async def test_a_batch_of_only_notifications_gets_http_204() -> None:
    app, _ = make_app()
    batch = [{"jsonrpc": "2.0", "method": "tool_list"}, {"jsonrpc": "2.0", "method": "nothing"}]

    async with serving(app) as client:
        response = await post_rpc(client, batch)

    assert response.status_code == 204
    assert response.content == b""


async def test_a_batch_is_answered_with_an_array_of_responses() -> None:
    app, _ = make_app("Hello!")
    batch = [
        request("create_message", {"message": "Hi"}, request_id="a"),
        request("tool_list", request_id="b"),
        {"jsonrpc": "2.0", "method": "tool_list"},
        request("no_such_method", request_id="c"),
    ]

    async with serving(app) as client:
        response = await post_rpc(client, batch)

    assert response.status_code == 200
    answers = {answer["id"]: answer for answer in response.json()}
    assert set(answers) == {"a", "b", "c"}
    assert answers["a"]["result"]["content"] == "Hello!"
    assert answers["b"]["result"] == {"tools": []}
    assert answers["c"]["error"]["code"] == -32601


async def test_an_empty_batch_is_one_invalid_request_error() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        response = await post_rpc(client, [])

    assert response.status_code == 200
    answer = response.json()
    assert answer["error"]["code"] == -32600
    assert answer["id"] is None


async def test_a_request_with_a_null_id_is_answered_with_a_null_id() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        response = await post_rpc(client, request("tool_list", request_id=None))

    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "result": {"tools": []}, "id": None}


async def test_a_body_that_is_not_json_is_a_parse_error_with_a_null_id() -> None:
    app, _ = make_app()

    async with serving(app) as client:
        response = await post_rpc(client, b'{"jsonrpc": "2.0", "method": ')

    assert response.status_code == 200
    answer = response.json()
    assert answer["error"]["code"] == -32700
    assert answer["id"] is None


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({"message": "Hi", "colour": "blue"}, ["colour"], id="unknown-field"),
        pytest.param(
            {"message": "Hi", "tools": [{"name": "get weather!"}]},
            ["tools", 0, "function", "name"],
            id="bad-tool-name",
        ),
        pytest.param(
            {"message": "Hi", "tools": [{"name": "t", "parameters": {"type": "integr"}}]},
            ["tools", 0, "function", "parameters"],
            id="parameters-not-a-json-schema",
        ),
        pytest.param({"history": []}, [], id="neither-message-nor-tool-results"),
        pytest.param({"message": "Hi", "max_new_tokens": 0}, ["max_new_tokens"], id="zero-tokens"),
    ],
)
async def test_invalid_params_list_each_problem_with_its_location(
    params: dict[str, Any], loc: list[Any]
) -> None:
    app, engine = make_app()

    async with serving(app) as client:
        error = await call_error(client, "create_message", params)

    assert error["code"] == -32602
    assert isinstance(error["data"], list)
    assert all(set(item) == {"loc", "msg"} for item in error["data"])
    assert all(isinstance(item["msg"], str) for item in error["data"])
    assert loc in [item["loc"] for item in error["data"]]
    assert engine.requests == []


async def test_a_prompt_over_the_context_window_is_context_length_exceeded() -> None:
    app, _ = make_app(context_length=10)

    async with serving(app) as client:
        error = await call_error(client, "create_message", {"message": "word " * 50})

    assert error["code"] == -32002
    assert error["data"]["context_length"] == 10
    assert error["data"]["prompt_tokens"] >= 50


async def test_a_body_over_the_limit_is_refused_with_http_413() -> None:
    app, engine = make_app(settings=Settings(max_body_bytes=2048))

    async with serving(app) as client:
        response = await post_rpc(client, request("create_message", {"message": "x" * 4096}))

    assert response.status_code == 413
    assert response.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32600, "message": response.json()["error"]["message"]},
        "id": None,
    }
    assert engine.requests == []


async def test_a_body_under_the_limit_is_served() -> None:
    app, _ = make_app("ok", settings=Settings(max_body_bytes=2048))

    async with serving(app) as client:
        result = await call(client, "create_message", {"message": "x" * 1024})

    assert result["content"] == "ok"


async def test_session_id_is_invalid_params_on_a_server_without_sessions() -> None:
    app, engine = make_app(settings=Settings(sessions=False))

    async with serving(app) as client:
        error = await call_error(client, "create_message", {"message": "Hi", "session_id": "s1"})

    assert error["code"] == -32602
    assert engine.requests == []


async def test_an_unknown_tool_result_id_is_a_tool_protocol_error() -> None:
    app, _ = make_app()
    results = [{"tool_call_id": "call_nope", "content": "x"}]

    async with serving(app) as client:
        error = await call_error(client, "create_message", {"tool_results": results})

    assert error["code"] == -32005


@pytest.mark.parametrize(("asked", "sent"), [(1000, 16), (16, 16), (3, 3)])
async def test_max_new_tokens_is_capped_by_the_server_limit(asked: int, sent: int) -> None:
    app, engine = make_app("ok", settings=Settings(max_new_tokens_limit=16))

    async with serving(app) as client:
        await call(client, "create_message", {"message": "Hi", "max_new_tokens": asked})

    assert engine.requests[-1].max_new_tokens == sent


def _envelope(params: Any) -> bytes:
    return json.dumps(request("create_message", params)).encode()


MALFORMED_BODIES: list[bytes] = [
    b"",
    b" ",
    b"null",
    b"1",
    b'"create_message"',
    b"true",
    b"{}",
    b"[1, 2]",
    b"[null]",
    b'{"jsonrpc": "1.0", "method": "tool_list", "id": 1}',
    b'{"jsonrpc": 2.0, "method": "tool_list", "id": 1}',
    b'{"jsonrpc": "2.0", "method": 5, "id": 1}',
    b'{"jsonrpc": "2.0", "method": null, "id": 1}',
    b'{"jsonrpc": "2.0", "method": "tool_list", "id": {"a": 1}}',
    b'{"jsonrpc": "2.0", "method": "tool_list", "id": [1]}',
    b'{"jsonrpc": "2.0", "method": "tool_list", "id": true}',
    b'{"jsonrpc": "2.0", "method": "tool_list", "params": "x", "id": 1}',
    b'{"jsonrpc": "2.0", "method": "tool_list", "params": {"x": 1}, "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "params": ["Hi"], "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "params": null, "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "params": {"message": NaN}, "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "params": {"temperature": Infinity}, "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "params": {"top_p": 1e999}, "id": 1}',
    b'{"jsonrpc": "2.0", "method": "create_message", "params": {"seed": 1' + b"0" * 5000 + b"}}",
    b"\xff\xfe\x00{",
    b'{"jsonrpc": "2.0", "method": "create_message", "params": {"message": "\xc3\x28"}, "id": 1}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    _envelope({"message": 5}),
    _envelope({"message": None}),
    _envelope({"message": ["Hi"]}),
    _envelope({"message": {"text": "Hi"}}),
    _envelope({"message": "Hi", "history": "none"}),
    _envelope({"message": "Hi", "history": [None]}),
    _envelope({"message": "Hi", "history": [{"role": "robot", "content": "x"}]}),
    _envelope({"message": "Hi", "history": [{"role": "user", "content": 5}]}),
    _envelope({"message": "Hi", "history": [{"role": "assistant", "tool_calls": "x"}]}),
    _envelope({"message": "Hi", "history": [{"role": "assistant", "tool_calls": [{"id": 1}]}]}),
    _envelope({"message": "Hi", "tools": {}}),
    _envelope({"message": "Hi", "tools": [None]}),
    _envelope({"message": "Hi", "tools": [{"type": "function"}]}),
    _envelope({"message": "Hi", "tools": [{"type": "builtin", "function": {"name": "a"}}]}),
    _envelope({"message": "Hi", "tools": [{"name": "a" * 65}]}),
    _envelope({"message": "Hi", "tools": [{"name": "a", "parameters": "object"}]}),
    _envelope({"message": "Hi", "tools": [{"name": "a", "parameters": {"properties": 5}}]}),
    _envelope({"message": "Hi", "tools": [{"name": "a", "parameters": {"required": "x"}}]}),
    _envelope({"tool_results": "x"}),
    _envelope({"tool_results": [{}]}),
    _envelope({"tool_results": [{"tool_call_id": 5, "content": "x"}]}),
    _envelope({"tool_results": [{"tool_call_id": "a", "content": "x", "is_error": "maybe"}]}),
    _envelope({"tool_results": [{"tool_call_id": "a", "content": "x"}]}),
    _envelope({"message": "Hi", "tool_choice": "sometimes"}),
    _envelope({"message": "Hi", "tool_choice": 5}),
    _envelope({"message": "Hi", "tool_choice": {"name": 5}}),
    _envelope({"message": "Hi", "tool_choice": {"name": "nope"}}),
    _envelope({"message": "Hi", "tool_choice": {"function": {"name": None}}}),
    _envelope({"message": "Hi", "tool_choice": "required"}),
    _envelope({"message": "Hi", "max_new_tokens": -1}),
    _envelope({"message": "Hi", "max_new_tokens": 1.5}),
    _envelope({"message": "Hi", "max_new_tokens": "many"}),
    _envelope({"message": "Hi", "temperature": 10**400}),
    _envelope({"message": "Hi", "temperature": -1}),
    _envelope({"message": "Hi", "top_p": 0}),
    _envelope({"message": "Hi", "top_k": -1}),
    _envelope({"message": "Hi", "seed": 1e300}),
    _envelope({"message": "Hi", "seed": "lucky"}),
    _envelope({"message": "Hi", "stop": ""}),
    _envelope({"message": "Hi", "stop": [""]}),
    _envelope({"message": "Hi", "stop": ["a"] * 17}),
    _envelope({"message": "Hi", "stop": 5}),
    _envelope({"message": "Hi", "max_iterations": 0}),
    _envelope({"message": "Hi", "system": 5}),
    _envelope({"message": "Hi", "session_id": ""}),
    _envelope({"message": "Hi", "session_id": "s" * 200}),
    _envelope({"message": "Hi", "history": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}),
    _envelope(
        {"message": "Hi", "tools": [{"name": "a", "parameters": {"type": [[[[[[[[]]]]]]]]}}]}
    ),
]


@pytest.mark.parametrize("body", MALFORMED_BODIES, ids=lambda body: repr(body[-60:]))
async def test_malformed_bodies_get_a_json_rpc_error_and_never_http_500(body: bytes) -> None:
    app, _ = make_app("unused")

    async with serving(app) as client:
        response = await post_rpc(client, body)

    assert response.status_code == 200
    answer = response.json()
    answers = answer if isinstance(answer, list) else [answer]
    assert answers
    for item in answers:
        assert item["jsonrpc"] == "2.0"
        assert "id" in item
        assert "result" not in item
        assert item["error"]["code"] in CLIENT_ERROR_CODES
        assert isinstance(item["error"]["message"], str)


async def test_a_call_to_a_tool_whose_schema_has_a_dangling_ref_is_not_an_internal_error() -> None:
    tool = {"name": "lookup", "parameters": {"$ref": "#/$defs/missing"}}
    app, _ = make_app('Looking.<tool_call>{"name": "lookup", "arguments": {}}</tool_call>')

    async with serving(app) as client:
        result = await call(client, "create_message", {"message": "Hi", "tools": [tool]})

    assert result["type"] == "final_text"
    assert result["content"] == "Looking."
