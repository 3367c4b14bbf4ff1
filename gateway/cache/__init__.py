"""The response cache (SPEC §8): a route's ``cache`` keeps its GET answers.

- :mod:`.control`: HTTP caching rules as pure functions (``Cache-Control`` both ways,
  ``Vary``, freshness);
- :mod:`.entry`: what is kept, its keys, and its bytes in a shared store;
- :mod:`.store`: the store interface and the in-memory LRU store; :mod:`.redis_store`: Redis,
  shared by every instance;
- :mod:`.step`: the policy step (last in a route's order) and one request's exchange with
  the cache, which the conductor (:class:`gateway.http.handler.ProxyHandler`) acts on.
"""

from __future__ import annotations

from .store import CacheStore, MemoryStore

__all__ = ["build_cache_store"]


def build_cache_store(url: str, *, max_bytes: int) -> CacheStore:
    """The store for a ``cache_store`` value: ``memory`` or ``redis://host:port/db`` (``rediss://``
    for TLS). Raises ``ValueError`` for anything else."""
    if url == "memory":
        return MemoryStore(max_bytes)
    if url.startswith(("redis://", "rediss://")):
        from .redis_store import RedisCacheStore  # redis-py is loaded only by gateways that use it

        return RedisCacheStore(url)
    raise ValueError(f"unknown cache_store {url!r}: expected 'memory' or 'redis://host:port/db'")
