"""One logical request to an upstream: target choice, tries with backoff, breaker and budget feed.

Used by the proxy (the answer streams to the client) and by aggregation (the
answer is collected), so the retry rules of SPEC §4 live in one place:

- a try that failed before the answer started (refused, connect error,
  timeout, reset) is retried when :class:`~gateway.upstream.retry.RetryPolicy`
  allows it, on another target where there is one;
- an answer whose status is in ``on_statuses`` is held back from the sink
  (and its body dropped) when a retry is allowed; otherwise it is relayed;
- once the sink has seen an answer's headers, nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..errors import BadGateway, GatewayError, UpstreamConnectError, UpstreamTimeout
from ..headers import Fields
from .client import BodyStream, Exchange, ResponseInterrupted, ResponseSink, UpstreamClient
from .pool import Target, UpstreamPool
from .retry import RetryPolicy

__all__ = ["Timeouts", "ForwardEvents", "forward", "MAX_HELD_BYTES"]

MAX_HELD_BYTES = 64 * 1024  # a retryable error answer kept back, in case it has to be relayed after all

log = logging.getLogger("gateway.upstream")


@dataclass(frozen=True)
class Timeouts:
    """What each try is bounded by: the TCP/TLS connect, and the upstream's silence."""

    connect_seconds: float
    request_seconds: float


class ForwardEvents:
    """Hooks for what happens during a forward (metrics, logs). The defaults do nothing."""

    def attempt(self, pool: UpstreamPool, target: Target) -> None:
        """A try is about to go to ``target``."""

    def finished(self, pool: UpstreamPool, target: Target, seconds: float, ok: bool) -> None:
        """A try ended (``ok``: the target answered and the answer was not a 5xx)."""

    def retrying(self, pool: UpstreamPool, target: Target, reason: str) -> None:
        """The try at ``target`` is being retried."""


_NO_EVENTS = ForwardEvents()


async def forward(
    pool: UpstreamPool,
    client: UpstreamClient,
    *,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | BodyStream | None,
    sink: ResponseSink,
    timeouts: Timeouts,
    ssl_context: ssl.SSLContext | None = None,
    on_connection: Callable[[Callable[[], None]], None] | None = None,
    events: ForwardEvents = _NO_EVENTS,
) -> Exchange:
    """Send the request to one of ``pool``'s targets, retrying as SPEC §4 allows.

    ``path`` is the path and query as the upstream should see them (a target's
    base path is put in front). The client adds ``Host`` per target.
    Raises GatewayError (502/503/504) when no try succeeded, and
    ResponseInterrupted when an answer broke off after reaching the sink.
    """
    retry = pool.retry
    replayable = not isinstance(body, BodyStream)
    may_hold = replayable and retry.config.attempts > 1 and bool(retry.config.on_statuses)
    retry.record_request()
    tried: list[Target] = []
    attempt = 0
    last_error: GatewayError | None = None
    held: tuple[_HoldingSink, Exchange] | None = None  # the last answer kept back for a retry
    while True:
        try:
            target = pool.pick(exclude=tried)
        except GatewayError:
            if held is not None and held[0].replay(sink):
                return held[1]  # no try can go out after all: the client gets the upstream's own answer
            if last_error is not None:
                raise last_error from None  # the failure that led here says more than "no target left"
            raise
        attempt += 1
        events.attempt(pool, target)
        try_sink: ResponseSink | _HoldingSink = _HoldingSink(sink, retry, method, attempt) if may_hold else sink
        pool.begin(target)
        started = time.perf_counter()
        try:
            exchange = await client.send(
                target.origin, method, target.config.base_path + path, headers, body, try_sink,
                connect_timeout=timeouts.connect_seconds, request_timeout=timeouts.request_seconds,
                ssl_context=ssl_context, on_connection=on_connection,
                max_idle=pool.config.max_idle_connections,
            )
        except (UpstreamConnectError, UpstreamTimeout, BadGateway) as error:
            pool.end(target, ok=False)
            events.finished(pool, target, time.perf_counter() - started, False)
            refused = (isinstance(error, UpstreamConnectError) and error.refused) or (
                isinstance(error, UpstreamTimeout) and not error.sent)
            failure = ("timeout" if isinstance(error, UpstreamTimeout)
                       else "connect" if isinstance(error, UpstreamConnectError) else "reset")
            log.debug("upstream %s failed: %s", target.url, error.detail)  # the request's own line says the rest
            if not retry.should_retry(method=method, attempt=attempt, refused=refused, failure=failure,
                                      status=None, replayable=replayable):
                raise
            last_error = error
            held = None
            tried.append(target)
            events.retrying(pool, target, failure)
            await asyncio.sleep(retry.backoff_seconds(attempt))
            continue
        except ResponseInterrupted as error:
            # a client hanging up or breaking its body is not the target's fault: no verdict on it
            pool.end(target, ok=False if error.upstream_fault else None)
            events.finished(pool, target, time.perf_counter() - started, not error.upstream_fault)
            raise
        except BaseException:
            pool.end(target, ok=None)  # our own failure or a cancellation: release without a verdict on the target
            raise
        ok = exchange.status < 500
        pool.end(target, ok=ok)
        events.finished(pool, target, time.perf_counter() - started, ok)
        if not (isinstance(try_sink, _HoldingSink) and try_sink.held):
            return exchange
        held = (try_sink, exchange)
        last_error = None
        tried.append(target)
        events.retrying(pool, target, f"status {exchange.status}")
        await asyncio.sleep(retry.backoff_seconds(attempt, try_sink.retry_after))


class _HoldingSink:
    """Passes an answer on, unless its status asks for a retry that the policy grants.

    A held answer is kept (up to MAX_HELD_BYTES of body), so that it can still be
    relayed if no further try can go out after all.
    """

    __slots__ = ("sink", "retry", "method", "attempt", "held", "retry_after", "answer", "chunks", "size")

    def __init__(self, sink: ResponseSink, retry: RetryPolicy, method: str, attempt: int) -> None:
        self.sink = sink
        self.retry = retry
        self.method = method
        self.attempt = attempt
        self.held = False
        self.retry_after: str | None = None
        self.answer: tuple[int, str, Fields] | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    def on_headers(self, status: int, reason: str, headers: Fields) -> None:
        retry = self.retry
        if status in retry.config.on_statuses and retry.should_retry(
                method=self.method, attempt=self.attempt, refused=False, failure=None, status=status,
                replayable=True):
            self.held = True
            self.retry_after = next((v for n, v in headers if n.lower() == "retry-after"), None)
            self.answer = (status, reason, headers)
            return
        self.sink.on_headers(status, reason, headers)

    def on_body(self, chunk: bytes) -> Awaitable[None] | None:
        if not self.held:
            return self.sink.on_body(chunk)
        self.size += len(chunk)
        if self.size <= MAX_HELD_BYTES:
            self.chunks.append(chunk)
        return None

    def replay(self, sink: ResponseSink) -> bool:
        """Relay the held answer into ``sink``; False when it was too large to keep."""
        if self.answer is None or self.size > MAX_HELD_BYTES:
            return False
        sink.on_headers(*self.answer)
        for chunk in self.chunks:
            sink.on_body(chunk)  # the sink flushes; the last flush is awaited by its finish()
        return True
