"""The JSON-RPC 2.0 layer: request bodies in, response objects out.

`Dispatcher` parses a `/rpc` body, checks each request object against the JSON-RPC 2.0
specification, validates params (by name) with the method's pydantic model, runs the handler and
builds the response; batches run concurrently and notifications are answered with nothing.
`error_object` is the one function that turns a `ToolRpcError` into a JSON-RPC error object
(`error_body` its error member); `parse_params` validates a bare params body the same way. This
layer knows method names and params models only: nothing of HTTP, FastAPI, sessions, chat or
models. The service registers its methods as `Method`s; the server turns a `None` answer into 204.
"""

from toolrpc.rpc.dispatcher import (
    Dispatcher,
    Method,
    RequestId,
    error_body,
    error_object,
    parse_params,
)

__all__ = ["Dispatcher", "Method", "RequestId", "error_body", "error_object", "parse_params"]
