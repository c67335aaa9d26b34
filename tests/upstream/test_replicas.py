"""Choosing a replica: least outstanding requests, conversation affinity, health."""

from __future__ import annotations

from toolrpc.engines.replicas import AFFINITY_CAPACITY, ReplicaSet


def replicas(count: int = 2, *, max_outstanding: int = 8, slack: int = 2) -> ReplicaSet:
    urls = [f"http://r{i}/v1" for i in range(count)]
    return ReplicaSet(urls, max_outstanding=max_outstanding, affinity_slack=slack)


def test_the_replica_with_fewest_requests_in_flight_is_chosen() -> None:
    pool = replicas(3)
    first, second, third = pool.replicas
    first.num_outstanding, second.num_outstanding, third.num_outstanding = 3, 1, 2

    assert pool.choose(None) is second


def test_idle_replicas_take_turns_by_requests_served() -> None:
    pool = replicas(2)
    chosen = []
    for _ in range(4):
        replica = pool.choose(None)
        assert replica is not None
        replica.num_requests += 1
        chosen.append(replica.url)

    assert chosen == ["http://r0/v1", "http://r1/v1", "http://r0/v1", "http://r1/v1"]


def test_a_conversation_goes_back_to_its_replica_while_it_is_not_much_busier() -> None:
    pool = replicas(2, slack=2)
    first, second = pool.replicas
    pool.remember("conversation", second)
    second.num_outstanding = 2

    assert pool.choose("conversation") is second

    second.num_outstanding = 3
    assert pool.choose("conversation") is first


def test_a_conversation_moves_when_its_replica_is_out_or_excluded() -> None:
    pool = replicas(2)
    first, second = pool.replicas
    pool.remember("conversation", second)

    assert pool.choose("conversation", exclude=[second]) is first
    pool.take_out(second, "connection refused")
    assert pool.choose("conversation") is first
    pool.take_back(second)
    assert pool.choose("conversation") is second


def test_no_replica_is_chosen_when_all_are_out_or_full() -> None:
    pool = replicas(2, max_outstanding=1)
    first, second = pool.replicas
    pool.take_out(first, "timeout")
    second.num_outstanding = 1

    assert pool.choose(None) is None
    assert not pool.replicas[0].is_healthy
    assert pool.replicas[0].stats().last_error == "timeout"
    assert pool.replicas[0].stats().num_failures == 1


def test_the_affinity_table_forgets_the_least_recently_used_conversation_first() -> None:
    pool = replicas(2)
    first, second = pool.replicas
    pool.remember("oldest", second)
    for index in range(AFFINITY_CAPACITY):
        pool.remember(f"conversation-{index}", second)

    assert pool.choose("oldest") is first
    assert pool.choose(f"conversation-{AFFINITY_CAPACITY - 1}") is second
