"""Circuit breaker (gateway.upstream.breaker): opening, half-opening with one probe, closing."""

from __future__ import annotations

import pytest

from gateway.config import CircuitBreakerConfig
from gateway.upstream.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tests.support.clock import Clock


def breaker(threshold: int = 3, open_seconds: float = 30.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock = Clock()
    changes: list[str] = []
    config = CircuitBreakerConfig(failure_threshold=threshold, open_seconds=open_seconds)
    return CircuitBreaker(config, clock, on_change=changes.append), clock, changes


@pytest.mark.parametrize("threshold", [1, 2, 3, 5, 10])
def test_opens_after_exactly_threshold_consecutive_failures(threshold: int) -> None:
    cb, _, changes = breaker(threshold)
    for _ in range(threshold - 1):
        cb.record_failure()
        assert (cb.state, cb.allow()) == (CLOSED, True)
    assert cb.consecutive_failures == threshold - 1
    cb.record_failure()
    assert (cb.state, cb.allow(), cb.would_allow()) == (OPEN, False, False)
    assert changes == [OPEN]


@pytest.mark.parametrize(
    ("events", "state"),
    [
        ("fff", OPEN),
        ("ffsff", CLOSED),  # a success resets the count: failures must be consecutive
        ("ffsfff", OPEN),
        ("sfsfsfsf", CLOSED),
        ("fffs", OPEN),  # a late success while open is ignored
        ("ffnf", OPEN),  # no verdict (the client's fault) does not reset the count
        ("ffnnn", CLOSED),  # ... nor add to it
    ],
)
def test_only_consecutive_failures_count(events: str, state: str) -> None:
    cb, _, _ = breaker(threshold=3)
    record = {"s": cb.record_success, "f": cb.record_failure, "n": cb.record_no_verdict}
    for event in events:
        record[event]()
    assert cb.state == state


def test_a_probe_without_a_verdict_gives_its_slot_back_and_stays_half_open() -> None:
    cb, clock, changes = breaker(threshold=1, open_seconds=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow() is True
    assert cb.allow() is False  # the one probe slot is taken
    cb.record_no_verdict()  # the probe's client went away: nothing learnt about the target
    assert (cb.state, cb.would_allow()) == (HALF_OPEN, True)
    assert [cb.allow() for _ in range(3)] == [True, False, False]  # a new probe at once, still only one
    cb.record_success()
    assert cb.state == CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]


@pytest.mark.parametrize(("open_seconds", "early"), [(30.0, 29.999), (5.0, 4.5), (0.5, 0.499)])
def test_half_opens_after_open_seconds_with_exactly_one_probe(open_seconds: float, early: float) -> None:
    cb, clock, changes = breaker(threshold=1, open_seconds=open_seconds)
    cb.record_failure()
    clock.advance(early)
    assert (cb.state, cb.would_allow(), cb.allow()) == (OPEN, False, False)
    clock.advance(open_seconds - early)
    assert (cb.state, cb.would_allow()) == (HALF_OPEN, True)
    assert [cb.allow() for _ in range(5)] == [True, False, False, False, False]
    assert (cb.state, cb.would_allow()) == (HALF_OPEN, False)
    assert changes == [OPEN, HALF_OPEN]


def test_probe_success_closes() -> None:
    cb, clock, changes = breaker(threshold=2, open_seconds=10)
    cb.record_failure()
    cb.record_failure()
    clock.advance(10)
    assert cb.allow() is True
    cb.record_success()
    assert (cb.state, cb.consecutive_failures) == (CLOSED, 0)
    assert [cb.allow() for _ in range(3)] == [True, True, True]
    assert changes == [OPEN, HALF_OPEN, CLOSED]
    cb.record_failure()  # the count starts again from zero
    assert cb.state == CLOSED


def test_probe_failure_reopens_for_another_open_seconds() -> None:
    cb, clock, changes = breaker(threshold=2, open_seconds=10)
    cb.record_failure()
    cb.record_failure()
    clock.advance(12)
    assert cb.allow() is True
    clock.advance(1)  # the probe took a second to fail
    cb.record_failure()
    assert (cb.state, cb.allow()) == (OPEN, False)
    clock.advance(9.999)
    assert (cb.state, cb.allow()) == (OPEN, False)
    clock.advance(0.001)
    assert [cb.allow() for _ in range(3)] == [True, False, False]
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_a_lost_probe_is_replaced_after_open_seconds() -> None:
    cb, clock, changes = breaker(threshold=1, open_seconds=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow() is True  # this probe's result never comes back
    clock.advance(9.5)
    assert (cb.state, cb.allow()) == (HALF_OPEN, False)
    clock.advance(0.5)
    assert [cb.allow() for _ in range(3)] == [True, False, False]
    cb.record_success()
    assert cb.state == CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_results_while_open_are_ignored() -> None:
    cb, clock, changes = breaker(threshold=1, open_seconds=10)
    cb.record_failure()
    clock.advance(5)
    cb.record_failure()  # admitted before it opened: does not extend the open period
    cb.record_success()  # nor close it
    clock.advance(5)
    assert (cb.state, cb.allow()) == (HALF_OPEN, True)
    assert changes == [OPEN, HALF_OPEN]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CircuitBreakerConfig(failure_threshold=0), "failure_threshold must be at least 1"),
        (CircuitBreakerConfig(open_seconds=-1), "open_seconds must not be negative"),
    ],
)
def test_bad_config_is_refused_at_build_time(config: CircuitBreakerConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(config)
