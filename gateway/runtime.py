"""Runtime: everything one configuration compiles to, built once and swapped whole on reload.

A :class:`Runtime` holds the route step (:class:`~gateway.policies.route.RouteStep`:
the route table), one :class:`RoutePlan` per route (its policy steps compiled in
:data:`gateway.policies.ORDER`, header plans, timeouts resolved), the upstream
pools, the authenticator, the plugins and the rate-limit store. Request handlers read
``holder.runtime`` once at admission and keep that object, so a reload never
changes the rules under a request in flight.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tornado.httpclient import AsyncHTTPClient

from .aggregate import AggregatePlan
from .apikeys import ApiKeyRing
from .auth import Authenticator
from .cache import build_cache_store
from .cache.store import CacheStore
from .compression import Compression, compression_for
from .config import GatewayConfig, RouteConfig, UpstreamConfig
from .headers import HeaderPlan, TrustedProxies
from .policies import Step
from .policies.build import StepBuilder
from .policies.headers import HeaderRules
from .policies.ratelimit import LimitKey, RateLimitStore, build_store
from .policies.route import RouteStep
from .recent import RecentErrors
from .routing import RouteTable
from .upstream.forward import Timeouts
from .upstream.pool import Target, UpstreamPool
from .upstream.request import GatewayRequest, template
from .upstream.tls import TlsContexts
from .websocket import WebSocketPlan

if TYPE_CHECKING:
    from .accesslog import AccessLog
    from .context import RequestContext
    from .metrics import Metrics
    from .tracing import Tracing

__all__ = ["Runtime", "RuntimeHolder", "RoutePlan"]


@dataclass(frozen=True)
class RoutePlan:
    """One route with everything it needs resolved at load time."""

    route: RouteConfig
    pool: UpstreamPool | None
    request_headers: HeaderPlan
    response_headers: HeaderPlan
    timeouts: Timeouts
    ssl_context: ssl.SSLContext | None
    steps: tuple[Step, ...]  # the policy steps after the route, in ORDER
    responders: tuple[tuple[int, Step], ...]  # those of them with an on_response, by index
    aggregate: AggregatePlan | None = None
    request: GatewayRequest | None = None  # the template each forwarded request derives from (None: no upstream)
    websocket: WebSocketPlan | None = None  # a websocket: true route's limits (gateway.websocket)
    compression: Compression | None = None  # None: the route's answers go as they are


class Runtime:
    """The compiled form of one :class:`GatewayConfig`."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        previous: Runtime | None = None,
        on_target_change: Callable[[str, Target], None] | None = None,
        on_jwks_refresh: Callable[[str], None] | None = None,
        on_rate_limit_degraded: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._on_rate_limit_degraded = on_rate_limit_degraded
        self.config = config
        self.server = config.server
        self.routes = RouteTable(config.routes)
        self.trusted_proxies = TrustedProxies(config.server.trusted_proxies)
        self.admitted = 0  # requests admitted with this runtime and not over yet (counted by gateway.http)
        self.authenticator = (Authenticator(config.auth.jwt, on_jwks_refresh=on_jwks_refresh)
                              if config.auth.jwt is not None else None)
        self.api_keys = _key_ring(config)
        # The store is built by start(), in the running loop: redis-py's asyncio client
        # belongs to the loop that runs it, and a runtime built only to check a config
        # (`gateway check`, or serve before its loop starts) must not hold a Redis pool.
        self._limited = any(r.rate_limit for r in config.routes)
        self.rate_limits: RateLimitStore | None = None
        # A reload that keeps the store's settings keeps the store, so budgets survive it.
        self._inherited_store = (
            previous.rate_limits
            if previous is not None and (previous.config.rate_limit_store, previous.config.rate_limit_fail_open)
            == (config.rate_limit_store, config.rate_limit_fail_open) else None
        )
        # One TLS context per distinct trust store / client certificate, shared by the proxy path and
        # the health checks; an unchanged one is inherited, so a reload keeps kept-alive connections.
        self.tls_contexts: TlsContexts = TlsContexts(previous.tls_contexts if previous is not None else None)
        kept = previous.pools if previous is not None else {}
        self.pools: dict[str, UpstreamPool] = {}
        for name, upstream in config.upstreams.items():
            context = self.tls_contexts.context(upstream.tls) if _uses_tls(upstream) else None
            old = kept.get(name)
            self.pools[name] = old if old is not None and old.config == upstream and old.ssl_context is context \
                else UpstreamPool(upstream, ssl_context=context, on_state_change=_for_upstream(on_target_change, name))
        self._ssl = {name: pool.ssl_context for name, pool in self.pools.items() if pool.ssl_context is not None}
        header_rules = HeaderRules(self.authenticator, self.api_keys)
        builder = StepBuilder(
            config.server, config.cors, self.authenticator, {p.name: p.plugin for p in config.plugins},
            on_rate_limited=metrics.rate_limit_refused if metrics is not None else None,
            on_plugin_time=metrics.plugin_time if metrics is not None else None, keys=self.api_keys,
            on_cache_result=metrics.cache_result if metrics is not None else None)
        self.plans: dict[str, RoutePlan] = {}
        for route in config.routes:
            target_upstream = config.upstreams.get(route.upstream) if route.upstream else None
            limit_key = LimitKey(route.name, route.rate_limit.key if route.rate_limit else "ip")
            timeouts = Timeouts(
                connect_seconds=target_upstream.connect_timeout_seconds if target_upstream else 2.0,
                request_seconds=route.timeout_seconds or (target_upstream.request_timeout_seconds if target_upstream else 30.0),
            )
            ssl_context = self._ssl.get(route.upstream) if route.upstream else None
            steps, responders = builder.build(
                route, limit_key, target_upstream.retry.replay_buffer_bytes if target_upstream else 0)
            self.plans[route.name] = RoutePlan(
                route=route,
                pool=self.pools.get(route.upstream) if route.upstream else None,
                request_headers=header_rules.request_plan(route, limit_key.header),
                response_headers=header_rules.response_plan(route),
                timeouts=timeouts,
                ssl_context=ssl_context,
                steps=steps,
                responders=responders,
                aggregate=AggregatePlan(route, self.pools, config.upstreams, self._ssl) if route.aggregate else None,
                request=template(connect_timeout=timeouts.connect_seconds, request_timeout=timeouts.request_seconds,
                                 ssl_context=ssl_context, max_idle=target_upstream.max_idle_connections)
                if target_upstream is not None else None,
                websocket=WebSocketPlan.for_route(route),
                compression=compression_for(route.compression, config.compression),
            )
        self.route_step = RouteStep(self.routes, self.plans, self.trusted_proxies)
        self._rate_limit_steps = tuple(builder.rate_limit_steps)
        # The cache store, like the rate-limit store, is built by start() in the running loop; a reload
        # that keeps its settings keeps it, so the entries survive the reload.
        self._cache_steps = tuple(builder.cache_steps)
        self.cache_store: CacheStore | None = None
        self._inherited_cache = (
            previous.cache_store
            if previous is not None and (previous.config.cache_store, previous.config.cache_max_bytes)
            == (config.cache_store, config.cache_max_bytes) else None
        )
        # Tracing (SPEC §9): None without a tracing section, so a request makes no span and no tracer
        # call. A reload that keeps the section keeps the tracer and its queue of unexported spans.
        self.tracing: Tracing | None = None
        if config.tracing is not None:
            if previous is not None and previous.tracing is not None and previous.config.tracing == config.tracing:
                self.tracing = previous.tracing
            else:
                from .tracing import Tracing  # imported only when used: OpenTelemetry is not loaded otherwise

                self.tracing = Tracing(config.tracing,
                                       on_dropped=metrics.spans_dropped if metrics is not None else None,
                                       on_exported=metrics.spans_exported if metrics is not None else None)

    async def start(self) -> None:
        """Build the rate-limit store; start background work: health checks and key refresh."""
        if self._limited and self.rate_limits is None:
            self.rate_limits = self._inherited_store or build_store(
                self.config.rate_limit_store, fail_open=self.config.rate_limit_fail_open,
                on_degraded=self._on_rate_limit_degraded)
        for step in self._rate_limit_steps:
            step.store = self.rate_limits
        if self._cache_steps and self.cache_store is None:
            self.cache_store = self._inherited_cache or build_cache_store(
                self.config.cache_store, max_bytes=self.config.cache_max_bytes)
        for cache_step in self._cache_steps:
            cache_step.store = self.cache_store
        for pool in self.pools.values():
            await pool.start()
        if self.authenticator is not None:
            await self.authenticator.start()
        if self.tracing is not None:
            self.tracing.start()

    async def stop(self, successor: Runtime | None = None, *, grace_seconds: float = 0.0) -> None:
        """Stop background work and close the stores ``successor`` did not take over."""
        await self.stop_work(successor)
        await self.close_stores(successor, grace_seconds)

    async def stop_work(self, successor: Runtime | None = None) -> None:
        """Stop health checks and key refreshes, leaving alone the pools ``successor`` took over."""
        reused = {id(p) for p in successor.pools.values()} if successor is not None else set()
        for pool in self.pools.values():
            if id(pool) not in reused:
                await pool.stop()
        if self.authenticator is not None:
            await self.authenticator.stop()

    async def close_stores(self, successor: Runtime | None = None, grace_seconds: float = 0.0) -> None:
        """Close the stores ``successor`` did not take over (rate limits, cache, tracing) once the
        requests admitted with this runtime are over (``admitted``), or after ``grace_seconds`` at the
        most: a reload that replaces the Redis store must not cut a rate-limit hit in flight (that
        request would get a 503 with fail_open false, or go past its budget with true)."""
        stores: list[Any] = [
            store for store, kept in ((self.rate_limits, successor.rate_limits if successor else None),
                                      (self.cache_store, successor.cache_store if successor else None),
                                      (self.tracing, successor.tracing if successor else None))
            if store is not None and store is not kept
        ]
        if not stores:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self.admitted > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for store in stores:
            await store.close()  # the tracer's close exports what is queued (within export_timeout_seconds)

    def ready(self) -> bool:
        """Config loaded and every upstream has a healthy target."""
        return all(pool.ready() for pool in self.pools.values())


