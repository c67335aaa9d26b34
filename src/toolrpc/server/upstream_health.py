"""`/health` and `/metrics` figures of an upstream engine, one per replica.

Kept apart from server/metrics.py and app.py so that serving a local model does not change: the
app adds these only when its engine is an `UpstreamPool`. The figures are read from the pool at
scrape time (`UpstreamPool.replica_stats`), so the pool keeps no Prometheus state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from toolrpc.engines.replicas import ReplicaStats
from toolrpc.types import JSONObject, JSONValue


class UpstreamCollector(Collector):
    """Per-replica metrics, labelled by the replica's URL."""

    def __init__(self, read: Callable[[], Sequence[ReplicaStats]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """Read every replica's stats once and yield each metric."""
        replicas = self._read()
        families: list[tuple[Metric, Callable[[ReplicaStats], float]]] = [
            (
                GaugeMetricFamily(
                    "toolrpc_upstream_healthy", "1 when the replica is in service", labels=["url"]
                ),
                lambda r: float(r.is_healthy),
            ),
            (
                GaugeMetricFamily(
                    "toolrpc_upstream_outstanding", "requests in flight", labels=["url"]
                ),
                lambda r: float(r.num_outstanding),
            ),
            (
                CounterMetricFamily(
                    "toolrpc_upstream_requests", "requests sent (retries too)", labels=["url"]
                ),
                lambda r: float(r.num_requests),
            ),
            (
                CounterMetricFamily(
                    "toolrpc_upstream_failures", "times taken out of service", labels=["url"]
                ),
                lambda r: float(r.num_failures),
            ),
            (
                CounterMetricFamily(
                    "toolrpc_upstream_retried",
                    "requests that failed here before their first chunk and were retried",
                    labels=["url"],
                ),
                lambda r: float(r.num_retried),
            ),
        ]
        for family, value in families:
            for replica in replicas:
                family.add_metric([replica.url], value(replica))  # type: ignore[attr-defined]
            yield family


def upstream_health(replicas: Sequence[ReplicaStats]) -> tuple[int, JSONObject]:
    """The HTTP status and body fields `/health` adds for an upstream engine: 200 while one
    replica is in service, else 503 (a load balancer in front then stops sending here)."""
    listed: list[JSONValue] = [
        {
            "url": replica.url,
            "healthy": replica.is_healthy,
            "outstanding": replica.num_outstanding,
            "last_error": replica.last_error,
        }
        for replica in replicas
    ]
    status = 200 if any(replica.is_healthy for replica in replicas) else 503
    return status, {"status": "ok" if status == 200 else "unavailable", "upstreams": listed}
