"""Where cached answers live: the store interface, the in-memory LRU store, and the choice.

:func:`gateway.cache.build_cache_store` picks one from ``cache_store``: ``memory`` (this process only,
bounded by ``cache_max_bytes``) or ``redis://host:port/db`` (every gateway instance on that
Redis shares the entries; :mod:`gateway.cache.redis_store`).

A store that cannot answer raises :class:`CacheUnavailable` and nothing else; the cache step
then serves as a miss and counts it. A store never holds a record past its ``ttl``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from .entry import Record

__all__ = ["CacheStore", "CacheUnavailable", "MemoryStore"]


class CacheUnavailable(Exception):
    """The store could not be read or written in time (Redis down, slow or failing)."""


class CacheStore(Protocol):
    """Two calls, both bounded in time. Chosen once, when the runtime starts."""

    async def get(self, key: str) -> Record | None:
        """The live record under ``key``, or None. Raises :class:`CacheUnavailable`."""
        ...

    async def put(self, key: str, record: Record, ttl_seconds: float) -> None:
        """Keep ``record`` under ``key`` for ``ttl_seconds``. Raises :class:`CacheUnavailable`."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


class MemoryStore:
    """This process's records, least recently used first out once they hold more than
    ``max_bytes`` (:attr:`Entry.size`: body, fields and a fixed overhead per record).

    A record bigger than ``max_bytes`` on its own is not kept. Expired records are dropped
    when read and age out of the LRU order like any other. ``clock`` returns wall seconds.
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._records: OrderedDict[str, tuple[Record, float, int]] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    async def get(self, key: str) -> Record | None:
        return self.get_now(key)

    def get_now(self, key: str) -> Record | None:
        """:meth:`get` without a coroutine."""
        held = self._records.get(key)
        if held is None:
            return None
        record, expires_at, size = held
        if self._clock() >= expires_at:
            del self._records[key]
            self.size_bytes -= size
            return None
        self._records.move_to_end(key)
        return record

    async def put(self, key: str, record: Record, ttl_seconds: float) -> None:
        self.put_now(key, record, ttl_seconds)

    def put_now(self, key: str, record: Record, ttl_seconds: float) -> None:
        """:meth:`put` without a coroutine."""
        size = record.size
        old = self._records.pop(key, None)
        if old is not None:
            self.size_bytes -= old[2]
        if size > self.max_bytes:
            return
        self._records[key] = (record, self._clock() + ttl_seconds, size)
        self.size_bytes += size
        records = self._records
        while self.size_bytes > self.max_bytes:
            _, (_, _, dropped) = records.popitem(last=False)
            self.size_bytes -= dropped

    async def close(self) -> None:
        self._records.clear()
        self.size_bytes = 0
