"""The Redis cache store: entries shared by every gateway instance on one Redis.

A lookup is one ``GET`` (two for an answer with ``Vary``); a write one ``SET ... PX``, so
Redis expires records itself and never holds a stale one. Records are
:func:`gateway.cache.entry.encode`'s bytes under ``gateway:cache:<sha256>``.

A Redis that is down, slow or failing never fails or slows a request beyond
:data:`TIMEOUT_SECONDS` per call (connecting, waiting for a pooled connection and the
call itself): the call raises :class:`~gateway.cache.store.CacheUnavailable` and the cache
step serves a miss. A warning is logged once when an outage starts and an info line when
Redis answers again. redis-py's exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .entry import Record, decode, encode
from .store import CacheUnavailable

__all__ = ["RedisCacheStore", "TIMEOUT_SECONDS"]

log = logging.getLogger(__name__)

# A cache lookup must cost a request far less than the upstream call it saves; a Redis that
# takes longer is treated as down for that call.
TIMEOUT_SECONDS = 0.25


class RedisCacheStore:
    """Records in Redis; see the module docstring for the failure mode."""

    def __init__(self, url: str, *, timeout_seconds: float = TIMEOUT_SECONDS, max_connections: int = 64) -> None:
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self._timeout_seconds = timeout_seconds
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_seconds, socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),  # the deadline is the whole budget; the next call reconnects
            protocol=2,  # RESP2: see gateway.policies.ratelimit_redis (a restarted Redis's dead connections)
        )
        self._client = aioredis.Redis.from_pool(pool)
        self._down = False

    async def get(self, key: str) -> Record | None:
        try:
            data = await asyncio.wait_for(self._client.get(key), self._timeout_seconds)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        self._up()
        return decode(data) if isinstance(data, bytes) else None

    async def put(self, key: str, record: Record, ttl_seconds: float) -> None:
        milliseconds = max(1, int(ttl_seconds * 1000))
        try:
            await asyncio.wait_for(self._client.set(key, encode(record), px=milliseconds), self._timeout_seconds)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        self._up()

    async def close(self) -> None:
        await self._client.aclose()

    def _up(self) -> None:
        if self._down:
            self._down = False
            log.info("cache store: Redis answers again; caching resumed")

    def _unavailable(self, exc: BaseException) -> CacheUnavailable:
        if not self._down:
            self._down = True
            log.warning("cache store: Redis unavailable (%s: %s); serving without the cache until it answers again",
                        type(exc).__name__, exc or "timed out")
        return CacheUnavailable(str(exc) or type(exc).__name__)
