"""Per-route request statistics for the admin API's ``/-/stats`` and the dashboard.

Read from the gateway's own Prometheus families (the same values ``/-/metrics``
shows, merged over every worker when ``server.processes`` > 1), so the dashboard
and a Prometheus scrape never disagree. Nothing is kept beyond the metrics: the
dashboard computes rates over its own window from two successive answers.

Quantiles are estimated from the histogram buckets the way Prometheus'
``histogram_quantile()`` does: linear interpolation inside the bucket holding
the rank, 0 as the first bucket's lower bound, and the largest finite bound when
the rank falls in ``+Inf``. They are cumulative since the process started.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["histogram_quantile", "summary"]

REQUESTS = "gateway_requests"  # prometheus_client names a counter family without its _total
DURATION = "gateway_request_duration_seconds"
IN_FLIGHT = "gateway_in_flight_requests"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of cumulative ``(upper_bound, count)`` buckets, ``+Inf`` last.

    None when there are no observations (Prometheus answers NaN).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound  # Prometheus: the highest finite bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        if not math.isinf(bound):
            lower_bound = bound
        lower_count = count
    return lower_bound


def summary(families: Iterable[Any], routes: Iterable[str] = ()) -> dict[str, Any]:
    """``{"in_flight": n, "routes": {name: {...}}}``: per route, requests, answers by status,
    4xx/5xx counts, the duration's sum and cumulative buckets, p50 and p99 (seconds, None
    before the first request).

    ``families`` are ``prometheus_client`` metric families (``registry.collect()``);
    ``routes`` are names to list even before their first request. Requests that matched no
    route are listed under the label the metrics give them.
    """
    out: dict[str, dict[str, Any]] = {name: _empty() for name in routes}
    buckets: dict[str, dict[float, float]] = {}
    in_flight = 0
    for family in families:
        if family.name == IN_FLIGHT:
            in_flight = int(sum(sample.value for sample in family.samples))
        if family.name in (REQUESTS, REQUESTS + "_total"):
            for sample in family.samples:
                if sample.name != REQUESTS + "_total":
                    continue
                route, status = sample.labels["route"], sample.labels["status"]
                entry = out.setdefault(route, _empty())
                count = int(sample.value)
                entry["requests"] += count
                entry["statuses"][status] = entry["statuses"].get(status, 0) + count
                if status.startswith("5"):
                    entry["errors_5xx"] += count
                elif status.startswith("4"):
                    entry["errors_4xx"] += count
        elif family.name == DURATION:
            for sample in family.samples:
                route = sample.labels["route"]
                entry = out.setdefault(route, _empty())
                if sample.name == DURATION + "_bucket":
                    bound = float(sample.labels["le"])
                    per_route = buckets.setdefault(route, {})
                    per_route[bound] = per_route.get(bound, 0.0) + sample.value
                elif sample.name == DURATION + "_sum":
                    entry["duration_sum_seconds"] += sample.value
    for route, by_bound in buckets.items():
        ordered = sorted(by_bound.items())
        entry = out[route]
        entry["buckets"] = [[_bound_text(b), int(c)] for b, c in ordered]
        entry["p50_seconds"] = histogram_quantile(0.5, ordered)
        entry["p99_seconds"] = histogram_quantile(0.99, ordered)
    return {"in_flight": in_flight, "routes": out}


def _empty() -> dict[str, Any]:
    return {"requests": 0, "statuses": {}, "errors_4xx": 0, "errors_5xx": 0, "duration_sum_seconds": 0.0,
            "buckets": [], "p50_seconds": None, "p99_seconds": None}


def _bound_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)
