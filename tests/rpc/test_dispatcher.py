"""Behaviour of the JSON-RPC 2.0 dispatcher, starting from the specification's own examples.

The specification's examples use positional params; this server takes params by name only, so
each example is sent with named params, and positional params are checked to give -32602.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from toolrpc.errors import (
    ContextLengthExceeded,
    GenerationCancelled,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    Overloaded,
    ParamError,
    ParseError,
    SessionNotFound,
    ToolProtocolError,
    ToolRpcError,
    Unauthorized,
)
from toolrpc.rpc import Dispatcher, Method, error_object
from toolrpc.types import JSONValue

WAIT_S = 2.0  # bound on every wait in this module


class SubtractParams(BaseModel):
    minuend: int
    subtrahend: int


class ValuesParams(BaseModel):
    values: list[int]


class ValueParams(BaseModel):
    value: int


class RaiseParams(BaseModel):
    error: str


class Answer(BaseModel):
    text: str
    note: str | None = None


ERRORS: dict[str, ToolRpcError] = {
    "base": ToolRpcError("deliberate internal error"),
    "parse": ParseError("parse"),
    "invalid_request": InvalidRequest("invalid request"),
    "method_not_found": MethodNotFound("not found"),
    "invalid_params": InvalidParams("invalid", [ParamError(("message",), "required")]),
    "overloaded": Overloaded("queue full", retry_after_s=1.5),
    "unauthorized": Unauthorized("no key"),
    "context": ContextLengthExceeded(prompt_tokens=5000, context_length=4096),
    "cancelled": GenerationCancelled("timed out"),
    "session": SessionNotFound("no such session"),
    "tool_protocol": ToolProtocolError("unknown call id"),
}


def make_dispatcher(calls: list[tuple[str, Any]] | None = None, **kwargs: Any) -> Dispatcher:
    """A fresh dispatcher with the test methods; every call is appended to `calls`."""
    log = calls if calls is not None else []

    async def subtract(params: SubtractParams) -> int:
        log.append(("subtract", params))
        return params.minuend - params.subtrahend

    async def total(params: ValuesParams) -> int:
        log.append(("sum", params))
        return sum(params.values)

    async def record(params: BaseModel | None) -> None:
        log.append(("record", params))

    async def get_data(params: None) -> list[JSONValue]:
        log.append(("get_data", params))
        return ["hello", 5]

    async def answer(params: None) -> Answer:
        return Answer(text="hi")

    async def raise_error(params: RaiseParams) -> None:
        raise ERRORS[params.error]

    async def crash(params: None) -> None:
        log.append(("crash", params))
        raise RuntimeError("secret internal detail")

    methods = [
        Method("subtract", subtract, SubtractParams),
        Method("sum", total, ValuesParams),
        Method("update", record, ValuesParams),
        Method("notify_hello", record, ValueParams),
        Method("notify_sum", record, ValuesParams),
        Method("get_data", get_data, None),
        Method("answer", answer, None),
        Method("raise_error", raise_error, RaiseParams),
        Method("crash", crash, None),
    ]
    return Dispatcher(methods, **kwargs)


async def send(dispatcher: Dispatcher, payload: object) -> Any:
    """Send `payload` (JSON-encoded unless already bytes) and return the answer, within WAIT_S."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with asyncio.timeout(WAIT_S):
        return await dispatcher.handle(body)


def error_code(response: Any) -> int:
    assert isinstance(response, dict), response
    error = response["error"]
    assert isinstance(error, dict)
    code = error["code"]
    assert isinstance(code, int)
    return code


def request(method: str, params: object = None, id: object = 1) -> dict[str, object]:
    message: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        message["params"] = params
    return message


# --- the specification's examples ---------------------------------------------------------


async def test_positional_params_are_invalid_params() -> None:
    response = await send(make_dispatcher(), request("subtract", [42, 23]))

    assert error_code(response) == -32602
    assert response["id"] == 1


async def test_named_params_call_the_method_in_any_order() -> None:
    dispatcher = make_dispatcher()

    first = await send(dispatcher, request("subtract", {"subtrahend": 23, "minuend": 42}, id=3))
    second = await send(dispatcher, request("subtract", {"minuend": 42, "subtrahend": 23}, id=4))
    third = await send(dispatcher, request("subtract", {"minuend": 23, "subtrahend": 42}, id=2))

    assert first == {"jsonrpc": "2.0", "result": 19, "id": 3}
    assert second == {"jsonrpc": "2.0", "result": 19, "id": 4}
    assert third == {"jsonrpc": "2.0", "result": -19, "id": 2}


async def test_notification_runs_the_method_and_returns_nothing() -> None:
    calls: list[tuple[str, Any]] = []
    notification = {"jsonrpc": "2.0", "method": "update", "params": {"values": [1, 2, 3, 4, 5]}}

    response = await send(make_dispatcher(calls), notification)

    assert response is None
    assert calls == [("record", ValuesParams(values=[1, 2, 3, 4, 5]))]