class RuntimeHolder:
    """A process's current runtime (replaced whole by a reload), its metrics, access log and counters.

    ``metrics`` defaults to a fresh :class:`~gateway.metrics.Metrics`; without
    ``access_log`` no access log is written.
    """

    def __init__(self, runtime: Runtime, *, metrics: Metrics | None = None,
                 access_log: AccessLog | None = None) -> None:
        if metrics is None:
            from .metrics import Metrics  # imported late: see gateway.metrics on PROMETHEUS_MULTIPROC_DIR

            metrics = Metrics()
        self.runtime = runtime
        self.client: AsyncHTTPClient | None = None  # every upstream call's client, set by the server at start
        self.metrics = metrics
        self.access_log = access_log
        self.draining = False
        self.cutting = False  # drain_seconds ran out: the gateway itself closes the connections left
        self.websockets: set[Any] = set()  # relays open now (gateway.http.wsrelay), closed 1001 after the drain
        self._in_flight = 0
        self._report_in_flight = metrics.set_in_flight
        self.recent_errors = RecentErrors()  # the last error answers, for /-/errors and the dashboard

    @property
    def in_flight(self) -> int:
        """Requests on the main listener being handled now (mirrored in ``gateway_in_flight_requests``)."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, count: int) -> None:
        self._in_flight = count
        self._report_in_flight(count)

    def log_request(self, ctx: RequestContext, method: str, path: str, status: int, seconds: float,
                    route: str) -> None:
        """Called once per finished request on the main listener: counts it and writes its access-log line."""
        self.metrics.request_done(route, method, status, seconds)
        if status >= 400:
            self.recent_errors.record(status, route, method, path, ctx.request_id)
        if self.access_log is not None:
            self.access_log.write(
                request_id=ctx.request_id, client=ctx.client_ip, method=method, path=path,
                route=route, upstream=ctx.upstream, target=ctx.target, status=status,
                bytes_in=ctx.bytes_in, bytes_out=ctx.bytes_out, duration_seconds=seconds, subject=ctx.subject,
            )


def _for_upstream(report: Callable[[str, Target], None] | None, upstream: str) -> Callable[[Target], None] | None:
    """A pool's ``on_state_change`` that also names the upstream."""
    if report is None:
        return None
    return lambda target: report(upstream, target)


def _key_ring(config: GatewayConfig) -> ApiKeyRing | None:
    """``auth.api_keys`` compiled, with the identity mapping of ``auth.jwt`` when configured (one
    mapping for both kinds of caller), else the section's own."""
    keys, jwt = config.auth.api_keys, config.auth.jwt
    if keys is None:
        return None
    if jwt is not None:
        return ApiKeyRing(keys, jwt.claims_to_headers, jwt.scope_claim)
    return ApiKeyRing(keys, keys.claims_to_headers)


def _uses_tls(upstream: UpstreamConfig) -> bool:
    return upstream.tls is not None or any(t.origin.scheme == "https" for t in upstream.targets)

