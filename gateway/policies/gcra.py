"""GCRA's arithmetic, shared by both rate-limit stores: a rule's parameters and a hit's decision.

A rule of ``requests`` per ``window_seconds`` spaces requests by the emission
interval ``T = window / requests`` (rounded up to a whole microsecond) and
tolerates a burst of ``requests * T``; see :mod:`gateway.policies.ratelimit`.
A :class:`GcraRule` is computed once per route at load, never per hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Decision", "GcraRule", "gcra_parameters", "gcra_decision"]


@dataclass(frozen=True)
class GcraRule:
    """``limit`` requests per ``window_seconds``, with GCRA's parameters worked out once:
    ``interval`` (T, whole microseconds) and ``burst`` (``limit * T``). Raises ``ValueError``
    for a limit below 1 or a window that is not positive."""

    limit: int
    window_seconds: float
    interval: int = 0
    burst: int = 0

    def __post_init__(self) -> None:
        interval, burst = gcra_parameters(self.limit, self.window_seconds)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "burst", burst)


@dataclass(frozen=True)
class Decision:
    """The answer to one hit on a key."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the budget is whole again
    retry_after_seconds: float  # 0 when allowed

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (whole seconds,
        rounded up) and, when refused, ``Retry-After`` (whole seconds, rounded up)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_seconds)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(math.ceil(self.retry_after_seconds))
        return headers


def gcra_parameters(limit: int, window_seconds: float) -> tuple[int, int]:
    """``(interval, burst)`` in whole microseconds for ``limit`` per ``window_seconds``:
    ``interval`` is ``T`` rounded up, ``burst`` is ``limit * T``. Raises ``ValueError``
    for a limit below 1 or a window that is not positive."""
    if limit < 1 or not window_seconds > 0:
        raise ValueError(f"rate limit needs requests >= 1 and window_seconds > 0, got {limit}/{window_seconds}")
    window_us = max(1, round(window_seconds * 1_000_000))
    interval = -(-window_us // limit)  # ceiling division, in integers
    return interval, limit * interval


def gcra_decision(
    limit: int, interval: int, burst: int, allowed: bool, reset_us: int, retry_us: int
) -> Decision:
    """A :class:`Decision` from GCRA's outcome. ``reset_us`` is the TAT after the hit
    minus now; ``retry_us`` is how long until the hit would have been allowed."""
    remaining = max(0, (burst - reset_us) // interval) if allowed else 0
    return Decision(
        allowed=allowed,
        limit=limit,
        remaining=min(remaining, limit),
        reset_seconds=max(0, reset_us) / 1_000_000,
        retry_after_seconds=0.0 if allowed else max(0, retry_us) / 1_000_000,
    )
