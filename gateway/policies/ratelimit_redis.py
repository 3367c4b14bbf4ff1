"""The Redis rate-limit store: GCRA state shared by every gateway instance.

One hit is one atomic Lua script and, in the steady state, one round trip
(``EVALSHA``; redis-py loads the script again by itself after a Redis restart).
The script reads the time from Redis (``TIME``), so the gateways' clocks do not
matter, and stores each key's TAT with an expiry (``SET ... PX``) equal to the
time until its budget is whole again, so Redis holds only live keys. The
arithmetic is :mod:`gateway.policies.gcra`'s, in integer microseconds (exact in
Lua's doubles up to 2^53 µs, well past the year 2200).

Failure is a named choice (``rate_limit_fail_open``). "Unavailable" means Redis
stopped answering, not that this hit is slow: **the deadline is Redis's silence,
not the hit's age; the gateway's own lag never makes a healthy Redis look down.**
The store notes when Redis last answered anything (a reply or an error reply).
At ``timeout_seconds`` a hit that is not answered yet waits on as long as Redis
answered something within the last ``timeout_seconds`` (since the hit began):
near saturation the reply is usually in the socket, or the hit is queued for a
pooled connection behind replies read but not processed yet, and the loop is
what is late. A hit that hears nothing for ``timeout_seconds`` gives up: a hung
Redis still costs each hit ``timeout_seconds``, and the hits in flight when it
hangs give up ``timeout_seconds`` after its last answer. No hit waits longer than
the socket bound (``max(10 * timeout_seconds, 2.0)``), which is also the pool's
own wait for a connection. A refused connection or an error reply gives up at
once. A hit that gives up is then:

- ``fail_open=True``: the hit is allowed and ``on_degraded()`` is called (a
  counter per degraded request);
- ``fail_open=False``: :class:`gateway.errors.ServiceUnavailable` is raised.

A warning is logged once when an outage starts and an info line when Redis
answers again; no request needs to do anything for service to resume. redis-py
exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..errors import ServiceUnavailable
from .gcra import Decision, GcraRule, gcra_decision

__all__ = ["KEY_PREFIX", "RedisStore"]

KEY_PREFIX = "gateway:ratelimit:"

log = logging.getLogger(__name__)


class RedisStore:
    """GCRA in Redis; see the module docstring for the failure modes.

    ``timeout_seconds`` is how long Redis may stay silent before a hit gives up
    (not how long a hit may take); ``max_connections`` bounds the pool (a hit
    waiting for a free connection follows the same rule).
    """

    def __init__(
        self,
        url: str,
        *,
        fail_open: bool,
        timeout_seconds: float = 0.5,
        on_degraded: Callable[[], None] | None = None,
        max_connections: int = 64,
    ) -> None:
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self._fail_open = fail_open
        self._timeout_seconds = timeout_seconds
        self._on_degraded = on_degraded
        # The longest any hit waits, whatever Redis does: the socket's bound, and the pool's.
        self._bound_seconds = max(10 * timeout_seconds, 2.0)
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            # A hit queued for a connection behind others is governed by hit()'s rule, not by
            # the pool: a pool deadline of timeout_seconds failed hits that only our loop delayed.
            timeout=self._bound_seconds,
            # A late reply is still read (see hit()): the socket's own bound is far above the
            # deadline, so a slow Redis does not cost a reconnect per late hit; a hung one holds
            # a connection at most this long.
            socket_timeout=self._bound_seconds,
            # Connecting follows hit()'s rule too: after a Redis restart under load every connection
            # reconnects at once, and a connect deadline on our own loop failed hits a healthy Redis
            # would have answered. A refused connection still fails at once.
            socket_connect_timeout=self._bound_seconds,
            # No retries inside redis-py: the deadline is the whole budget, and the
            # next hit reconnects anyway.
            retry=Retry(NoBackoff(), 0),
            # RESP2: no HELLO handshake, and redis-py 8's RESP3 default turns on
            # maintenance notifications, which skip the pool's check for connections
            # that died with a restarted Redis (the first hit after it would fail).
            protocol=2,
        )
        self._client = aioredis.Redis.from_pool(pool)
        self._script = self._client.register_script(_GCRA_SCRIPT)
        self._down = False
        self._commands: set[asyncio.Future[Any]] = set()  # commands not answered yet (a late one finishes alone)
        self._answered_at = float("-inf")  # loop.time() when Redis last answered anything

    async def hit(self, key: str, rule: GcraRule) -> Decision:
        """Count a request on ``key``.

        The deadline is Redis's silence, not the hit's age: at ``timeout_seconds`` a hit
        not answered yet waits on while Redis answered anything within the last
        ``timeout_seconds`` (it is alive, and this hit is behind, usually on our own loop),
        and gives up once Redis has been silent that long (since the hit began), or at the
        socket bound whatever happens. The gateway's own lag never makes a healthy Redis
        look down: under overload a deadline on the hit's age let late hits through
        (``fail_open``) while their commands still counted, which lifted the limit.

        The command is never cancelled: a hit that gives up is answered degraded, and its
        command finishes on its connection in the background. Cancelling it would make
        redis-py drop the connection (its reply unread), and under load every late hit then
        costs a reconnect, which makes the next hits later still: `make soak` saw that
        spiral after a Redis restart."""
        limit, interval, burst = rule.limit, rule.interval, rule.burst
        loop = asyncio.get_running_loop()
        started = loop.time()
        command = asyncio.ensure_future(self._command(KEY_PREFIX + key, interval, burst))
        self._commands.add(command)
        command.add_done_callback(self._settled)
        timeout = self._timeout_seconds
        wait = timeout
        while True:
            # asyncio.wait() looks at the command itself when it wakes (wait_for() on a shield
            # saw the shield's result one loop turn late: a reply and the timer processed in
            # the same turn, after a stall, made the hit degraded).
            await asyncio.wait((command,), timeout=wait)
            if command.done():
                break
            now = loop.time()
            heard = max(self._answered_at, started)
            if now - heard >= timeout or now - started >= self._bound_seconds:
                return self._degraded(limit, asyncio.TimeoutError())
            wait = min(heard + timeout, started + self._bound_seconds) - now
        try:
            allowed, reset_us, retry_us = (int(value) for value in command.result())
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            return self._degraded(limit, exc)
        if self._down:
            self._down = False
            log.info("rate limit store: Redis answers again; limiting resumed")
        return gcra_decision(limit, interval, burst, allowed == 1, reset_us, retry_us)

    async def _command(self, key: str, interval: int, burst: int) -> Any:
        """Run the script and note when Redis answered: any reply, an error reply included
        (Redis is alive), but not a connection error or a timeout."""
        try:
            reply = await self._script(keys=[key], args=[interval, burst])
        except ResponseError:
            self._answered_at = asyncio.get_running_loop().time()
            raise
        self._answered_at = asyncio.get_running_loop().time()
        return reply

    async def close(self) -> None:
        """Close the pooled connections; never raises. A reload awaits this for the store it
        replaces: redis-py raises ``TimeoutError`` when a connection takes longer than the
        timeout to close, which a busy event loop alone can cause, and that used to abort the
        reload half-way (``POST /-/reload`` answered 500). Every socket is closed either way."""
        late = list(self._commands)
        for command in late:  # the store is going away: nobody will read these replies
            command.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        try:
            await self._client.aclose()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.info("rate limit store: closing the replaced Redis connections: %s: %s", type(exc).__name__, exc)

    def _settled(self, command: asyncio.Future[Any]) -> None:
        """A command is over: forget it, and read its outcome even when nobody waits for it any more
        (no 'exception was never retrieved' log for a late one that failed)."""
        self._commands.discard(command)
        if not command.cancelled():
            command.exception()

    def _degraded(self, limit: int, exc: BaseException) -> Decision:
        if not self._down:
            self._down = True
            log.warning(
                "rate limit store: Redis unavailable (%s: %s); %s until it answers again",
                type(exc).__name__,
                exc or "timed out",
                "letting requests through" if self._fail_open else "refusing requests with 503",
            )
        if not self._fail_open:
            raise ServiceUnavailable("rate limit store unavailable") from exc
        if self._on_degraded is not None:
            self._on_degraded()
        # Nothing is known about the key: report the whole budget.
        return Decision(allowed=True, limit=limit, remaining=limit, reset_seconds=0.0, retry_after_seconds=0.0)


# KEYS[1]: the key. ARGV[1]: the emission interval T, ARGV[2]: the burst (limit * T),
# both in whole microseconds. Returns {allowed (1|0), reset_us, retry_us}.
_GCRA_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local new_tat = tat + interval
if new_tat - now > burst then
  return {0, tat - now, new_tat - burst - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, new_tat - now, 0}
"""
