"""`GET /metrics`: Prometheus text format, one registry per app (prometheus-client).

HTTP-level counts (requests by endpoint and status, request latency) are recorded by the routes;
engine counters and gauges (tokens, cancellations, running and waiting sequences) are read from
`Engine.stats()` at scrape time by a custom collector, so the engine keeps no Prometheus state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from toolrpc.generation import EngineStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EngineCollector(Collector):
    """Exposes an engine's `stats()` as Prometheus metrics."""

    def __init__(self, read: Callable[[], EngineStats]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """Read the stats once and yield every metric."""
        stats = self._read()
        counters = {
            "toolrpc_generations": ("generations started", stats.num_requests),
            "toolrpc_generations_cancelled": (
                "generations cancelled (client left, time limit)",
                stats.num_cancelled,
            ),
            "toolrpc_prompt_tokens": ("prompt tokens admitted", stats.num_prompt_tokens),
            "toolrpc_generated_tokens": ("tokens generated", stats.num_generated_tokens),
            "toolrpc_cached_prompt_tokens": (
                "prompt tokens reused from the KV cache",
                stats.num_cached_tokens,
            ),
            "toolrpc_engine_steps": ("batched model steps", stats.num_steps),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "toolrpc_running_sequences", "sequences generating now", value=stats.num_running
        )
        yield GaugeMetricFamily(
            "toolrpc_waiting_sequences", "sequences waiting for a slot", value=stats.num_waiting
        )


class ServerMetrics:
    """The app's registry: HTTP metrics plus the engine collector."""

    def __init__(self, read_stats: Callable[[], EngineStats]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "toolrpc_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "toolrpc_http_request_seconds",
            "time to answer (for /stream: to the first event)",
            ["endpoint"],
            registry=self.registry,
        )
        self.registry.register(EngineCollector(read_stats))

    async def measure(self, endpoint: str, answer: Awaitable[Response]) -> Response:
        """Await a route's response, counting it by status and timing it."""
        with self.latency.labels(endpoint).time():
            response = await answer
        self.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
