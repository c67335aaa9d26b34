"""Reading a request body with a size limit, before anything parses it."""

from __future__ import annotations

from fastapi import Request

from toolrpc.errors import BodyTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; raises `BodyTooLarge` as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    received = bytearray()
    async for piece in request.stream():
        received += piece
        if len(received) > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
    return bytes(received)