async def test_notification_of_an_unknown_method_returns_nothing() -> None:
    response = await send(make_dispatcher(), {"jsonrpc": "2.0", "method": "foobar"})

    assert response is None


async def test_unknown_method_is_method_not_found() -> None:
    response = await send(make_dispatcher(), request("foobar", id="1"))

    assert error_code(response) == -32601
    assert response["id"] == "1"


async def test_invalid_json_is_a_parse_error_with_null_id() -> None:
    body = b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]'

    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32700
    assert response["id"] is None


async def test_invalid_request_object_is_invalid_request_with_null_id() -> None:
    response = await send(make_dispatcher(), {"jsonrpc": "2.0", "method": 1, "params": "bar"})

    assert error_code(response) == -32600
    assert response["id"] is None


async def test_batch_with_invalid_json_is_one_parse_error() -> None:
    body = b"""[
      {"jsonrpc": "2.0", "method": "sum", "params": {"values": [1,2,4]}, "id": "1"},
      {"jsonrpc": "2.0", "method"
    ]"""

    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32700
    assert response["id"] is None


async def test_empty_batch_is_one_invalid_request_object() -> None:
    response = await send(make_dispatcher(), [])

    assert error_code(response) == -32600
    assert response["id"] is None


@pytest.mark.parametrize("batch", [[1], [1, 2, 3], [[request("get_data")]], ["x", None]])
async def test_each_batch_element_that_is_not_an_object_is_invalid_request(
    batch: list[object],
) -> None:
    response = await send(make_dispatcher(), batch)

    assert isinstance(response, list)
    assert len(response) == len(batch)
    assert all(error_code(item) == -32600 for item in response)
    assert all(item["id"] is None for item in response)


