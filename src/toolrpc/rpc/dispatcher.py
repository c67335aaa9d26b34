"""A JSON-RPC 2.0 dispatcher: bytes in, a response (or nothing) out.

It follows https://www.jsonrpc.org/specification: parse errors, invalid requests, notifications,
`"id": null`, batches run concurrently. Params are taken by name only and validated with each
method's pydantic model. `error_object` is the one place that turns a `ToolRpcError` into a
JSON-RPC error object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias, TypeGuard, TypeVar

from pydantic import BaseModel, ValidationError

from toolrpc.errors import (
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParamError,
    ParseError,
    ToolRpcError,
)
from toolrpc.types import JSONObject, JSONValue

logger = logging.getLogger(__name__)

RequestId: TypeAlias = str | int | float | None
"""A request's `id`: a string, a number, or null."""

Params: TypeAlias = "JSONObject | list[JSONValue] | None"
"""A request's `params` as sent: by name, by position, or absent (None)."""

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Method:
    """A JSON-RPC method: its name, its async handler and the pydantic model of its params.

    The handler is called with the validated params model instance (None when `params_model` is
    None) and returns a pydantic model or a plain JSON value.
    """

    name: str
    handler: Callable[[Any], Awaitable[Any]]
    params_model: type[BaseModel] | None = None


@dataclass(frozen=True)
class _Request:
    method: str
    params: Params
    id: RequestId
    is_notification: bool


def error_body(exc: ToolRpcError) -> JSONObject:
    """The error member for `exc`: its code, message and (when not None) data. The one place
    an error's fields are laid out: `/stream`'s plain HTTP errors use it too."""
    error: JSONObject = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return error


def error_object(exc: ToolRpcError, request_id: RequestId) -> JSONObject:
    """The JSON-RPC response object for `exc`."""
    return {"jsonrpc": "2.0", "error": error_body(exc), "id": request_id}


def parse_params(body: bytes, params_model: type[ModelT]) -> ModelT:
    """A body that is a bare params object (no envelope: `/stream`), parsed and validated as
    a method's params are. Raises `ParseError` when it is not JSON, `InvalidParams` otherwise."""
    payload = _parse(body)
    if not isinstance(payload, dict):
        message = "the body must be a JSON object of params"
        raise InvalidParams(message, [ParamError((), message)])
    try:
        return params_model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidParams.from_validation(exc) from exc


