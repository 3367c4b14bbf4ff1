"""The rate-limit step: the store interface, the in-memory store, the key and the step.

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
:class:`gateway.policies.ratelimit_redis.RedisStore` in one Lua script, shared by every
gateway instance (the arithmetic is :mod:`gateway.policies.gcra`'s).
:func:`build_store` picks one from ``rate_limit_store``. :class:`RateLimitStep` is
a route's rule on the request path: its key kind and GCRA parameters compiled at
load, a hit per request, the ``RateLimit-*`` headers on every answer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from ..errors import RateLimited
from ..headers import single_value
from . import Request, Response, Step
from .gcra import Decision, GcraRule, gcra_decision

if TYPE_CHECKING:
    from ..config import RateLimitConfig

__all__ = ["LimitKey", "MemoryStore", "RateLimitStore", "RateLimitStep", "build_store"]


class RateLimitStore(Protocol):
    """Where the per-key state lives. Chosen once, at build time."""

    async def hit(self, key: str, rule: GcraRule) -> Decision:
        """Count one request on ``key`` against ``rule``.

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

    async def hit(self, key: str, rule: GcraRule) -> Decision:
        limit, interval, burst = rule.limit, rule.interval, rule.burst
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
        # Imported here: redis-py is only loaded by gateways that use it.
        from .ratelimit_redis import RedisStore

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




class RateLimitStep(Step):
    """A route's ``rate_limit`` on the request path. ``store`` is set when the runtime starts
    (the store belongs to the running loop); ``on_refused(route)`` counts a 429."""

    name = "rate_limit"

    def __init__(self, route_name: str, config: RateLimitConfig, key: LimitKey,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.route_name = route_name
        self.rule = GcraRule(config.requests, config.window_seconds)
        self.key = key
        self.store: RateLimitStore | None = None
        self._on_refused = on_refused

    async def on_request(self, request: Request) -> None:
        """Raises :class:`~gateway.errors.RateLimited` (with the budget's headers) when the key's
        budget is spent; ServiceUnavailable from a fail-closed store that cannot answer."""
        store = self.store
        if store is None:  # a runtime built but not started (gateway check): nothing to count against
            return None
        decision = await store.hit(self.key(request.ctx.subject, request.client_ip, request.incoming), self.rule)
        headers = decision.headers()
        if not decision.allowed:
            if self._on_refused is not None:
                self._on_refused(self.route_name)
            raise RateLimited(headers=headers)
        request.rate_limit_headers = headers
        return None

    def on_response(self, request: Request, response: Response) -> None:
        headers = request.rate_limit_headers
        if headers is not None:
            out = response.headers
            for name, value in headers.items():
                out[name] = value
