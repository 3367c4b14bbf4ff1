"""One upstream target's runtime state, shared by the pool that picks it and the checks that probe it.

A :class:`Target` is built per configured target by
:class:`~gateway.upstream.pool.UpstreamPool` and read by the balancer, the
proxy path and :class:`~gateway.upstream.health.HealthChecker` (which flips
``healthy``). It lives apart from the pool so the health checker needs nothing
of the pool: the pool owns the checker, not the other way round.
"""

from __future__ import annotations

from ..config import Origin, TargetConfig
from .breaker import CLOSED, CircuitBreaker

__all__ = ["Target"]


class Target:
    """The runtime state of one target. Compared and hashed by identity."""

    __slots__ = ("breaker", "config", "healthy", "in_flight", "origin", "url", "weight")

    def __init__(self, config: TargetConfig, breaker: CircuitBreaker | None = None) -> None:
        self.config = config
        self.origin: Origin = config.origin
        self.weight = config.weight
        self.url = config.url
        self.in_flight = 0
        self.healthy = True  # the active health check's verdict; stays True without one
        self.breaker = breaker

    @property
    def circuit(self) -> str:
        """``closed``, ``open`` or ``half_open``; ``closed`` when no breaker is configured."""
        return CLOSED if self.breaker is None else self.breaker.state

    def available(self) -> bool:
        """Healthy, and its breaker (if any) would let a request through now. Changes nothing."""
        return self.healthy and (self.breaker is None or self.breaker.would_allow())

    def __repr__(self) -> str:
        return f"<Target {self.url} weight={self.weight} healthy={self.healthy} circuit={self.circuit}>"