async def test_mixed_batch_answers_every_request_but_the_notifications() -> None:
    batch = [
        request("sum", {"values": [1, 2, 4]}, id="1"),
        {"jsonrpc": "2.0", "method": "notify_hello", "params": {"value": 7}},
        request("subtract", {"minuend": 42, "subtrahend": 23}, id="2"),
        {"foo": "boo"},
        request("foo.get", {"name": "myself"}, id="5"),
        request("get_data", id="9"),
    ]

    response = await send(make_dispatcher(), batch)

    assert isinstance(response, list)
    by_id = {item["id"]: item for item in response if item["id"] is not None}
    invalid = [item for item in response if item["id"] is None]
    assert len(response) == 5
    assert by_id["1"] == {"jsonrpc": "2.0", "result": 7, "id": "1"}
    assert by_id["2"] == {"jsonrpc": "2.0", "result": 19, "id": "2"}
    assert error_code(by_id["5"]) == -32601
    assert by_id["9"] == {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    assert [error_code(item) for item in invalid] == [-32600]


async def test_batch_of_only_notifications_returns_nothing() -> None:
    calls: list[tuple[str, Any]] = []
    batch = [
        {"jsonrpc": "2.0", "method": "notify_sum", "params": {"values": [1, 2, 4]}},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": {"value": 7}},
    ]

    response = await send(make_dispatcher(calls), batch)

    assert response is None
    assert len(calls) == 2


# --- request objects ----------------------------------------------------------------------


async def test_null_id_is_a_request_answered_with_null_id() -> None:
    response = await send(make_dispatcher(), request("get_data", id=None))

    assert response == {"jsonrpc": "2.0", "result": ["hello", 5], "id": None}


@pytest.mark.parametrize("request_id", ["abc", "", 0, -7, 1.5, 10**30])
async def test_string_and_number_ids_are_echoed(request_id: object) -> None:
    response = await send(make_dispatcher(), request("get_data", id=request_id))

    assert response == {"jsonrpc": "2.0", "result": ["hello", 5], "id": request_id}


@pytest.mark.parametrize("request_id", [{}, {"a": 1}, [], [1], True, False])
async def test_bad_id_type_is_invalid_request_with_null_id(request_id: object) -> None:
    calls: list[tuple[str, Any]] = []

    response = await send(make_dispatcher(calls), request("get_data", id=request_id))

    assert error_code(response) == -32600
    assert response["id"] is None
    assert calls == []


@pytest.mark.parametrize("version", ["1.0", "2", 2.0, 2, None, "2.0 "])
async def test_wrong_jsonrpc_version_is_invalid_request(version: object) -> None:
    message = {"jsonrpc": version, "method": "get_data", "id": 7}

    response = await send(make_dispatcher(), message)

    assert error_code(response) == -32600
    assert response["id"] == 7


async def test_missing_jsonrpc_member_is_invalid_request() -> None:
    response = await send(make_dispatcher(), {"method": "get_data", "id": 7})

    assert error_code(response) == -32600


async def test_invalid_notification_is_still_answered() -> None:
    response = await send(make_dispatcher(), {"jsonrpc": "1.0", "method": "get_data"})

    assert error_code(response) == -32600


@pytest.mark.parametrize("method", [None, 1, ["get_data"], {"name": "get_data"}])
async def test_method_that_is_not_a_string_is_invalid_request(method: object) -> None:
    response = await send(make_dispatcher(), {"jsonrpc": "2.0", "method": method, "id": 1})

    assert error_code(response) == -32600


async def test_missing_method_is_invalid_request() -> None:
    response = await send(make_dispatcher(), {"jsonrpc": "2.0", "id": 1})

    assert error_code(response) == -32600


@pytest.mark.parametrize("params", ["bar", 1, True, None])
async def test_params_that_are_neither_object_nor_array_are_invalid_request(
    params: object,
) -> None:
    message = {"jsonrpc": "2.0", "method": "get_data", "params": params, "id": 1}

    response = await send(make_dispatcher(), message)

    assert error_code(response) == -32600


@pytest.mark.parametrize("body", [b"1", b'"get_data"', b"null", b"true"])
async def test_body_that_is_neither_object_nor_array_is_invalid_request(body: bytes) -> None:
    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32600
    assert response["id"] is None


# --- params -------------------------------------------------------------------------------


async def test_validation_error_data_lists_loc_and_msg() -> None:
    params = {"minuend": "forty-two", "extra": 1}

    response = await send(make_dispatcher(), request("subtract", params))

    assert error_code(response) == -32602
    data = response["error"]["data"]
    assert isinstance(data, list)
    assert {tuple(item["loc"]) for item in data} >= {("minuend",), ("subtrahend",)}
    assert all(set(item) == {"loc", "msg"} for item in data)
    assert all(isinstance(item["msg"], str) and item["msg"] for item in data)


async def test_absent_params_are_validated_as_an_empty_object() -> None:
    response = await send(make_dispatcher(), request("subtract"))

    assert error_code(response) == -32602
    data = response["error"]["data"]
    assert sorted(item["loc"] for item in data) == [["minuend"], ["subtrahend"]]


async def test_positional_params_data_says_where() -> None:
    response = await send(make_dispatcher(), request("subtract", [42, 23]))

    assert response["error"]["data"] == [
        {"loc": [], "msg": "params must be given by name (an object), not by position (an array)"}
    ]


async def test_empty_array_for_a_method_with_params_is_invalid_params() -> None:
    response = await send(make_dispatcher(), request("subtract", []))

    assert error_code(response) == -32602


@pytest.mark.parametrize("params", [None, {}, []])
async def test_method_without_params_accepts_none_empty_object_or_empty_array(
    params: object,
) -> None:
    calls: list[tuple[str, Any]] = []
    message: dict[str, object] = {"jsonrpc": "2.0", "method": "get_data", "id": 1}
    if params is not None:
        message["params"] = params

    response = await send(make_dispatcher(calls), message)

    assert response == {"jsonrpc": "2.0", "result": ["hello", 5], "id": 1}
    assert calls == [("get_data", None)]


@pytest.mark.parametrize("params", [{"x": 1}, [1]])
async def test_method_without_params_refuses_any_params(params: object) -> None:
    calls: list[tuple[str, Any]] = []

    response = await send(make_dispatcher(calls), request("get_data", params))

    assert error_code(response) == -32602
    assert calls == []


# --- results and errors -------------------------------------------------------------------


async def test_model_result_is_dumped_without_none_fields() -> None:
    response = await send(make_dispatcher(), request("answer"))

    assert response == {"jsonrpc": "2.0", "result": {"text": "hi"}, "id": 1}


@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_handler_raising_a_toolrpc_error_gives_its_code_and_data(name: str) -> None:
    exc = ERRORS[name]

    response = await send(make_dispatcher(), request("raise_error", {"error": name}, id=5))

    assert response == error_object(exc, 5)
    assert error_code(response) == exc.code


async def test_unexpected_exception_is_internal_error_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="toolrpc.rpc.dispatcher"):
        response = await send(make_dispatcher(), request("crash", id=8))

    assert error_code(response) == -32603
    assert response["id"] == 8
    assert "secret" not in json.dumps(response)
    assert any(record.exc_info for record in caplog.records)


