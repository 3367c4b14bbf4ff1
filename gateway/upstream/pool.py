"""The runtime state of one upstream: its targets, balancer, breakers, retry policy, health checks.

An :class:`UpstreamPool` is built once per upstream from its
:class:`~gateway.config.UpstreamConfig` (on start and on every reload) and owns:

* one :class:`~gateway.upstream.target.Target` per configured target: in-flight count, the active
  health-check verdict, the circuit breaker;
* the balancer chosen by ``balance`` (:mod:`gateway.upstream.balance`);
* the :class:`~gateway.upstream.retry.RetryPolicy` and its budget;
* the :class:`~gateway.upstream.health.HealthChecker`, when ``health_check`` is set;
* ``ssl_context``: the upstream's TLS context (:mod:`gateway.upstream.tls`), used by
  the proxy path and the health checks alike; None for an http-only upstream.

The proxy's way through it, per try::

    target = pool.pick(exclude=tried)     # NoHealthyUpstream (503) when none is available
    pool.begin(target)
    ...                                   # send, relay
    pool.end(target, ok)                  # ok=False: connect error, reset, timeout or 5xx; None: no verdict

Clock and random source are injected, so tests step time instead of sleeping.
Everything here runs on one IOLoop and is not thread-safe.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable, Collection

from ..config import TargetConfig, UpstreamConfig
from ..errors import NoHealthyUpstream
from .balance import Balancer, make_balancer
from .breaker import OPEN, CircuitBreaker
from .health import HealthChecker
from .retry import RetryPolicy
from .target import Target

__all__ = ["Target", "UpstreamPool"]


class UpstreamPool:
    """One upstream's targets and the resilience logic around them.

    ``on_state_change(target)`` (optional) is called after a target's health or
    circuit state changed, for metrics and logs.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_state_change: Callable[[Target], None] | None = None,
    ) -> None:
        if not config.targets:
            raise ValueError(f"upstream {config.name!r} has no targets")
        self.name = config.name
        self.config = config
        self.ssl_context = ssl_context
        self._rng = rng if rng is not None else random.Random()
        self._on_state_change = on_state_change
        self.targets: tuple[Target, ...] = tuple(self._build_target(t, clock) for t in config.targets)
        self._balancer: Balancer = make_balancer(config.balance, self._rng)
        self.retry = RetryPolicy(config.retry, clock=clock, rng=self._rng)
        self._health: HealthChecker | None = None
        if config.health_check is not None:
            self._health = HealthChecker(
                config.health_check,
                self.targets,
                ssl_context=ssl_context,
                on_change=self._notify,
                upstream=self.name,
            )

    def pick(self, exclude: Collection[Target] = ()) -> Target:
        """The balancer's choice among the available targets not in ``exclude``.

        When every available target is in ``exclude`` (all were tried), one of
        them is chosen again. A half-open target's one probe slot is taken when it
        is chosen. Raises :class:`~gateway.errors.NoHealthyUpstream` at once when no
        target is available (all unhealthy or their circuits open).
        """
        available = [target for target in self.targets if target.available()]
        fresh = [target for target in available if target not in exclude]
        candidates = fresh or available
        while candidates:
            target = self._balancer.choose(candidates)
            if target.breaker is None or target.breaker.allow():
                return target
            candidates = [other for other in candidates if other is not target]
        raise NoHealthyUpstream(log_message=f"upstream '{self.name}' has no healthy target")

    def begin(self, target: Target) -> None:
        """A request to ``target`` starts."""
        target.in_flight += 1

    def end(self, target: Target, ok: bool | None) -> None:
        """A request to ``target`` ended; ``ok=False`` (connect error, reset, timeout, 5xx) feeds its breaker.

        ``ok=None`` is no verdict: the exchange ended for a reason that says nothing about the target
        (the client went away or sent a broken body, the gateway cancelled it), so the breaker's count
        is left as it was and a half-open probe slot is handed back.
        """
        target.in_flight = max(target.in_flight - 1, 0)
        breaker = target.breaker
        if breaker is None:
            return
        if ok is None:
            breaker.record_no_verdict()
        elif ok:
            breaker.record_success()
        else:
            breaker.record_failure()

    def ready(self) -> bool:
        """At least one target is healthy and its circuit not open (for ``/-/ready``)."""
        return any(target.healthy and target.circuit != OPEN for target in self.targets)

    def snapshot(self) -> list[dict[str, object]]:
        """For the admin API: one dict per target with url, weight, healthy, circuit, in_flight."""
        return [
            {
                "url": target.url,
                "weight": target.weight,
                "healthy": target.healthy,
                "circuit": target.circuit,
                "in_flight": target.in_flight,
            }
            for target in self.targets
        ]

    async def start(self) -> None:
        """Start the active health checks, if configured. Returns at once."""
        if self._health is not None:
            await self._health.start()

    async def stop(self) -> None:
        """Stop the active health checks; returns when nothing of them is left running."""
        if self._health is not None:
            await self._health.stop()

    def _build_target(self, config: TargetConfig, clock: Callable[[], float]) -> Target:
        if self.config.circuit_breaker is None:
            return Target(config)
        target = Target(config)
        target.breaker = CircuitBreaker(
            self.config.circuit_breaker, clock, on_change=lambda _state: self._notify(target)
        )
        return target

    def _notify(self, target: Target) -> None:
        if self._on_state_change is not None:
            self._on_state_change(target)
