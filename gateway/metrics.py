"""Prometheus metrics of one gateway process (SPEC §5), exposed on the admin listener.

:class:`Metrics` owns the metric families and hands the request path one call
per event. Label children are resolved once per route/method/status or
upstream/target and cached, so a request costs a dict lookup and an
``inc``/``observe`` per metric, never a label resolution.

With ``server.processes`` > 1 every worker writes its values to memory-mapped
files under ``PROMETHEUS_MULTIPROC_DIR`` and :meth:`Metrics.exposition` merges
all of them (prometheus_client's multi-process collector), so any worker answers
a scrape for the whole gateway. ``prometheus_client`` chooses its value store
when it is first imported: the supervisor sets the variable before this module
is imported (see :mod:`gateway.process`). Gauges then aggregate over live
workers: in flight is summed, a target is healthy only when every worker sees
it healthy (``livemin``) and its circuit counts as open when any worker's is
(``livemax``).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .tables import MULTIPROC_ENV, PROXIED_METHODS

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds; from a fast cache hit to the longest upstream timeouts people configure.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds a plugin's on_request/on_response takes: from a header stamp (µs) to a call it waits on.
PLUGIN_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5)
# Methods the gateway serves; anything else is counted as OTHER so a client cannot mint label values.
KNOWN_METHODS = frozenset(PROXIED_METHODS)


class Metrics:
    """The metric families of SPEC §5 in a registry of their own (one per process).

    ``multiprocess_dir`` defaults to ``$PROMETHEUS_MULTIPROC_DIR``; when set,
    scrapes merge the files of every worker.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        disable_created_metrics()  # *_created series double the page and serve no dashboard
        self.multiprocess_dir = multiprocess_dir if multiprocess_dir is not None else os.environ.get(MULTIPROC_ENV)
        if self.multiprocess_dir and values.ValueClass is values.MutexValue:
            raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests_total", "Requests answered, by route, method and status.",
            ("route", "method", "status"), registry=registry)
        self.request_duration = Histogram(
            "gateway_request_duration_seconds", "Time from request headers read to the answer's last byte, by route.",
            ("route",), buckets=LATENCY_BUCKETS, registry=registry)
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Duration of each try at an upstream target, answer relayed.",
            ("upstream", "target"), buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge(
            "gateway_in_flight_requests", "Requests being handled now.",
            registry=registry, multiprocess_mode="livesum")
        self.target_healthy = Gauge(
            "gateway_target_healthy", "1 when the target passes its health checks.",
            ("upstream", "target"), registry=registry, multiprocess_mode="livemin")
        self.circuit_open = Gauge(
            "gateway_circuit_open", "1 when the target's circuit breaker is open.",
            ("upstream", "target"), registry=registry, multiprocess_mode="livemax")
        self.retries = Counter(
            "gateway_retries_total", "Tries repeated after a failure or a retryable status.",
            ("upstream",), registry=registry)
        self.rate_limited = Counter(
            "gateway_rate_limited_total", "Requests refused with 429 by a route's rate limit.",
            ("route",), registry=registry)
        self.rate_limit_fail_open = Counter(
            "gateway_rate_limit_fail_open_total",
            "Requests let through unchecked because the rate-limit store was unreachable (rate_limit_fail_open).",
            registry=registry)
        self.jwks_refresh = Counter(
            "gateway_jwks_refresh_total", "JWKS fetches, by result (success | failure).",
            ("result",), registry=registry)
        self.plugin_duration = Histogram(
            "gateway_plugin_duration_seconds", "Time spent in a plugin's on_request and on_response, by plugin.",
            ("plugin",), buckets=PLUGIN_BUCKETS, registry=registry)
        self.websocket_connections = Gauge(
            "gateway_websocket_connections", "WebSockets open now (relayed after the upstream's 101), by route.",
            ("route",), registry=registry, multiprocess_mode="livesum")
        self.websocket_messages = Counter(
            "gateway_websocket_messages_total", "WebSocket messages relayed, by route and direction "
            "(to_upstream | to_client).", ("route", "direction"), registry=registry)
        self.cache = Counter(
            "gateway_cache_total", "Requests on cache routes, by route and result (hit | miss | bypass | unavailable).",
            ("route", "result"), registry=registry)
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._plugins: dict[str, Any] = {}
        self._durations: dict[str, Any] = {}
        self._upstreams: dict[tuple[str, str], Any] = {}
        self._retries: dict[str, Any] = {}
        self._cache: dict[tuple[str, str], Any] = {}
        self._in_flight_set = self.in_flight.set

    # --- the request path ---

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (called once, from the access-log hook)."""
        label = method if method in KNOWN_METHODS else "OTHER"  # the key too: client-chosen methods must not grow it
        key = (route, label, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, label, str(status))
        child.inc()
        duration = self._durations.get(route)
        if duration is None:
            duration = self._durations[route] = self.request_duration.labels(route)
        duration.observe(seconds)

    def upstream_try(self, upstream: str, target: str, seconds: float) -> None:
        """One try at an upstream target ended after ``seconds``."""
        key = (upstream, target)
        child = self._upstreams.get(key)
        if child is None:
            child = self._upstreams[key] = self.upstream_duration.labels(upstream, target)
        child.observe(seconds)

    def retry(self, upstream: str) -> None:
        child = self._retries.get(upstream)
        if child is None:
            child = self._retries[upstream] = self.retries.labels(upstream)
        child.inc()

    def plugin_time(self, plugin: str, seconds: float) -> None:
        """One call into a plugin (on_request or on_response) took ``seconds``."""
        child = self._plugins.get(plugin)
        if child is None:
            child = self._plugins[plugin] = self.plugin_duration.labels(plugin)
        child.observe(seconds)

    def rate_limit_refused(self, route: str) -> None:
        self.rate_limited.labels(route).inc()

    def rate_limit_degraded(self) -> None:
        self.rate_limit_fail_open.inc()

    def cache_result(self, route: str, result: str) -> None:
        """One request on a cache route: hit, miss, bypass or unavailable (the store down: a miss)."""
        key = (route, result)
        child = self._cache.get(key)
        if child is None:
            child = self._cache[key] = self.cache.labels(route, result)
        child.inc()

    def set_in_flight(self, count: int) -> None:
        self._in_flight_set(count)

    def websocket_children(self, route: str) -> tuple[Any, Any, Any]:
        """The route's open-sockets gauge and its two message counters (to_upstream, to_client),
        resolved once per socket: a relayed message then costs one ``inc``."""
        return (self.websocket_connections.labels(route), self.websocket_messages.labels(route, "to_upstream"),
                self.websocket_messages.labels(route, "to_client"))

    # --- state changes, off the request path ---

    def target_state(self, upstream: str, target: str, healthy: bool, circuit_open: bool) -> None:
        """A target's health or circuit changed (or is being reported at start or scrape)."""
        self.target_healthy.labels(upstream, target).set(1 if healthy else 0)
        self.circuit_open.labels(upstream, target).set(1 if circuit_open else 0)

    def forget_target(self, upstream: str, target: str) -> None:
        """A reload removed the target: stop reporting it (this process's series only)."""
        for family in (self.target_healthy, self.circuit_open):
            try:
                family.remove(upstream, target)
            except KeyError:
                pass

    def jwks_refreshed(self, result: str) -> None:
        self.jwks_refresh.labels(result).inc()

    # --- the scrape ---

    def families(self) -> Any:
        """The metric families a scrape shows (every worker's merged): for ``/-/stats``."""
        if not self.multiprocess_dir:
            return self.registry.collect()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return merged.collect()

    def exposition(self) -> bytes:
        """The Prometheus text format: this process's registry, or every worker's files merged."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)
