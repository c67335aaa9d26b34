"""The engine is somebody else's server: OpenAI-compatible replicas (vLLM, SGLang, TGI,
llama.cpp's llama-server, llama-cpp-python's server, other toolrpc processes).

`UpstreamPool` knows HTTP and OpenAI's JSON, nothing of toolrpc's wire models or chat: it
streams `POST {replica}/chat/completions` (or `/completions`) and yields each SSE chunk as a
plain dict; the chat layer (chat/upstream.py) builds the request and reads the chunks. Every
replica shares one `httpx.AsyncClient`, so connections are pooled and kept alive.

Which replica serves a request is engines/replicas.py's decision. What this module adds:

- a request that fails before its first token (connection refused or reset, a 5xx, a 429/503,
  a stream that ends before any chunk) is tried once more on another replica; one that fails
  after its first token cannot be replayed (the client has seen text), so it ends with
  `Overloaded`: the client retries and a healthy replica answers;
- a refused or reset connection, a broken stream or a 502/504 takes the replica out (passive
  check); a probe of `GET {replica}/models` every `health_interval_s` takes it back or out
  (active check), which every OpenAI-compatible server answers without generating; a replica
  busy streaming is not probed;
- a timeout (a stream silent for `timeout_s`, a probe unanswered) takes the replica out only
  when it has answered nothing at all for `timeout_s`: a server busy with other clients queues
  requests and answers probes late (llama-cpp-python's answers `/v1/models` only between
  generations), and taking the only replica out for that turned a queue into 503s;
- `deadline_s` (`--request-timeout-s`) bounds a whole request, as it does on a local engine;
- closing the stream closes the upstream response, so the upstream stops generating too;
- no replica in service, or all of them at `max_outstanding`: `Overloaded` at once, never a wait.

`UpstreamPool` is also an `Engine` (`info` from the upstream's `/v1/models`, `stats` from its
counters, `generate` over `/completions`), so the layers that only need an engine work over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from toolrpc.engines.base import (
    Chunk,
    ContinuationScore,
    EngineInfo,
    EngineStats,
    GenerationRequest,
    TokenUsage,
)
from toolrpc.engines.openai_stream import (
    ReplicaFailed,
    carries_output,
    refuse,
    sampling_body,
    sse_chunks,
    token_usage,
)
from toolrpc.engines.replicas import Replica, ReplicaSet, ReplicaStats
from toolrpc.errors import GenerationCancelled, InvalidParams, MethodNotFound, Overloaded
from toolrpc.types import EngineFinishReason, JSONObject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamOptions:
    """Where the replicas are and how long to wait for them."""

    urls: tuple[str, ...]
    model: str | None = None
    """The name the upstreams serve the model under; None: the first of `/v1/models`."""
    timeout_s: float = 60.0
    """Longest silence between two chunks (and longest wait for the first); a replica that
    answers nothing to anyone for this long is taken out."""
    deadline_s: float | None = None
    """Time limit of one request, from its start to its last chunk; None: none."""
    connect_timeout_s: float = 5.0
    health_interval_s: float = 5.0
    max_outstanding: int = 64
    """Requests in flight on one replica before it is considered full."""
    context_length: int = 4096
    """Reported when the upstream's `/v1/models` does not say (vLLM's `max_model_len` does)."""


def base_url(url: str) -> str:
    """`url` as the base of the OpenAI routes: `http://host:8000` and `http://host:8000/v1/`
    both become `http://host:8000/v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def probe_upstreams(options: UpstreamOptions) -> tuple[EngineInfo, frozenset[str]]:
    """Ask every replica's `/models` (blocking, at start): the model's info, and the replicas
    that answered.

    Raises `ValueError`, its one line naming the flag and the problem, when no replica answers
    or none serves `options.model`.
    """
    cards: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    with httpx.Client(timeout=options.connect_timeout_s) as client:
        for url in map(base_url, options.urls):
            try:
                response = client.get(f"{url}/models")
                response.raise_for_status()
                cards[url] = list(response.json().get("data") or [])
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                problems.append(f"{url}: {type(exc).__name__}: {exc}")
    if not cards:
        raise ValueError(f"--upstream: no upstream answered GET /v1/models ({'; '.join(problems)})")
    for problem in problems:
        logger.warning("upstream out of service at start: %s", problem)
    served = [card for url_cards in cards.values() for card in url_cards if "id" in card]
    card = next((c for c in served if options.model in (None, c["id"])), None)
    if card is None:
        names = sorted({str(c["id"]) for c in served})
        raise ValueError(f"--model {options.model}: the upstreams serve {names}, not it")
    length = card.get("max_model_len") or card.get("context_length") or options.context_length
    info = EngineInfo(model_name=str(card["id"]), context_length=int(length))
    return info, frozenset(cards)


class UpstreamPool:
    """OpenAI-compatible replicas behind one streaming interface (module docstring)."""

    def __init__(
        self,
        options: UpstreamOptions,
        info: EngineInfo,
        *,
        reachable: frozenset[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`reachable`: the replicas `probe_upstreams` reached (the others start out of
        service); `transport`: httpx's, for tests that answer in-process."""
        self.options = options
        self._info = info
        self.replicas = ReplicaSet(
            [base_url(url) for url in options.urls], max_outstanding=options.max_outstanding
        )
        for replica in self.replicas.replicas:
            if reachable is not None and replica.url not in reachable:
                self.replicas.take_out(replica, "not reachable at start")
        timeout = httpx.Timeout(options.timeout_s, connect=options.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport)
        self._checker: asyncio.Task[None] | None = None
        self._counts = {"requests": 0, "cancelled": 0, "prompt": 0, "generated": 0, "cached": 0}

    @property
    def info(self) -> EngineInfo:
        """The served model's name and context length, as the upstream reported them."""
        return self._info

    def replica_stats(self) -> tuple[ReplicaStats, ...]:
        """Each replica's state and counters."""
        return tuple(replica.stats() for replica in self.replicas.replicas)

    def stats(self) -> EngineStats:
        """Requests and tokens through the pool; in flight counts as running."""
        counts = self._counts
        return EngineStats(
            num_running=sum(r.num_outstanding for r in self.replicas.replicas),
            num_requests=counts["requests"],
            num_cancelled=counts["cancelled"],
            num_prompt_tokens=counts["prompt"],
            num_generated_tokens=counts["generated"],
            num_cached_tokens=counts["cached"],
        )

    async def stream(
        self, path: str, body: JSONObject, affinity_key: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST `body` (with `stream: true`) to `path` on a replica; yield each chunk.

        Raises `Overloaded` when no replica can take the request, or one failed after its first
        token; `InvalidParams` when the upstream refused the request itself (a 4xx).
        """
        self.start()
        self._counts["requests"] += 1
        deadline = (
            None if self.options.deadline_s is None else time.monotonic() + self.options.deadline_s
        )
        tried: list[Replica] = []
        for _attempt in range(2):
            replica = self.replicas.choose(affinity_key, exclude=tried)
            if replica is None:
                break
            if tried:
                tried[-1].num_retried += 1
            tried.append(replica)
            has_started = False
            try:
                async with contextlib.aclosing(self._stream_from(replica, path, body)) as chunks:
                    async for chunk in chunks:
                        if not has_started:
                            has_started = True
                            self.replicas.remember(affinity_key, replica)
                        self._count_usage(chunk)
                        yield chunk
                        if deadline is not None and time.monotonic() > deadline:
                            limit = self.options.deadline_s
                            raise GenerationCancelled(
                                f"generation ran past the time limit of {limit:g} s"
                            )
                return
            except ReplicaFailed as exc:
                self._failed(replica, exc)
                if has_started:
                    raise Overloaded(
                        f"upstream {replica.url} failed during generation ({exc.reason}); retry",
                        retry_after_s=1.0,
                    ) from exc
            except (GeneratorExit, asyncio.CancelledError):
                self._counts["cancelled"] += 1
                raise
        raise self._overloaded(tried)

    async def _stream_from(
        self, replica: Replica, path: str, body: JSONObject
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The chunks of one attempt on one replica, in order; a chunk without output (a role
        chunk, which some servers send before generating; a usage chunk) is held back until the
        next chunk with output or the end, so a failure before the first token has yielded
        nothing and the request can be retried elsewhere.
        Raises `ReplicaFailed` for what another replica may serve, `InvalidParams` for what the
        upstream refused."""
        replica.num_outstanding += 1
        replica.num_requests += 1
        held: list[dict[str, Any]] = []
        try:
            async with self._client.stream("POST", replica.url + path, json=body) as response:
                replica.answered()
                if response.status_code != 200:
                    await refuse(response)
                async for chunk in sse_chunks(response):
                    replica.answered()
                    held.append(chunk)
                    if carries_output(chunk):
                        for ready in held:
                            yield ready
                        held = []
            for ready in held:
                yield ready
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise ReplicaFailed(reason, takes_out=self._is_dead(replica, exc)) from exc
        finally:
            replica.num_outstanding -= 1

    def _is_dead(self, replica: Replica, exc: httpx.HTTPError) -> bool:
        """Whether `exc` proves `replica` out of service: any failure but a timeout does; a
        timeout does once the replica has answered nothing for a whole `timeout_s`."""
        if not isinstance(exc, httpx.TimeoutException):
            return True
        return replica.silent_for() >= self.options.timeout_s

    def _failed(self, replica: Replica, exc: ReplicaFailed) -> None:
        logger.warning("upstream %s failed: %s", replica.url, exc.reason)
        if exc.takes_out:
            self.replicas.take_out(replica, exc.reason)
        else:
            replica.last_error = exc.reason

    def _overloaded(self, tried: list[Replica]) -> Overloaded:
        if not self.replicas.any_healthy:
            message = "every upstream replica is out of service"
        elif tried:
            message = f"the upstream replicas failed this request ({tried[-1].last_error})"
        else:
            message = "every upstream replica is at its limit of requests in flight"
        return Overloaded(message, retry_after_s=self.options.health_interval_s)

    def _count_usage(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            return
        details = usage.get("prompt_tokens_details") or {}
        self._counts["prompt"] += int(usage.get("prompt_tokens") or 0)
        self._counts["generated"] += int(usage.get("completion_tokens") or 0)
        self._counts["cached"] += int(details.get("cached_tokens") or 0)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Continue `request.prompt` with the upstream's `/completions` (see `Engine`).

        Raises `InvalidParams` for a `json_schema` (OpenAI's completions API has no portable
        way to constrain output), and what `stream` raises.
        """
        if request.json_schema is not None:
            raise InvalidParams("an upstream engine cannot constrain a plain completion")
        body: JSONObject = {
            "model": self.info.model_name,
            "prompt": request.prompt,
            **sampling_body(request.sampling, request.max_new_tokens, request.stop),
        }
        reason: EngineFinishReason = "stop"
        usage: TokenUsage | None = None
        async with contextlib.aclosing(self.stream("/completions", body)) as chunks:
            async for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    if choice.get("text"):
                        yield Chunk(str(choice["text"]))
                    if choice.get("finish_reason") == "length":
                        reason = "length"
                usage = token_usage(chunk.get("usage")) or usage
        yield Chunk("", finish_reason=reason, usage=usage or TokenUsage(0, 0))

    async def score(self, prompt: str, continuation: str) -> ContinuationScore:
        """Not served: OpenAI-compatible servers have no portable teacher-forced scoring, so
        the tool router (its only user) is off for upstream models. Raises `MethodNotFound`."""
        raise MethodNotFound("scoring is not available on an upstream engine")

    def start(self) -> None:
        """Start the active health checks (idempotent; needs a running event loop)."""
        if self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(self._check_forever())

    async def check_health(self) -> None:
        """Probe every replica once: a replica that answers `/models` is in service, one that
        does not is out."""
        await asyncio.gather(*(self._probe(replica) for replica in self.replicas.replicas))

    async def _probe(self, replica: Replica) -> None:
        """Probe one replica, unless it is in service with requests in flight: their chunks
        are proof of life (a failure among them takes it out), and a probe would hurt them:
        llama-cpp-python's server answers `/v1/models` only between generations and, by default
        (`interrupt_requests`), ends the running generation to do so."""
        if replica.is_healthy and replica.num_outstanding > 0:
            return
        try:
            response = await self._client.get(
                f"{replica.url}/models", timeout=self.options.connect_timeout_s
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if replica.is_healthy and self._is_dead(replica, exc):
                logger.warning("upstream %s failed its health check: %r", replica.url, exc)
                self.replicas.take_out(replica, f"health check: {type(exc).__name__}")
            return
        replica.answered()
        if not replica.is_healthy:
            logger.info("upstream %s is back in service", replica.url)
            self.replicas.take_back(replica)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.health_interval_s)
            await self.check_health()

    async def aclose(self) -> None:
        """Stop the health checks and close every connection."""
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        await self._client.aclose()