class Dispatcher:
    """Answers JSON-RPC 2.0 request bodies by calling the registered methods.

    Knows method names and params models, nothing of what the methods do.
    """

    def __init__(
        self,
        methods: Iterable[Method],
        *,
        max_batch_size: int = 100,
        on_call: Callable[[str, str], None] | None = None,
    ) -> None:
        """Register `methods`; raises ValueError on a duplicate or reserved (`rpc.`) name.

        `on_call(method, outcome)`, when given, is told of every valid request object
        (notifications too): its method (`(unknown)` for a name no method has, so a client
        cannot grow the set of names) and `ok` or the JSON-RPC code of its error as text
        (invalid params included). It must not raise.
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.max_batch_size = max_batch_size
        self._on_call = on_call
        self._methods: dict[str, Method] = {}
        for method in methods:
            if method.name in self._methods or method.name.startswith("rpc."):
                raise ValueError(f"method name {method.name!r} is a duplicate or reserved")
            self._methods[method.name] = method

    async def handle(self, body: bytes) -> JSONValue | None:
        """Answer one request body: a response object, a list for a batch, or None when nothing
        must be sent (a notification, or a batch of only notifications).

        Never raises for any input; only cancellation propagates.
        """
        try:
            payload = _parse(body)
        except ParseError as exc:
            return error_object(exc, None)
        if isinstance(payload, list):
            return await self._handle_batch(payload)
        return await self._handle_one(payload)

    async def _handle_batch(self, batch: list[JSONValue]) -> JSONValue | None:
        if not batch:
            return error_object(InvalidRequest("Invalid Request: empty batch"), None)
        if len(batch) > self.max_batch_size:
            message = f"Invalid Request: a batch holds at most {self.max_batch_size} requests"
            return error_object(InvalidRequest(message), None)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._handle_one(item)) for item in batch]
        responses: list[JSONValue] = [r for t in tasks if (r := t.result()) is not None]
        return responses or None

    async def _handle_one(self, payload: JSONValue) -> JSONObject | None:
        try:
            request = _read_request(payload)
        except InvalidRequest as exc:
            return error_object(exc, _readable_id(payload))
        outcome = "ok"
        try:
            result = await self._call(request)
        except ToolRpcError as exc:
            response = error_object(exc, request.id)
            outcome = str(exc.code)
        except Exception:
            logger.exception("internal error in JSON-RPC method %r", request.method)
            response = error_object(ToolRpcError("Internal error"), request.id)
            outcome = str(ToolRpcError.code)
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": request.id}
        if self._on_call is not None:  # a name no method has is one label, not one per name
            known = request.method if request.method in self._methods else "(unknown)"
            self._on_call(known, outcome)
        return None if request.is_notification else response

    async def _call(self, request: _Request) -> JSONValue:
        method = self._methods.get(request.method)
        if method is None:
            raise MethodNotFound("Method not found")
        params = _bind_params(method, request.params)
        result = await method.handler(params)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json", exclude_none=True)
        value: JSONValue = result
        return value


def _parse(body: bytes) -> JSONValue:
    """Decode strict UTF-8 JSON; raises ParseError for anything else, including NaN/Infinity,
    numbers too large for a float, over-long integers and nesting too deep to parse."""
    try:
        text = body.decode("utf-8")
        payload: JSONValue = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ParseError("Parse error") from exc
    return payload


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _is_valid_id(value: JSONValue) -> TypeGuard[RequestId]:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _readable_id(payload: JSONValue) -> RequestId:
    """The id of an invalid request when it can be read, else None (as the spec asks)."""
    if isinstance(payload, dict):
        request_id = payload.get("id")
        if _is_valid_id(request_id):
            return request_id
    return None


def _read_request(payload: JSONValue) -> _Request:
    """Check the request object's members; raises InvalidRequest."""
    if not isinstance(payload, dict):
        raise InvalidRequest("Invalid Request: a request must be an object")
    request_id = payload.get("id")
    if not _is_valid_id(request_id):
        raise InvalidRequest("Invalid Request: 'id' must be a string, a number or null")
    if payload.get("jsonrpc") != "2.0":
        raise InvalidRequest("Invalid Request: 'jsonrpc' must be \"2.0\"")
    method = payload.get("method")
    if not isinstance(method, str):
        raise InvalidRequest("Invalid Request: 'method' must be a string")
    return _Request(
        method=method,
        params=_read_params(payload),
        id=request_id,
        is_notification="id" not in payload,
    )


def _read_params(payload: JSONObject) -> Params:
    """The request's params, None when absent; raises InvalidRequest unless object or array."""
    if "params" not in payload:
        return None
    params = payload["params"]
    if not isinstance(params, dict | list):
        raise InvalidRequest("Invalid Request: 'params' must be an object or an array")
    return params


def _bind_params(method: Method, params: Params) -> BaseModel | None:
    """Validate `params` for `method`; raises InvalidParams with one `{loc, msg}` per problem."""
    if isinstance(params, list):
        if params or method.params_model is not None:
            message = "params must be given by name (an object), not by position (an array)"
            raise InvalidParams("Invalid params", [ParamError((), message)])
        return None
    if method.params_model is None:
        if params:
            unexpected = [ParamError((name,), "this method takes no params") for name in params]
            raise InvalidParams("Invalid params", unexpected)
        return None
    try:
        return method.params_model.model_validate({} if params is None else params)
    except ValidationError as exc:
        raise InvalidParams.from_validation(exc) from exc
