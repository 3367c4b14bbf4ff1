"""One logical request to an upstream: target choice, tries with backoff, breaker and budget feed.

Used by the proxy (the answer streams to the client) and by aggregation (the
answer is collected), so the retry rules of SPEC §4 live in one place:

- a try that failed before the answer started (refused, connect error,
  timeout, reset) is retried when :class:`~gateway.upstream.retry.RetryPolicy`
  allows it, on another target where there is one;
- an answer whose status is in ``on_statuses`` is held back from the consumer
  (its body kept up to MAX_HELD_BYTES) when a retry is allowed; otherwise it is relayed;
- once the consumer has seen an answer's headers, nothing is retried.

A try's failure kind is its exception's class (:func:`~gateway.upstream.client.failure_kind`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tornado.httpclient import AsyncHTTPClient

from ..errors import BadGateway, GatewayError, UpstreamConnectError, UpstreamTimeout
from ..headers import Fields
from .client import ResponseInterrupted, failure_kind
from .pool import Target, UpstreamPool
from .request import FieldsCallback, GatewayRequest, GatewayResponse, StreamingCallback
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ..tracing import RequestTrace

__all__ = ["Timeouts", "ForwardEvents", "forward", "MAX_HELD_BYTES"]

MAX_HELD_BYTES = 64 * 1024  # a retryable error answer kept back, in case it has to be relayed after all

log = logging.getLogger("gateway.upstream")


@dataclass(frozen=True)
class Timeouts:
    """What each try is bounded by: the TCP/TLS connect, and the upstream's silence."""

    connect_seconds: float
    request_seconds: float


class ForwardEvents:
    """Hooks for what happens during a forward (metrics, logs). The defaults do nothing.

    ``trace``: the request's server span when tracing is on (None: decided at load, no span
    is made); each try is then fetched inside a client span of its own.
    """

    trace: RequestTrace | None = None

    def attempt(self, pool: UpstreamPool, target: Target) -> None:
        """A try is about to go to ``target``."""

    def finished(self, pool: UpstreamPool, target: Target, seconds: float, ok: bool) -> None:
        """A try ended (``ok``: the target answered and the answer was not a 5xx)."""

    def retrying(self, pool: UpstreamPool, target: Target, reason: str) -> None:
        """The try at ``target`` is being retried."""


_NO_EVENTS = ForwardEvents()


async def forward(
    pool: UpstreamPool,
    client: AsyncHTTPClient,
    request: GatewayRequest,
    events: ForwardEvents = _NO_EVENTS,
) -> GatewayResponse:
    """Send ``request`` to one of ``pool``'s targets, retrying as SPEC §4 allows; each try is one
    ``client.fetch(request)``.

    ``request.path`` is the path and query as the upstream should see them (a target's base
    path is put in front, per try); its ``fields_callback``/``streaming_callback`` receive the
    answer that is relayed (a held one never reaches them). Raises GatewayError (502/503/504)
    when no try succeeded, and ResponseInterrupted when an answer broke off after reaching them.
    The request's callbacks and body are let go when it returns (:meth:`GatewayRequest.release`).
    """
    try:
        retry = pool.retry
        method, path = request.method, request.path
        on_fields, on_body = request.fields_callback, request.streaming_callback
        assert on_fields is not None and on_body is not None
        replayable = request.body_stream is None
        may_hold = replayable and retry.config.attempts > 1 and bool(retry.config.on_statuses)
        retry.record_request()
        fetch = client.fetch if events.trace is None else events.trace.fetch_for(client, pool.name)
        tried: list[Target] = []
        attempt = 0
        last_error: GatewayError | None = None
        held: tuple[_HoldingSink, GatewayResponse] | None = None  # the last answer kept back for a retry
        while True:
            try:
                target = pool.pick(exclude=tried)
            except GatewayError:
                if held is not None and await held[0].replay(on_fields, on_body):
                    return held[1]  # no try can go out after all: the client gets the upstream's own answer
                if last_error is not None:
                    raise last_error from None  # the failure that led here says more than "no target left"
                raise
            attempt += 1
            events.attempt(pool, target)
            holding = _HoldingSink(on_fields, on_body, retry, method, attempt) if may_hold else None
            if holding is not None:
                request.fields_callback, request.streaming_callback = holding.on_headers, holding.on_body
            request.origin = target.origin
            request.target = target.config.base_path + path
            pool.begin(target)
            started = time.perf_counter()
            try:
                response: GatewayResponse = await fetch(request)  # type: ignore[assignment]
            except (UpstreamConnectError, UpstreamTimeout, BadGateway) as error:
                pool.end(target, ok=False)
                events.finished(pool, target, time.perf_counter() - started, False)
                failure, refused = failure_kind(error)
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
            ok = response.code < 500
            pool.end(target, ok=ok)
            events.finished(pool, target, time.perf_counter() - started, ok)
            if holding is None or not holding.held:
                return response
            held = (holding, response)
            last_error = None
            tried.append(target)
            events.retrying(pool, target, f"status {response.code}")
            await asyncio.sleep(retry.backoff_seconds(attempt, holding.retry_after))
    finally:
        request.release()


class _HoldingSink:
    """Passes an answer on, unless its status asks for a retry that the policy grants.

    A held answer is kept (up to MAX_HELD_BYTES of body), so that it can still be
    relayed if no further try can go out after all.
    """

    __slots__ = ("relay_fields", "relay_body", "retry", "method", "attempt", "held", "retry_after", "answer",
                 "chunks", "size")

    def __init__(self, on_fields: FieldsCallback, on_body: StreamingCallback, retry: RetryPolicy, method: str,
                 attempt: int) -> None:
        self.relay_fields = on_fields
        self.relay_body = on_body
        self.retry = retry
        self.method = method
        self.attempt = attempt
        self.held = False
        self.retry_after: str | None = None
        self.answer: tuple[int, str, Fields] | None = None
        self.chunks: list[bytes] = []
        self.size = 0

    def on_headers(self, status: int, reason: str, headers: Fields) -> Awaitable[None] | None:
        retry = self.retry
        if status in retry.config.on_statuses and retry.should_retry(
                method=self.method, attempt=self.attempt, refused=False, failure=None, status=status,
                replayable=True):
            self.held = True
            self.retry_after = next((v for n, v in headers if n.lower() == "retry-after"), None)
            self.answer = (status, reason, headers)
            return None
        return self.relay_fields(status, reason, headers)

    def on_body(self, chunk: bytes) -> Awaitable[None] | None:
        if not self.held:
            return self.relay_body(chunk)
        self.size += len(chunk)
        if self.size <= MAX_HELD_BYTES:
            self.chunks.append(chunk)
        return None

    async def replay(self, on_fields: FieldsCallback, on_body: StreamingCallback) -> bool:
        """Relay the held answer; False when it was too large to keep."""
        if self.answer is None or self.size > MAX_HELD_BYTES:
            return False
        stamping = on_fields(*self.answer)
        if stamping is not None:  # the consumer's head waits (a plugin's on_response)
            await stamping
        for chunk in self.chunks:
            on_body(chunk)  # the consumer flushes; the last flush is awaited by its finish()
        return True
