"""The cache step (last of a route's steps) and one request's exchange with the cache.

:class:`CacheStep` runs after every other step of the route (auth, scopes, rate limit,
plugins: a hit is a request like any other) and records a :class:`CacheExchange` on the
request view; the conductor acts on it:

- **HIT** (``exchange.entry`` set): the answer is replayed through the same relay path as
  an upstream's (:meth:`CacheExchange.replay`), with ``Age`` and ``X-Cache: HIT``; no
  upstream is called (the access log's ``upstream`` is null and ``target`` is ``cache``).
- **MISS**: the request is forwarded; the exchange wraps the relay callbacks
  (:meth:`CacheExchange.relay`), adds ``X-Cache: MISS``, decides on the answer's head
  whether it may be kept (:func:`gateway.cache.control.freshness`), copies the body as it is
  relayed (dropping the copy once it passes ``max_entry_bytes``), and stores it when the
  answer ended whole (:meth:`CacheExchange.complete`). An answer cut short is never kept.
- **BYPASS**: the request said ``Cache-Control: no-store``, or it carries ``Authorization``
  on a route without auth that is not ``shared`` (RFC 9111 §3.5: a shared cache does not
  keep answers to authorized requests): forwarded, nothing read or kept.

Concurrent misses for one key go upstream once: the first becomes the leader; the others
wait (at most the route's ``timeout``, 30 s when unset) for its answer and are served it as a
HIT when it was kept and matches their ``Vary`` values, or go upstream themselves when it was
not (not cacheable, too large, failed, the client left), as soon as that is known. Waiting
happens per process; every process of every instance coalesces its own misses.

HEAD is looked up under GET's key (a HEAD hit is the GET entry's head, with its
``Content-Length``); a HEAD miss goes upstream as HEAD and keeps nothing. Other methods, and
GETs with a body, pass the step untouched and get no ``X-Cache``.

Each request that reaches the step is counted once: ``gateway_cache_total{route,result}``
with ``hit``, ``miss``, ``bypass`` or ``unavailable`` (the store could not be read: served
as a miss).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.iostream import StreamClosedError

from ..config import CacheConfig
from ..headers import Fields
from ..policies import Request, Step
from ..upstream.http1 import ResponseInterrupted
from .control import Freshness, freshness, request_directives, vary_names
from .entry import Entry, Variants, primary_key, variant_key, vary_values
from .store import CacheStore, CacheUnavailable

__all__ = ["CacheStep", "CacheExchange", "HIT", "MISS", "BYPASS"]

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"

# Upstream fields not kept in an entry: framing (a hit gets its own Content-Length), the Age the
# gateway computes, and an upstream's own X-Cache (the gateway's says what the gateway did).
_NOT_KEPT = frozenset({"content-length", "transfer-encoding", "age", "x-cache"})

OnResult = Callable[[str, str], None]
FieldsCallback = Callable[[int, str, Fields], "Awaitable[None] | None"]
BodyCallback = Callable[[bytes], Any]


class CacheStep(Step):
    """A route's ``cache`` on the request path. ``store`` is set when the runtime starts (a
    Redis client belongs to the running loop); ``on_result(route, result)`` counts a request."""

    name = "cache"

    def __init__(self, route_name: str, config: CacheConfig, *, authenticated: bool, wait_seconds: float,
                 on_result: OnResult | None = None, clock: Callable[[], float] = time.time) -> None:
        self.route_name = route_name
        self.ttl_seconds = config.ttl_seconds
        self.max_entry_bytes = config.max_entry_bytes
        self.per_subject = authenticated and not config.shared
        # RFC 9111 §3.5: an answer to a request with Authorization is not for a shared entry,
        # unless the operator said so (shared: true) or the route partitions by subject.
        self.bypass_authorization = not authenticated and not config.shared
        self.wait_seconds = wait_seconds
        self.clock = clock
        self._on_result = on_result
        self._store: CacheStore | None = None
        self._put_now: Callable[[str, Any, float], None] | None = None
        self.leaders: dict[str, asyncio.Future[Entry | None]] = {}
        self._saving: set[asyncio.Future[None]] = set()

    @property
    def store(self) -> CacheStore | None:
        return self._store

    @store.setter
    def store(self, store: CacheStore | None) -> None:
        self._store = store
        self._put_now = getattr(store, "put_now", None)  # the memory store keeps an entry at once

    async def on_request(self, request: Request) -> None:
        store = self._store
        if store is None:  # a runtime built but not started (gateway check)
            return None
        method = request.method
        if (method != "GET" and method != "HEAD") or request.declared_length != 0:
            return None
        incoming = request.incoming
        asked = request_directives(incoming)
        if asked.no_store or (self.bypass_authorization and "Authorization" in incoming):
            request.cache = CacheExchange(self, "", incoming, shared_entry=True, keep=False, state=BYPASS)
            self._count("bypass")
            return None
        subject = request.ctx.subject if self.per_subject else None
        primary = primary_key(self.route_name, request.host.lower(), request.path, request.query, subject)
        exchange = request.cache = CacheExchange(self, primary, incoming, shared_entry=subject is None,
                                                 keep=method == "GET")
        result = "miss"
        if not asked.no_cache:
            try:
                entry = await self._lookup(store, primary, incoming)
            except CacheUnavailable:
                entry, result = None, "unavailable"
            if entry is not None and (asked.max_age is None or entry.age(self.clock()) < asked.max_age):
                self._hit(request, exchange, entry)
                return None
            leader = self.leaders.get(primary)
            if leader is not None and method == "GET":
                entry = await self._wait(leader)
                if entry is not None and self._matches(entry, primary, incoming):
                    self._hit(request, exchange, entry)
                    return None
                self._count(result)
                return None  # the leader's answer was not kept: upstream on its own
        if method == "GET" and primary not in self.leaders:
            exchange.lead()
        self._count(result)
        return None

    async def _lookup(self, store: CacheStore, primary: str, incoming: Any) -> Entry | None:
        record = await store.get(primary)
        if isinstance(record, Variants):
            record = await store.get(variant_key(primary, vary_values(incoming, record.names)))
        if isinstance(record, Entry) and self.clock() < record.expires_at:
            return record
        return None

    async def _wait(self, leader: asyncio.Future[Entry | None]) -> Entry | None:
        try:
            return await asyncio.wait_for(asyncio.shield(leader), self.wait_seconds)
        except asyncio.TimeoutError:
            return None

    @staticmethod
    def _matches(entry: Entry, primary: str, incoming: Any) -> bool:
        """Whether a waiter may take the leader's entry: the same variant as its own request's."""
        if not entry.vary:
            return entry.variant == primary
        return entry.variant == variant_key(primary, vary_values(incoming, entry.vary))

    def _hit(self, request: Request, exchange: CacheExchange, entry: Entry) -> None:
        exchange.entry = entry
        exchange.state = HIT
        request.ctx.target = "cache"  # the access log: no upstream was called
        self._count("hit")

    def _count(self, result: str) -> None:
        if self._on_result is not None:
            self._on_result(self.route_name, result)

    def save(self, primary: str, entry: Entry, ttl_seconds: float) -> None:
        """Keep ``entry`` (and its Variants record, with Vary) without making the client wait for
        the store: the memory store at once, Redis in a task whose failure is only logged."""
        put_now = self._put_now
        if put_now is not None:
            if entry.vary:
                put_now(primary, Variants(entry.vary), ttl_seconds)
            put_now(entry.variant, entry, ttl_seconds)
            return
        task = asyncio.ensure_future(self._save(primary, entry, ttl_seconds))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, primary: str, entry: Entry, ttl_seconds: float) -> None:
        store = self._store
        if store is None:
            return
        try:
            if entry.vary:
                await store.put(primary, Variants(entry.vary), ttl_seconds)
            await store.put(entry.variant, entry, ttl_seconds)
        except CacheUnavailable:
            pass  # logged by the store when the outage began; the next miss tries again


class CacheExchange:
    """One request's way through the cache (see the module docstring). Made by
    :class:`CacheStep`; the conductor calls :meth:`replay` (a hit) or :meth:`relay` and
    :meth:`complete` (a miss), and :meth:`close` however the request ends."""

    __slots__ = ("step", "primary", "incoming", "shared_entry", "keep", "state", "entry", "leader",
                 "_on_headers", "_on_body", "_fields", "_fresh", "_vary", "_chunks", "_size", "_expected", "closed")

    def __init__(self, step: CacheStep, primary: str, incoming: Any, *, shared_entry: bool, keep: bool,
                 state: str = MISS) -> None:
        self.step = step
        self.primary = primary
        self.incoming = incoming
        self.shared_entry = shared_entry  # the entry would serve more than one caller: `private` not kept
        self.keep = keep  # the answer may be kept (a GET miss)
        self.state = state
        self.entry: Entry | None = None  # a hit's entry
        self.leader: asyncio.Future[Entry | None] | None = None  # waiters' future, when this request leads
        self._on_headers: FieldsCallback | None = None
        self._on_body: BodyCallback | None = None
        self._fields: tuple[tuple[str, str], ...] = ()
        self._fresh: Freshness | None = None
        self._vary: tuple[str, ...] = ()
        self._chunks: list[bytes] | None = None  # the body copied so far; None: not kept
        self._size = 0
        self._expected = -1  # the declared Content-Length; -1: chunked or close-delimited
        self.closed = False  # the request is over


    def lead(self) -> None:
        """Become the request the later misses of this key wait for. Not once the request is over
        (its client left while the step awaited the store): no answer would ever let them go."""
        if self.closed:
            return
        self.leader = asyncio.get_running_loop().create_future()
        self.step.leaders[self.primary] = self.leader

    # --- a hit ---

    async def replay(self, on_headers: FieldsCallback, on_body: BodyCallback) -> None:
        """Send the entry through the relay callbacks, as an upstream's answer would go. Raises
        ResponseInterrupted (not the upstream's fault) when the client went away meanwhile."""
        entry = self.entry
        if entry is None:
            return
        fields = list(entry.fields)
        fields += (("Content-Length", str(len(entry.body))), ("Age", str(entry.age(self.step.clock()))),
                   ("X-Cache", HIT))
        stamping = on_headers(200, "OK", fields)
        if stamping is not None:  # a plugin's on_response that waits
            await stamping
        waiting = on_body(entry.body) if entry.body else None
        if waiting is not None:
            try:
                await waiting
            except StreamClosedError:
                raise ResponseInterrupted("the client went away during a cached answer", upstream_fault=False) \
                    from None

    # --- a miss ---

    def relay(self, on_headers: FieldsCallback, on_body: BodyCallback) -> tuple[FieldsCallback, BodyCallback]:
        """The callbacks to give the upstream request in place of ``on_headers``/``on_body``."""
        self._on_headers, self._on_body = on_headers, on_body
        return self.on_fields, self.on_chunk

    def on_fields(self, status: int, reason: str, fields: Fields) -> Awaitable[None] | None:
        self._chunks = None
        if self.keep:
            self._decide(status, fields)
        out = [field for field in fields if field[0].lower() != "x-cache"]
        out.append(("X-Cache", self.state))
        if self._on_headers is not None:
            return self._on_headers(status, reason, out)
        return None

    def on_chunk(self, chunk: bytes) -> Awaitable[None] | None:
        chunks = self._chunks
        if chunks is not None and chunk:
            self._size += len(chunk)
            if self._size > self.step.max_entry_bytes:
                self._chunks = None  # too large after all: streamed through, the partial copy dropped
                self._resolve(None)
            else:
                chunks.append(chunk)
                if self._size == self._expected:
                    # The declared body is here whole (the parser allows no more): kept now, whatever
                    # becomes of the client that is still being sent its last chunk.
                    self.complete()
        return self._on_body(chunk) if self._on_body is not None else None

    def _decide(self, status: int, fields: Fields) -> None:
        """Whether this answer may be kept: a 200, fresh, no Set-Cookie, a Vary the cache can key
        on, not declared larger than max_entry_bytes. Waiters are let go at once when not."""
        step = self.step
        vary = vary_names(fields) if status == 200 else None
        fresh = freshness(fields, step.ttl_seconds, shared_entry=self.shared_entry) if vary is not None else None
        expected = _declared_length(fields)
        if vary is None or fresh is None or fresh.seconds is None or expected > step.max_entry_bytes:
            self._resolve(None)
            return
        self._expected = expected
        self._fields = tuple(field for field in fields if field[0].lower() not in _NOT_KEPT)
        self._fresh, self._vary = fresh, vary
        self._chunks, self._size = [], 0

    def complete(self) -> None:
        """The answer was relayed whole: keep it if it may be kept, and hand it to the waiters."""
        chunks, fresh = self._chunks, self._fresh
        self._chunks = None
        entry = None
        if chunks is not None and fresh is not None and fresh.seconds is not None:
            step = self.step
            now = step.clock()
            vary = self._vary
            variant = variant_key(self.primary, vary_values(self.incoming, vary)) if vary else self.primary
            entry = Entry(self._fields, b"".join(chunks), now, fresh.initial_age, now + fresh.seconds, vary, variant)
            step.save(self.primary, entry, fresh.seconds)
        self._resolve(entry)

    def close(self) -> None:
        """The request is over, however it ended: waiters still waiting go upstream themselves;
        the relay callbacks are let go (no reference cycle through the handler)."""
        self.closed = True
        self._chunks = None
        self._on_headers = self._on_body = None
        self._resolve(None)

    def _resolve(self, entry: Entry | None) -> None:
        leader = self.leader
        if leader is None:
            return
        self.leader = None
        if self.step.leaders.get(self.primary) is leader:
            del self.step.leaders[self.primary]
        if not leader.done():
            leader.set_result(entry)


def _declared_length(fields: Fields) -> int:
    """The answer's Content-Length, or -1 when it has none (chunked: judged as it arrives)."""
    for name, value in fields:
        if name.lower() == "content-length":
            return int(value) if value.isdigit() else -1
    return -1
