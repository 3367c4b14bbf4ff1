"""Rate limiting: the decision, the store interface, the in-memory store and the key.

Algorithm: GCRA, the Generic Cell Rate Algorithm (a leaky bucket kept as one
number per key; https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm).
A rule of ``requests`` per ``window_seconds`` spaces requests by the emission
interval ``T = window / requests`` and tolerates a burst of up to ``requests``
at once. Each key stores its *theoretical arrival time* (TAT)::

    tat     = max(stored_tat, now)
    new_tat = tat + T
    allowed = new_tat - now <= requests * T        (then stored_tat = new_tat)

so a fresh key takes ``requests`` hits in a burst, then one more every ``T``.
Time is counted in whole microseconds and ``T`` is rounded up to a whole
microsecond, so the arithmetic is exact (integers): a rule never lets through
``requests + 1`` hits, whatever the float values of the window. Rounding makes
the sustained rate at most one microsecond per request slower than configured.

Both stores run the same arithmetic: :class:`MemoryStore` in the process (a hit
has no ``await`` inside, so it is atomic on the event loop), and
:class:`gateway.ratelimit_redis.RedisStore` in one Lua script, shared by every
gateway instance. :func:`build_store` picks one from ``rate_limit_store``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.headers import single_value

__all__ = ["Decision", "LimitKey", "MemoryStore", "RateLimitStore", "build_store"]


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


class RateLimitStore(Protocol):
    """Where the per-key state lives. Chosen once, at build time."""

    async def hit(self, key: str, limit: int, window_seconds: float) -> Decision:
        """Count one request on ``key`` against ``limit`` per ``window_seconds``.

        Raises :class:`gateway.errors.ServiceUnavailable` when the store cannot
        answer and is configured to fail closed; never raises a library error.
        """
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


class MemoryStore:
    """Per-process GCRA state. Exact within one process, not shared between processes.

    ``clock`` returns seconds (``time.monotonic`` by default; tests pass a fake).
    Memory is bounded: a key whose TAT has passed holds a whole budget, exactly
    like an absent key, so such keys are swept whenever the table has doubled
    since the last sweep. The table holds at most about twice the keys seen in
    the last window.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, min_sweep_size: int = 1024) -> None:
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._min_sweep_size = min_sweep_size
        self._sweep_at = min_sweep_size

    def __len__(self) -> int:
        """Keys currently held (live or not yet swept)."""
        return len(self._tats)

    async def hit(self, key: str, limit: int, window_seconds: float) -> Decision:
        interval, burst = gcra_parameters(limit, window_seconds)
        now = round(self._clock() * 1_000_000)
        tat = max(self._tats.get(key, now), now)
        new_tat = tat + interval
        if new_tat - now > burst:
            return gcra_decision(limit, interval, burst, False, tat - now, new_tat - burst - now)
        self._tats[key] = new_tat
        if len(self._tats) >= self._sweep_at:
            self._sweep(now)
        return gcra_decision(limit, interval, burst, True, new_tat - now, 0)

    async def close(self) -> None:
        self._tats.clear()

    def _sweep(self, now: int) -> None:
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._sweep_at = max(self._min_sweep_size, 2 * len(self._tats))


def build_store(
    url: str, *, fail_open: bool, on_degraded: Callable[[], None] | None = None
) -> RateLimitStore:
    """The store for a ``rate_limit_store`` value: ``memory`` or ``redis://host:port/db``
    (``rediss://`` for TLS). Raises ``ValueError`` for anything else."""
    if url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://")):
        # Imported here: ratelimit_redis imports this module, and redis-py is only
        # loaded by gateways that use it.
        from gateway.ratelimit_redis import RedisStore

        return RedisStore(url, fail_open=fail_open, on_degraded=on_degraded)
    raise ValueError(f"unknown rate_limit_store {url!r}: expected 'memory' or 'redis://host:port/db'")


class LimitKey:
    """Which budget a request of one route draws from: ``rate_limit.key`` compiled at load.

    ``subject``: the token's ``sub`` (an anonymous caller falls back to its ip);
    ``ip``: the client address; ``header:NAME``: that header's value (absent or
    empty falls back to the ip). Header values are often API keys, so only their
    SHA-256 goes into the key. Every key is prefixed with the route's name, so
    routes never share a budget. Raises ``ValueError`` for an unknown key kind.
    """

    __slots__ = ("header", "_kind", "_ip", "_sub", "_hdr")

    def __init__(self, route_name: str, kind: str) -> None:
        self.header: str | None = None  # the header a header:NAME key reads
        if kind.startswith("header:") and len(kind) > len("header:"):
            self.header = kind[len("header:") :]
        elif kind not in ("subject", "ip"):
            raise ValueError(f"unknown rate limit key {kind!r}: expected subject, ip or header:NAME")
        self._kind = "header" if self.header is not None else kind
        self._ip = f"{route_name}:ip:"
        self._sub = f"{route_name}:sub:"
        self._hdr = f"{route_name}:hdr:{self.header.lower()}:" if self.header is not None else ""

    def __call__(self, subject: str | None, client_ip: str, headers: Mapping[str, str]) -> str:
        """The key for one request. Raises :class:`~gateway.errors.BadRequest` when the key's
        header is repeated: a second line must not buy a second budget."""
        kind = self._kind
        if kind == "subject":
            if subject:
                return self._sub + subject
        elif self.header is not None:
            value = single_value(headers, self.header)
            if value:
                return self._hdr + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
        return self._ip + client_ip


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
