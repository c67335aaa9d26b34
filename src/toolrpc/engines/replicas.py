"""Which upstream replica serves the next request: least outstanding requests, with conversation
affinity, over the replicas that are healthy.

The policy is the one the production routers in front of vLLM and SGLang converged on, cut to
what toolrpc can know without a tokenizer or a view into the replicas' caches:

- load is the number of requests in flight on a replica (vLLM production-stack's "load aware"
  routing scores instances by in-flight requests; SGLang's router falls back to the shortest
  queue), ties broken by the fewest requests served, so idle replicas take turns;
- a conversation goes back to the replica that served its previous turn, whose prefix cache
  holds it, unless that replica is down, full, or more than `affinity_slack` requests busier
  than the least busy one (SGLang's cache-aware policy switches to the shortest queue past its
  `balance_abs_threshold`; its default is 32 in-flight requests, ours is smaller because a
  toolrpc deployment has a handful of replicas, not a fleet);
- the affinity table is bounded (least recently used goes first), so it cannot grow with the
  number of conversations ever seen.

A replica is taken out when a request to it fails at the transport level or with a 5xx
(passive check) or when its health probe fails (active check); a timeout counts only once the
replica has been silent (no probe answered, no chunk sent to anyone) for a whole silence limit,
since a busy server is slow, not dead. Only a passing probe takes it back. This module holds
state and decides; it does no I/O (engines/upstream.py does).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

DEFAULT_AFFINITY_SLACK = 4
"""How many more in-flight requests than the least busy replica a conversation's own replica
may have before the conversation moves (see the module docstring)."""

AFFINITY_CAPACITY = 16_384
"""Conversations remembered; at ~100 bytes a key this bounds the table near 2 MB."""


@dataclass(frozen=True)
class ReplicaStats:
    """One replica's state and counters, read by `/health` and `/metrics`."""

    url: str
    is_healthy: bool
    num_outstanding: int
    num_requests: int
    num_failures: int
    num_retried: int
    last_error: str = ""


class Replica:
    """One upstream server: its base URL (ending in `/v1`) and its live counters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_healthy = True
        self.num_outstanding = 0
        self.num_requests = 0
        self.num_failures = 0
        self.num_retried = 0
        self.last_error = ""
        self.last_alive = time.monotonic()
        """When the replica last answered anything (a probe, response headers, a chunk): a
        timeout takes it out only after a whole silence limit without it (engines/upstream.py)."""

    def answered(self) -> None:
        """Record a sign of life."""
        self.last_alive = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since the replica last answered anything."""
        return time.monotonic() - self.last_alive

    def stats(self) -> ReplicaStats:
        """A snapshot of this replica's state."""
        return ReplicaStats(
            url=self.url,
            is_healthy=self.is_healthy,
            num_outstanding=self.num_outstanding,
            num_requests=self.num_requests,
            num_failures=self.num_failures,
            num_retried=self.num_retried,
            last_error=self.last_error,
        )


class ReplicaSet:
    """The replicas, their health, and the affinity table (module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_outstanding: int,
        affinity_slack: int = DEFAULT_AFFINITY_SLACK,
    ) -> None:
        self.replicas = tuple(Replica(url) for url in urls)
        self.max_outstanding = max_outstanding
        self.affinity_slack = affinity_slack
        self._affinity: OrderedDict[str, Replica] = OrderedDict()

    @property
    def any_healthy(self) -> bool:
        """True while at least one replica is in service."""
        return any(replica.is_healthy for replica in self.replicas)

    def choose(self, affinity_key: str | None, exclude: Collection[Replica] = ()) -> Replica | None:
        """The replica for the next request, or None when every replica not in `exclude` is
        down or at `max_outstanding`."""
        candidates = [
            replica
            for replica in self.replicas
            if replica.is_healthy
            and replica not in exclude
            and replica.num_outstanding < self.max_outstanding
        ]
        if not candidates:
            return None
        least = min(candidates, key=lambda r: (r.num_outstanding, r.num_requests))
        remembered = self._affinity.get(affinity_key) if affinity_key is not None else None
        if (
            remembered in candidates
            and remembered.num_outstanding <= least.num_outstanding + self.affinity_slack
        ):
            return remembered
        return least

    def remember(self, affinity_key: str | None, replica: Replica) -> None:
        """Record that `replica` served the conversation `affinity_key` (bounded, LRU)."""
        if affinity_key is None:
            return
        self._affinity[affinity_key] = replica
        self._affinity.move_to_end(affinity_key)
        while len(self._affinity) > AFFINITY_CAPACITY:
            self._affinity.popitem(last=False)

    def take_out(self, replica: Replica, reason: str) -> None:
        """Take `replica` out of service until a health probe passes."""
        replica.is_healthy = False
        replica.num_failures += 1
        replica.last_error = reason

    def take_back(self, replica: Replica) -> None:
        """Put `replica` back in service (its probe passed)."""
        replica.is_healthy = True
