"""`GET /metrics`: Prometheus text format, one registry per app (prometheus-client).

HTTP-level counts (requests by endpoint and status, request latency) are recorded by the routes;
engine counters and gauges (tokens, cancellations, running and waiting sequences) are read from
`Engine.stats()` at scrape time by a custom collector, so the engine keeps no Prometheus state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from toolrpc.generation import QUEUE_WAIT_BOUNDS, EngineStats
from toolrpc.observe import StepRecord

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
        yield GaugeMetricFamily("toolrpc_kv_slots", "KV cache slots", value=stats.num_slots)
        yield GaugeMetricFamily(
            "toolrpc_kv_slots_in_use", "KV slots a request runs in", value=stats.num_slots_in_use
        )
        yield GaugeMetricFamily(
            "toolrpc_kv_tokens",
            "tokens held in the KV cache (running sequences and kept prefixes)",
            value=stats.num_kv_tokens,
        )
        if stats.queue_wait_counts:
            bounds = [*(str(bound) for bound in QUEUE_WAIT_BOUNDS), "+Inf"]
            yield HistogramMetricFamily(
                "toolrpc_queue_wait_seconds",
                "time a request waited for a KV slot",
                buckets=list(zip(bounds, stats.queue_wait_counts, strict=True)),
                sum_value=stats.queue_wait_sum_s,
            )


# Buckets for token latencies: vLLM's TTFT and TPOT buckets, which span a GPU's 1 ms per token
# to a busy CPU's seconds.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5)
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)


class ServerMetrics:
    """The app's registry: HTTP metrics, the engine collector, per-step latencies and outcomes
    (as the service's `StepObserver`), JSON-RPC calls by method and outcome, sessions stored."""

    def __init__(
        self,
        read_stats: Callable[[], EngineStats],
        count_sessions: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.ttft = Histogram(
            "toolrpc_time_to_first_token_seconds",
            "time from a step's start to its first text or tool call",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "toolrpc_time_per_output_token_seconds",
            "time per generated token after the first, per step",
            buckets=TPOT_BUCKETS,
            registry=self.registry,
        )
        self.step_latency = Histogram(
            "toolrpc_step_seconds",
            "end-to-end time of a step, to its result or error",
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.steps = Counter(
            "toolrpc_steps",
            "steps by outcome: finish reason, or error:<JSON-RPC code>",
            ["outcome"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "toolrpc_tool_calls",
            "tool calls by outcome: valid (returned to the client), rejected (malformed, an "
            "unknown tool or invalid arguments: dropped), loop_guard (a repeat or the round "
            "limit ended the turn instead)",
            ["outcome"],
            registry=self.registry,
        )
        self.router_decisions = Counter(
            "toolrpc_router_decisions",
            "the tool router's decisions: tool, answer, abstain (no offered tool could be filled)",
            ["decision"],
            registry=self.registry,
        )
        self.rpc_calls = Counter(
            "toolrpc_rpc_calls",
            "JSON-RPC calls by method and outcome (ok, or the error code)",
            ["method", "outcome"],
            registry=self.registry,
        )
        if count_sessions is not None:
            self.registry.register(
                _GaugeCollector("toolrpc_sessions_stored", "sessions stored", count_sessions)
            )
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

    def step_done(self, record: StepRecord) -> None:
        """Count one step (the service's `StepObserver`)."""
        self.step_latency.observe(record.e2e_s)
        self.steps.labels(record.outcome).inc()
        if record.ttft_s is not None:
            self.ttft.observe(record.ttft_s)
            if record.completion_tokens > 1:
                after_first = record.e2e_s - record.ttft_s
                self.tpot.observe(max(0.0, after_first) / (record.completion_tokens - 1))
        if record.num_tool_calls:
            self.tool_calls.labels("valid").inc(record.num_tool_calls)
        if record.num_rejected_calls:
            self.tool_calls.labels("rejected").inc(record.num_rejected_calls)
        if record.outcome == "loop_guard":
            self.tool_calls.labels("loop_guard").inc()
        if record.route is not None:
            self.router_decisions.labels(record.route).inc()

    def rpc_call(self, method: str, outcome: str) -> None:
        """Count one JSON-RPC call of `method` that ended in `outcome`."""
        self.rpc_calls.labels(method, outcome).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class _GaugeCollector(Collector):
    """One gauge read at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """Read the value once."""
        yield GaugeMetricFamily(self._name, self._documentation, value=self._read())
