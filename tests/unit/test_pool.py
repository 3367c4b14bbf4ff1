"""Upstream pool (gateway.upstream.pool): picking, excluding, breakers, readiness, snapshot."""

from __future__ import annotations

import random

import pytest

from gateway.config import CircuitBreakerConfig, Origin, RetryConfig, TargetConfig, UpstreamConfig
from gateway.errors import NoHealthyUpstream
from gateway.upstream.pool import UpstreamPool
from gateway.upstream.target import Target
from tests.support.clock import Clock


def make_pool(
    weights: list[int],
    *,
    balance: str = "round_robin",
    breaker: CircuitBreakerConfig | None = None,
    clock: Clock | None = None,
    changes: list[tuple[str, bool, str]] | None = None,
) -> UpstreamPool:
    targets = tuple(
        TargetConfig(
            url=f"http://127.0.0.1:{9001 + i}", origin=Origin("http", "127.0.0.1", 9001 + i), weight=w
        )
        for i, w in enumerate(weights)
    )
    config = UpstreamConfig(
        name="orders",
        targets=targets,
        balance=balance,
        circuit_breaker=breaker,
        retry=RetryConfig(attempts=3),
    )

    def record(target: Target) -> None:
        if changes is not None:
            changes.append((name(target), target.healthy, target.circuit))

    return UpstreamPool(config, clock=clock or Clock(), rng=random.Random(5), on_state_change=record)


def name(target: Target) -> str:
    return "abcdefgh"[target.origin.port - 9001]


def names(pool: UpstreamPool, n: int, exclude: tuple[Target, ...] = ()) -> str:
    return "".join(name(pool.pick(exclude)) for _ in range(n))


def test_targets_are_built_from_the_config() -> None:
    pool = make_pool([2, 1])
    a, b = pool.targets
    assert (pool.name, a.url, a.weight, a.origin, a.in_flight, a.healthy, a.breaker, a.circuit) == (
        "orders",
        "http://127.0.0.1:9001",
        2,
        Origin("http", "127.0.0.1", 9001),
        0,
        True,
        None,
        "closed",
    )
    assert (b.url, b.weight, b.config is pool.config.targets[1]) == ("http://127.0.0.1:9002", 1, True)
    assert pool.retry.config.attempts == 3


@pytest.mark.parametrize(
    ("weights", "expected"),
    [([5, 1, 1], "aabacaa" * 3), ([1, 1, 1], "abc" * 4), ([1, 2], "bab" * 4)],
)
def test_pick_round_robin_is_smooth(weights: list[int], expected: str) -> None:
    assert names(make_pool(weights), len(expected)) == expected


@pytest.mark.parametrize(
    ("weights", "excluded", "allowed"),
    [
        ([1, 1, 1], "a", "bc"),
        ([1, 1, 1], "ab", "c"),
        ([5, 1, 1], "a", "bc"),
        ([1, 1], "b", "a"),
        ([1, 1], "ab", "ab"),  # every target tried: an excluded one is reused
    ],
)
@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random"])
def test_pick_skips_targets_already_tried(
    weights: list[int], excluded: str, allowed: str, balance: str
) -> None:
    pool = make_pool(weights, balance=balance)
    exclude = tuple(t for t in pool.targets if name(t) in excluded)
    assert set(names(pool, 60, exclude)) == set(allowed)


def test_pick_reuses_a_tried_target_when_the_others_are_down() -> None:
    pool = make_pool([1, 1, 1])
    a, b, c = pool.targets
    b.healthy = c.healthy = False
    assert names(pool, 5, exclude=(a,)) == "aaaaa"


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "random"])
def test_unhealthy_targets_are_not_picked(balance: str) -> None:
    pool = make_pool([1, 1, 1], balance=balance)
    pool.targets[1].healthy = False
    assert set(names(pool, 60)) == {"a", "c"}


@pytest.mark.parametrize("exclude", [(), "all"])
def test_all_targets_down_is_no_healthy_upstream_at_once(exclude: object) -> None:
    pool = make_pool([1, 1])
    for target in pool.targets:
        target.healthy = False
    with pytest.raises(NoHealthyUpstream) as caught:
        pool.pick(pool.targets if exclude == "all" else ())
    assert (caught.value.status, caught.value.code, caught.value.message, caught.value.log_message) == (
        503,
        "no_healthy_upstream",
        "no healthy upstream target",  # the upstream's name is for the log only
        "upstream 'orders' has no healthy target",
    )
    assert pool.ready() is False


