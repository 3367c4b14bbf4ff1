"""Retry policy (gateway.upstream.retry): rules, backoff, Retry-After, the retry budget."""

from __future__ import annotations

import random

import pytest

from gateway.config import RetryConfig
from gateway.upstream.retry import RetryBudget, RetryPolicy
from tests.support.clock import Clock

HTTP_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"  # RFC 9110's example
HTTP_DATE_TS = 784111777.0


class FixedRandom(random.Random):
    """random() always answers ``value``: uniform(a, b) is then a + (b - a) * value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def policy(attempts: int = 3, **overrides: object) -> RetryPolicy:
    config = RetryConfig(attempts=attempts)
    return RetryPolicy(config, clock=Clock(0.0), rng=random.Random(0), **overrides)  # type: ignore[arg-type]


# method, attempt, refused, failure, status, replayable -> retried (attempts=3)
RULES = [
    # idempotent methods on connect errors, timeouts and on_statuses
    ("GET", 1, False, "connect", None, True, True),
    ("GET", 1, False, "timeout", None, True, True),
    ("GET", 2, False, "timeout", None, True, True),
    ("GET", 3, False, "timeout", None, True, False),  # attempts=3: never a 4th try
    ("GET", 1, False, None, 502, True, True),
    ("GET", 1, False, None, 503, True, True),
    ("GET", 1, False, None, 504, True, True),
    ("GET", 1, False, None, 500, True, False),
    ("GET", 1, False, None, 429, True, False),
    ("GET", 1, False, None, 200, True, False),
    ("GET", 1, False, "reset", None, True, False),
    ("GET", 1, False, "protocol", None, True, False),
    ("GET", 1, False, None, None, True, False),
    ("get", 1, False, "connect", None, True, True),
    ("HEAD", 1, False, "timeout", None, True, True),
    ("OPTIONS", 1, False, None, 503, True, True),
    ("PUT", 1, False, None, 502, True, True),
    ("DELETE", 1, False, "connect", None, True, True),
    ("PUT", 1, False, None, 502, False, False),  # the body cannot be sent again
    ("GET", 1, False, "timeout", None, False, False),
    # a POST or PATCH that reached the upstream is never sent twice
    ("POST", 1, False, "connect", None, True, False),
    ("POST", 1, False, "timeout", None, True, False),
    ("POST", 1, False, None, 503, True, False),
    ("PATCH", 1, False, None, 502, True, False),
    ("CONNECT", 1, False, "connect", None, True, False),
    # refused: nothing was sent, so any method may be retried
    ("POST", 1, True, "connect", None, True, True),
    ("PATCH", 1, True, "connect", None, False, True),
    ("POST", 2, True, "connect", None, True, True),
    ("POST", 3, True, "connect", None, True, False),  # but never beyond attempts
]


@pytest.mark.parametrize(
    ("method", "attempt", "refused", "failure", "status", "replayable", "retried"), RULES
)
def test_retry_rules(
    method: str,
    attempt: int,
    refused: bool,
    failure: str | None,
    status: int | None,
    replayable: bool,
    retried: bool,
) -> None:
    decided = policy(3).should_retry(
        method=method, attempt=attempt, refused=refused, failure=failure, status=status, replayable=replayable
    )
    assert decided is retried


@pytest.mark.parametrize("refused", [False, True])
def test_one_attempt_means_no_retry(refused: bool) -> None:
    decided = policy(1).should_retry(
        method="GET", attempt=1, refused=refused, failure="connect", status=None, replayable=True
    )
    assert decided is False


def test_on_statuses_come_from_the_config() -> None:
    retry = RetryPolicy(RetryConfig(attempts=2, on_statuses=(500, 429)), clock=Clock(0.0), rng=random.Random(0))
    decide = {
        code: retry.should_retry(
            method="GET", attempt=1, refused=False, failure=None, status=code, replayable=True
        )
        for code in (429, 500, 502, 503)
    }
    assert decide == {429: True, 500: True, 502: False, 503: False}


# attempt -> exponential base for backoff 0.05 s, cap 1.0 s
BASES = [(1, 0.05), (2, 0.1), (3, 0.2), (4, 0.4), (5, 0.8), (6, 1.0), (10, 1.0)]


@pytest.mark.parametrize(("attempt", "base"), BASES)
@pytest.mark.parametrize(("draw", "share"), [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)])  # full jitter: uniform in [0, b]
def test_backoff_is_exponential_capped_and_jittered(attempt: int, base: float, draw: float, share: float) -> None:
    retry = RetryPolicy(RetryConfig(attempts=5), clock=Clock(0.0), rng=FixedRandom(draw))
    assert retry.backoff_seconds(attempt) == pytest.approx(base * share, rel=1e-12, abs=1e-15)


def test_backoff_with_a_seeded_rng() -> None:
    retry = RetryPolicy(RetryConfig(attempts=5), clock=Clock(0.0), rng=random.Random(1234))
    got = [retry.backoff_seconds(attempt) for attempt in (1, 2, 3, 4, 5, 6)]
    draws = random.Random(1234)
    assert got == [draws.uniform(0.0, base) for base in (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)]
    assert [round(value, 6) for value in got] == [0.048323, 0.044073, 0.001498, 0.36439, 0.751415, 0.582228]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("0", 0.0),
        ("3", 3.0),
        (" 7 ", 7.0),
        ("10", 10.0),
        ("120", 10.0),  # honoured up to max_backoff_seconds
        (HTTP_DATE, 5.0),  # the wall clock is 5 s before it
        ("Sun, 06 Nov 1994 08:49:33 GMT", 1.0),
        ("Sun, 06 Nov 1994 09:49:32 GMT", 10.0),
        ("Sun, 06 Nov 1994 08:40:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after_is_honoured_up_to_the_cap(retry_after: str, expected: float) -> None:
    retry = RetryPolicy(
        RetryConfig(attempts=3, backoff_seconds=0.05, max_backoff_seconds=10.0),
        clock=Clock(0.0),
        rng=FixedRandom(0.5),
        wall_clock=lambda: HTTP_DATE_TS - 5.0,
    )
    assert retry.backoff_seconds(1, retry_after) == expected


@pytest.mark.parametrize(
    "retry_after", ["", "soon", "-3", "1.5", "½", "Sun, 06 Nov 1994 08:49:37 -0000", "Mon, 99 Foo"]
)
def test_an_invalid_retry_after_falls_back_to_the_backoff(retry_after: str) -> None:
    retry = RetryPolicy(RetryConfig(attempts=3, backoff_seconds=0.05), clock=Clock(0.0), rng=FixedRandom(0.5))
    assert retry.backoff_seconds(2, retry_after) == 0.05


def outage(retry: RetryPolicy, clock: Clock, requests: int, step_seconds: float) -> int:
    """``requests`` first tries ``step_seconds`` apart from now, every try timing out: the retries granted."""
    retries = 0
    start = clock.now
    for i in range(requests):
        clock.now = round(start + i * step_seconds, 9)  # no float drift across windows
        retry.record_request()
        attempt = 1
        while retry.should_retry(
            method="GET", attempt=attempt, refused=False, failure="timeout", status=None, replayable=True
        ):
            retries += 1
            attempt += 1
    return retries


@pytest.mark.parametrize(("attempts", "retries"), [(2, 200), (3, 200), (5, 200)])
def test_budget_caps_retries_at_20_percent_during_an_outage_of_1000_requests(
    attempts: int, retries: int
) -> None:
    clock = Clock(0.0)
    retry = RetryPolicy(RetryConfig(attempts=attempts), clock=clock, rng=random.Random(0))
    assert outage(retry, clock, 1000, 0.01) == retries  # 100 requests/s for 10 s: one window
    assert (retry.budget.requests, retry.budget.retries) == (1000, 200)


def test_budget_holds_over_a_long_outage_in_every_window() -> None:
    clock = Clock(0.0)
    retry = RetryPolicy(RetryConfig(attempts=3), clock=clock, rng=random.Random(0))
    for window in range(6):  # 60 s at 100 requests/s
        clock.now = window * 10.0
        outage(retry, clock, 1000, 0.01)
        assert retry.budget.retries <= 0.2 * retry.budget.requests
    assert retry.budget.requests == 1000


def test_budget_floor_lets_a_quiet_upstream_retry() -> None:
    clock = Clock(0.0)
    retry = RetryPolicy(RetryConfig(attempts=3), clock=clock, rng=random.Random(0))
    assert outage(retry, clock, 5, 1.0) == 10  # 5 requests in 5 s: both retries each, under the floor


def test_budget_floor_is_30_retries_per_10_second_window() -> None:
    clock = Clock(0.0)
    budget = RetryBudget(0.2, clock=clock)
    assert [budget.try_spend() for _ in range(31)] == [True] * 30 + [False]
    clock.now = 9.99
    assert budget.try_spend() is False
    clock.now = 10.0  # the bucket of t=0 left the window
    assert [budget.try_spend() for _ in range(31)] == [True] * 30 + [False]


def test_refused_tries_spend_the_budget_too() -> None:
    clock = Clock(0.0)
    retry = RetryPolicy(
        RetryConfig(attempts=2), clock=clock, rng=random.Random(0), min_retries_per_second=0.1
    )
    decided = [
        retry.should_retry(
            method="POST", attempt=1, refused=True, failure="connect", status=None, replayable=False
        )
        for _ in range(2)
    ]
    assert decided == [True, False]  # floor: 0.1/s * 10 s = 1 retry


def test_a_retry_refused_by_the_rules_spends_no_token() -> None:
    clock = Clock(0.0)
    retry = RetryPolicy(RetryConfig(attempts=3), clock=clock, rng=random.Random(0))
    for _ in range(100):
        retry.should_retry(
            method="POST", attempt=1, refused=False, failure="timeout", status=None, replayable=True
        )
    assert retry.budget.retries == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": RetryConfig(attempts=0)}, "attempts must be at least 1"),
        ({"config": RetryConfig(budget_ratio=-0.1)}, "budget_ratio must not be negative"),
        ({"config": RetryConfig(), "window_seconds": 0}, "window_seconds must be positive"),
    ],
)
def test_bad_settings_are_refused_at_build_time(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