async def test_notification_that_raises_returns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, Any]] = []

    with caplog.at_level(logging.CRITICAL, logger="toolrpc.rpc.dispatcher"):
        crashed = await send(make_dispatcher(calls), {"jsonrpc": "2.0", "method": "crash"})
    refused = await send(
        make_dispatcher(), {"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 1}}
    )

    assert crashed is None
    assert refused is None
    assert calls == [("crash", None)]


def test_error_object_omits_data_when_none() -> None:
    assert error_object(MethodNotFound("Method not found"), "a") == {
        "jsonrpc": "2.0",
        "error": {"code": -32601, "message": "Method not found"},
        "id": "a",
    }
    assert error_object(Overloaded("full", retry_after_s=2.0), None)["error"] == {
        "code": -32000,
        "message": "full",
        "data": {"retry_after_s": 2.0},
    }


# --- batches ------------------------------------------------------------------------------


async def test_batch_larger_than_the_limit_is_one_invalid_request() -> None:
    dispatcher = make_dispatcher(max_batch_size=3)

    at_limit = await send(dispatcher, [request("get_data", id=i) for i in range(3)])
    over_limit = await send(dispatcher, [request("get_data", id=i) for i in range(4)])

    assert isinstance(at_limit, list) and len(at_limit) == 3
    assert error_code(over_limit) == -32600
    assert over_limit["id"] is None


async def test_batch_members_run_concurrently() -> None:
    ping_seen, pong_seen = asyncio.Event(), asyncio.Event()

    async def ping(params: None) -> str:
        ping_seen.set()
        await pong_seen.wait()
        return "ping"

    async def pong(params: None) -> str:
        pong_seen.set()
        await ping_seen.wait()
        return "pong"

    dispatcher = Dispatcher([Method("ping", ping, None), Method("pong", pong, None)])

    response = await send(dispatcher, [request("ping", id=1), request("pong", id=2)])

    assert isinstance(response, list)
    assert sorted(item["result"] for item in response) == ["ping", "pong"]


@pytest.mark.parametrize("batched", [False, True])
async def test_cancellation_propagates_out_of_handle(batched: bool) -> None:
    started, released = asyncio.Event(), asyncio.Event()

    async def wait_forever(params: None) -> None:
        started.set()
        await released.wait()

    dispatcher = Dispatcher([Method("wait", wait_forever, None)])
    payload: object = [request("wait")] if batched else request("wait")
    task = asyncio.create_task(dispatcher.handle(json.dumps(payload).encode()))
    async with asyncio.timeout(WAIT_S):
        await started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT_S):
            await task


# --- pathological input -------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
async def test_non_finite_numbers_are_parse_errors(literal: bytes) -> None:
    body = b'{"jsonrpc": "2.0", "method": "get_data", "id": ' + literal + b"}"

    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32700


async def test_integer_too_long_to_convert_is_a_parse_error() -> None:
    body = b'{"jsonrpc": "2.0", "method": "get_data", "id": ' + b"9" * 10_000 + b"}"

    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32700


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",
        b'{"jsonrpc": "2.0", "method": "get_\xc3\x28data", "id": 1}',
        '{"jsonrpc": "2.0", "method": "get_data", "id": 1}'.encode("utf-16"),
        b"",
        b"   ",
    ],
)
async def test_body_that_is_not_utf8_json_is_a_parse_error(body: bytes) -> None:
    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32700


@pytest.mark.parametrize("opening,closing", [(b"[", b"]"), (b'{"a":', b"}")])
async def test_deeply_nested_body_is_a_parse_error(opening: bytes, closing: bytes) -> None:
    depth = 100_000
    body = opening * depth + closing * depth

    response = await send(make_dispatcher(), body)

    assert error_code(response) == -32700


async def test_deeply_nested_params_are_refused_without_raising() -> None:
    depth = 100_000
    body = (
        b'{"jsonrpc": "2.0", "method": "sum", "id": 1, "params": {"values": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )

    response = await send(make_dispatcher(), body)

    assert error_code(response) in (-32700, -32600)


# --- construction -------------------------------------------------------------------------


async def noop(params: None) -> None:
    return None


@pytest.mark.parametrize("names", [["a", "a"], ["rpc.discover"]])
def test_duplicate_or_reserved_method_names_are_refused(names: list[str]) -> None:
    with pytest.raises(ValueError):
        Dispatcher([Method(name, noop, None) for name in names])


def test_batch_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Dispatcher([], max_batch_size=0)


async def test_every_call_is_reported_with_its_outcome_and_unknown_names_as_one() -> None:
    seen: list[tuple[str, str]] = []

    async def echo(params: Any) -> Any:
        return "ok"

    dispatcher = Dispatcher([Method("echo", echo)], on_call=lambda m, o: seen.append((m, o)))
    body = [
        {"jsonrpc": "2.0", "id": 1, "method": "echo"},
        {"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {"x": 1}},
        {"jsonrpc": "2.0", "id": 3, "method": "no_such_method_1"},
        {"jsonrpc": "2.0", "method": "no_such_method_2"},
    ]

    await dispatcher.handle(json.dumps(body).encode())

    assert sorted(seen) == [
        ("(unknown)", "-32601"),
        ("(unknown)", "-32601"),
        ("echo", "-32602"),
        ("echo", "ok"),
    ]
