"""Metrics of one process: the SPEC §5 families, cached label children, and the holder's hooks."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.accesslog import AccessLog
from gateway.context import RequestContext
from gateway.loader import parse_config
from gateway.metrics import Metrics
from gateway.runtime import Runtime, RuntimeHolder

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples
    }


def test_the_spec_metric_families_are_exposed() -> None:
    names = {family.name for family in text_string_to_metric_families(Metrics().exposition().decode())}
    assert names == {
        "gateway_requests", "gateway_request_duration_seconds", "gateway_upstream_duration_seconds",
        "gateway_in_flight_requests", "gateway_target_healthy", "gateway_circuit_open", "gateway_retries",
        "gateway_rate_limited", "gateway_jwks_refresh", "gateway_rate_limit_fail_open", "gateway_plugin_duration_seconds",
        "gateway_websocket_connections", "gateway_websocket_messages",
        "gateway_cache",
    }


def test_requests_are_counted_by_route_method_and_status() -> None:
    metrics = Metrics()
    for route, method, status, seconds in [("orders", "GET", 200, 0.004), ("orders", "GET", 200, 0.2),
                                           ("orders", "POST", 502, 0.03), ("", "BREW", 405, 0.001)]:
        metrics.request_done(route, method, status, seconds)
    m = samples(metrics)
    assert m[("gateway_requests_total", (("method", "GET"), ("route", "orders"), ("status", "200")))] == 2
    assert m[("gateway_requests_total", (("method", "POST"), ("route", "orders"), ("status", "502")))] == 1
    assert m[("gateway_requests_total", (("method", "OTHER"), ("route", ""), ("status", "405")))] == 1
    assert m[("gateway_request_duration_seconds_count", (("route", "orders"),))] == 3
    assert m[("gateway_request_duration_seconds_bucket", (("le", "0.005"), ("route", "orders")))] == 1
    assert m[("gateway_request_duration_seconds_sum", (("route", "orders"),))] == pytest.approx(0.234)


def test_label_children_are_resolved_once() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.request_done("orders", "GET", 200, 0.01)
        metrics.upstream_try("orders", "http://a:1", 0.01)
        metrics.retry("orders")
    assert (len(metrics._requests), len(metrics._durations), len(metrics._upstreams), len(metrics._retries)) == (
        1, 1, 1, 1)
    m = samples(metrics)
    assert m[("gateway_upstream_duration_seconds_count", (("target", "http://a:1"), ("upstream", "orders")))] == 3
    assert m[("gateway_retries_total", (("upstream", "orders"),))] == 3


def test_state_gauges_and_counters() -> None:
    metrics = Metrics()
    metrics.target_state("orders", "http://a:1", healthy=True, circuit_open=False)
    metrics.target_state("orders", "http://b:1", healthy=False, circuit_open=True)
    metrics.rate_limit_refused("orders")
    metrics.jwks_refreshed("success")
    metrics.jwks_refreshed("failure")
    metrics.jwks_refreshed("success")
    metrics.set_in_flight(3)
    m = samples(metrics)
    assert m[("gateway_target_healthy", (("target", "http://a:1"), ("upstream", "orders")))] == 1
    assert m[("gateway_target_healthy", (("target", "http://b:1"), ("upstream", "orders")))] == 0
    assert m[("gateway_circuit_open", (("target", "http://b:1"), ("upstream", "orders")))] == 1
    assert m[("gateway_rate_limited_total", (("route", "orders"),))] == 1
    assert m[("gateway_jwks_refresh_total", (("result", "success"),))] == 2
    assert m[("gateway_jwks_refresh_total", (("result", "failure"),))] == 1
    assert m[("gateway_in_flight_requests", ())] == 3
    metrics.forget_target("orders", "http://b:1")
    metrics.forget_target("orders", "http://never:1")
    assert ("gateway_target_healthy", (("target", "http://b:1"), ("upstream", "orders"))) not in samples(metrics)


def test_multiprocess_mode_needs_the_variable_before_the_import(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="imported before PROMETHEUS_MULTIPROC_DIR was set"):
        Metrics()


def test_the_holder_counts_each_finished_request_and_logs_it() -> None:
    config = parse_config("upstreams: {u: {targets: [http://127.0.0.1:9]}}\nroutes: [{name: api, path: /api, upstream: u}]\n",
                          environ={})
    out = io.StringIO()
    holder = RuntimeHolder(Runtime(config), access_log=AccessLog(out))
    holder.in_flight += 1
    assert samples(holder.metrics)[("gateway_in_flight_requests", ())] == 1
    holder.in_flight -= 1
    not_found = RequestContext("r-1", "127.0.0.1")
    not_found.bytes_out = 80
    holder.log_request(not_found, "GET", "/api/x", 404, 0.015, "")
    holder.log_request(RequestContext("r-2", "127.0.0.1"), "GET", "/-/health", 200, 0.015, "/-/health")
    m = samples(holder.metrics)
    assert m[("gateway_in_flight_requests", ())] == 0
    assert m[("gateway_requests_total", (("method", "GET"), ("route", ""), ("status", "404")))] == 1
    assert m[("gateway_requests_total", (("method", "GET"), ("route", "/-/health"), ("status", "200")))] == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["route"], e["status"], e["bytes_out"], e["duration_ms"]) for e in lines] == [
        (None, 404, 80, 15.0), ("/-/health", 200, 0, 15.0)]


def test_client_chosen_methods_share_one_cached_child() -> None:
    metrics = Metrics()
    for i in range(50):
        metrics.request_done("", f"BREW{i}", 405, 0.001)
    assert len(metrics._requests) == 1
    assert samples(metrics)[("gateway_requests_total", (("method", "OTHER"), ("route", ""), ("status", "405")))] == 50


def test_cache_results_are_counted_by_route_and_result() -> None:
    metrics = Metrics()
    for route, result in [("pages", "hit"), ("pages", "hit"), ("pages", "miss"), ("feed", "unavailable")]:
        metrics.cache_result(route, result)
    m = samples(metrics)
    assert m[("gateway_cache_total", (("result", "hit"), ("route", "pages")))] == 2
    assert m[("gateway_cache_total", (("result", "miss"), ("route", "pages")))] == 1
    assert m[("gateway_cache_total", (("result", "unavailable"), ("route", "feed")))] == 1
    assert ("gateway_cache_total", (("result", "bypass"), ("route", "pages"))) not in m