def test_least_conn_pool_follows_begin_and_end() -> None:
    pool = make_pool([1, 1, 1], balance="least_conn")
    a, b, c = pool.targets
    pool.begin(a)
    pool.begin(a)
    pool.begin(b)
    assert names(pool, 5) == "ccccc"
    pool.end(a, ok=True)
    pool.end(a, ok=True)
    assert (a.in_flight, b.in_flight, c.in_flight) == (0, 1, 0)
    assert set(names(pool, 40)) == {"a", "c"}


def test_end_never_takes_in_flight_below_zero() -> None:
    pool = make_pool([1])
    pool.end(pool.targets[0], ok=True)
    assert pool.targets[0].in_flight == 0


def test_breaker_opens_at_threshold_and_the_pool_routes_around_it() -> None:
    clock = Clock()
    changes: list[tuple[str, bool, str]] = []
    pool = make_pool(
        [1, 1],
        breaker=CircuitBreakerConfig(failure_threshold=3, open_seconds=30),
        clock=clock,
        changes=changes,
    )
    a, b = pool.targets
    for _ in range(2):
        pool.begin(a)
        pool.end(a, ok=False)
    assert (a.circuit, names(pool, 4)) == ("closed", "abab")
    pool.begin(a)
    pool.end(a, ok=False)
    assert (a.circuit, a.available(), names(pool, 4)) == ("open", False, "bbbb")
    assert changes == [("a", True, "open")]
    assert pool.ready() is True
    for _ in range(3):
        pool.end(b, ok=False)
    assert (b.circuit, pool.ready()) == ("open", False)
    with pytest.raises(NoHealthyUpstream):
        pool.pick()


def test_half_open_target_gets_exactly_one_probe_through_pick() -> None:
    clock = Clock()
    changes: list[tuple[str, bool, str]] = []
    pool = make_pool(
        [1], breaker=CircuitBreakerConfig(failure_threshold=1, open_seconds=30), clock=clock, changes=changes
    )
    (a,) = pool.targets
    pool.end(a, ok=False)
    clock.now += 29.5
    with pytest.raises(NoHealthyUpstream):
        pool.pick()
    clock.now += 0.5
    assert (a.circuit, pool.ready()) == ("half_open", True)
    probe = pool.pick()  # takes the probe slot
    assert probe is a
    with pytest.raises(NoHealthyUpstream):
        pool.pick()
    pool.begin(a)
    pool.end(a, ok=True)
    assert (a.circuit, names(pool, 3)) == ("closed", "aaa")
    assert changes == [("a", True, "open"), ("a", True, "half_open"), ("a", True, "closed")]


def test_half_open_probe_failure_reopens() -> None:
    clock = Clock()
    pool = make_pool([1, 1], breaker=CircuitBreakerConfig(failure_threshold=1, open_seconds=10), clock=clock)
    a, b = pool.targets
    pool.end(a, ok=False)
    clock.now += 10
    picked = names(pool, 6)
    assert picked.count("a") == 1  # one probe, then only b while it is out
    pool.end(a, ok=False)
    assert (a.circuit, names(pool, 3)) == ("open", "bbb")


def test_unhealthy_target_with_closed_circuit_is_not_ready() -> None:
    pool = make_pool([1, 1])
    a, b = pool.targets
    a.healthy = False
    assert pool.ready() is True
    b.healthy = False
    assert pool.ready() is False


def test_snapshot_for_the_admin_api() -> None:
    clock = Clock()
    pool = make_pool([2, 1], breaker=CircuitBreakerConfig(failure_threshold=1, open_seconds=5), clock=clock)
    a, b = pool.targets
    pool.begin(a)
    pool.begin(a)
    pool.begin(b)
    pool.end(b, ok=False)
    b.healthy = False
    assert pool.snapshot() == [
        {"url": "http://127.0.0.1:9001", "weight": 2, "healthy": True, "circuit": "closed", "in_flight": 2},
        {"url": "http://127.0.0.1:9002", "weight": 1, "healthy": False, "circuit": "open", "in_flight": 0},
    ]
    clock.now += 5
    assert pool.snapshot()[1]["circuit"] == "half_open"


def test_unknown_balance_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="unknown balance algorithm 'fastest'"):
        make_pool([1], balance="fastest")


def test_no_targets_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="upstream 'empty' has no targets"):
        UpstreamPool(UpstreamConfig(name="empty", targets=()))


async def test_start_and_stop_without_health_checks_are_no_ops() -> None:
    pool = make_pool([1])
    await pool.start()
    await pool.stop()
    assert pool.targets[0].healthy is True
