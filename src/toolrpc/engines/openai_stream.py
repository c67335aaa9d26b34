"""OpenAI's chat-completions JSON and event stream, as the upstream engine reads and writes
them: the sampling fields of a request, the chunks of a streamed answer, what a refusal means.

Hand-written because no maintained library reads OpenAI's stream *as a proxy* needs it: the
`openai` SDK turns every chunk into its own models and every status into its exceptions, and
would cost a conversion each way per token for no validation toolrpc uses; the format is small
and stable (one `data:` line per JSON chunk, `data: [DONE]` last).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from toolrpc.engines.base import SamplingParams, TokenUsage
from toolrpc.errors import InvalidParams
from toolrpc.types import JSONObject

_CLIENT_ERRORS = frozenset({400, 404, 413, 422})
"""Statuses that blame the request, not the replica: passed on, never retried elsewhere."""
_GATEWAY_ERRORS = frozenset({502, 504})
"""Statuses that say the server behind a proxy is gone: the replica is taken out."""


class ReplicaFailed(Exception):
    """A replica failed a request in a way another replica may not (retry elsewhere)."""

    def __init__(self, reason: str, *, takes_out: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.takes_out = takes_out


def sampling_body(
    sampling: SamplingParams, max_new_tokens: int, stop: tuple[str, ...]
) -> JSONObject:
    """The OpenAI request fields for length and sampling (streamed, with usage). `top_k` is
    not OpenAI's, but vLLM, SGLang and llama.cpp's servers all accept it; it is sent only when
    set."""
    fields: JSONObject = {
        "max_tokens": max_new_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "seed": sampling.seed,
        "stop": list(stop) or None,
    }
    return {key: value for key, value in fields.items() if value is not None}


def carries_output(chunk: dict[str, Any]) -> bool:
    """True when `chunk` has generated output: text, a piece of a tool call, or a finish."""
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        has_delta = isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls"))
        if has_delta or choice.get("text") or choice.get("finish_reason"):
            return True
    return False


def token_usage(usage: object) -> TokenUsage | None:
    """An OpenAI `usage` object as `TokenUsage` (cached from `prompt_tokens_details`)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


async def refuse(response: httpx.Response) -> None:
    """Raise for a non-200 answer: `InvalidParams` with the upstream's message for a request
    it refuses; `ReplicaFailed` for a busy or failing one, which takes it out only for a
    gateway error (the server behind a proxy is gone): a server that answers 500 is alive, and
    llama-cpp-python's answers 500 for some requests it cannot validate."""
    await response.aread()
    message = _error_message(response)
    status = response.status_code
    if status in _CLIENT_ERRORS:
        raise InvalidParams(f"the upstream refused the request ({status}): {message}")
    raise ReplicaFailed(f"HTTP {status}: {message}", takes_out=status in _GATEWAY_ERRORS)


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return response.text[:200]
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(error)[:500]


async def sse_chunks(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON objects of an OpenAI event stream, up to `data: [DONE]`.

    Raises `ReplicaFailed` when the stream ends without `[DONE]` or carries something that is
    not a chunk (a server that died or broke mid-answer), or an `error` object in place of a
    chunk (the upstream failed the request after starting it).
    """
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ReplicaFailed(f"not a JSON chunk: {data[:80]!r}", takes_out=True) from exc
        if not isinstance(chunk, dict):
            raise ReplicaFailed(f"not a JSON object chunk: {data[:80]!r}", takes_out=True)
        if "error" in chunk and "choices" not in chunk:
            raise ReplicaFailed(f"streamed error: {chunk['error']}", takes_out=False)
        yield chunk
    raise ReplicaFailed("the stream ended without [DONE]", takes_out=True)
