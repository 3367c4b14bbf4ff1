"""gateway.stats: histogram_quantile as Prometheus computes it, and the per-route summary of real metrics."""

from __future__ import annotations

import math

import pytest

from gateway.metrics import LATENCY_BUCKETS, Metrics
from gateway.stats import histogram_quantile, summary

INF = math.inf


@pytest.mark.parametrize("q, buckets, expected", [
    (0.5, [], None),
    (0.5, [(0.1, 0), (INF, 0)], None),
    # all in the first bucket: interpolated from 0
    (0.5, [(0.1, 10), (1.0, 10), (INF, 10)], 0.05),
    (0.99, [(0.1, 10), (1.0, 10), (INF, 10)], 0.099),
    # the rank falls in the second bucket
    (0.5, [(0.1, 4), (1.0, 8), (INF, 8)], 0.1),
    (0.75, [(0.1, 4), (1.0, 8), (INF, 8)], 0.55),
    # an empty bucket before the rank's is skipped
    (0.5, [(0.1, 0), (0.2, 0), (0.4, 10), (INF, 10)], 0.30000000000000004),
    # in +Inf: the largest finite bound
    (0.99, [(0.1, 1), (1.0, 1), (INF, 10)], 1.0),
    (0.0, [(0.1, 3), (INF, 3)], 0.0),
    (1.0, [(0.1, 3), (1.0, 4), (INF, 4)], 1.0),
])
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], expected: float | None) -> None:
    assert histogram_quantile(q, buckets) == expected


def test_summary_of_real_metrics() -> None:
    metrics = Metrics(multiprocess_dir="")
    for status, seconds in ((200, 0.003), (200, 0.004), (201, 0.02), (404, 0.001), (502, 2.0)):
        metrics.request_done("orders", "GET", status, seconds)
    metrics.request_done("", "BREW", 404, 0.0005)
    metrics.set_in_flight(3)
    out = summary(metrics.families(), ["orders", "users"])
    assert out["in_flight"] == 3
    assert set(out["routes"]) == {"orders", "users", ""}
    orders = out["routes"]["orders"]
    assert (orders["requests"], orders["errors_4xx"], orders["errors_5xx"]) == (5, 1, 1)
    assert orders["statuses"] == {"200": 2, "201": 1, "404": 1, "502": 1}
    assert orders["duration_sum_seconds"] == pytest.approx(2.028)
    bounds = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
    assert [b for b, _ in orders["buckets"]] == bounds
    counts = dict(orders["buckets"])
    assert (counts["0.001"], counts["0.005"], counts["0.025"], counts["2.5"], counts["+Inf"]) == (1, 3, 4, 5, 5)
    assert orders["p50_seconds"] == pytest.approx(0.0025 + 0.0025 * (2.5 - 1) / 2)
    assert orders["p99_seconds"] == pytest.approx(1.0 + 1.5 * (4.95 - 4))
    assert out["routes"]["users"]["requests"] == 0 and out["routes"]["users"]["p50_seconds"] is None
    assert out["routes"][""]["statuses"] == {"404": 1}
