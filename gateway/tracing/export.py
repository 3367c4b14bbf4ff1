"""The span exporter: a bounded queue on the loop, batches shipped over OTLP/HTTP (protobuf).

:class:`LoopExporter` is the SDK ``SpanProcessor`` of the gateway's tracer provider. Why not the
SDK's ``BatchSpanProcessor`` with its ``OTLPSpanExporter``: that one runs a thread of its own
and posts with ``requests``, outside the gateway's one ``AsyncHTTPClient`` (SPEC §1: every
outgoing call goes through it). Here everything happens on the loop:

- ``on_end`` (called by ``span.end()``) appends the finished span to a deque, or, when
  ``max_queue_spans`` are waiting already, drops it and counts it (``queue_full``). It never
  waits, allocates no task and makes no call: a request never pays for the collector.
- One export task wakes every ``export_interval_seconds``, or as soon as a full batch
  (``max_batch_spans``) is waiting, and sends what is queued in batches, one request at a time,
  with ``AsyncHTTPClient().fetch`` (``export_timeout_seconds`` for connect and answer). A
  batch is encoded (:mod:`gateway.tracing.wire`, held to the OTLP exporter's ``encode_spans``
  by a test) in chunks of :data:`ENCODE_CHUNK` spans, yielding to the loop between chunks, so
  encoding never holds the loop for long; the chunks' serialized ``ExportTraceServiceRequest``
  messages are joined (protobuf concatenation appends their repeated ``resource_spans``).
- A batch the collector refuses (a non-2xx answer), cannot take (down, reset) or does not
  answer in time is dropped and counted (``export_failed``); spans the collector reports as
  rejected in a partial success are counted too (``rejected``). Nothing is retried: while a
  collector is slow, spans pile up to ``max_queue_spans`` and the rest are dropped, so memory
  stays bounded. Its state changes are logged once each (warning when failing, info when back).
- :meth:`close` (shutdown, or a reload that changed ``tracing``) sends what is queued within
  ``export_timeout_seconds``; what is still left then is dropped and counted (``shutdown``).
  Requests admitted before a reload keep their runtime, and so this exporter: their spans,
  ending after it closed, are sent one ``export_interval_seconds`` later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..config import TracingConfig
from ..errors import GatewayError
from ..upstream.client import ResponseInterrupted
from .wire import encode_request

__all__ = ["LoopExporter", "ENCODE_CHUNK", "DropReason"]

log = logging.getLogger("gateway.tracing")

ENCODE_CHUNK = 64  # spans encoded per turn of the loop (about 1-2 ms of CPU)
CONTENT_TYPE = "application/x-protobuf"

DropReason = str  # queue_full | export_failed | rejected | shutdown


class LoopExporter(SpanProcessor):
    """Queue finished spans (bounded) and export them in batches from a task on the loop.

    ``on_dropped(reason, count)`` and ``on_exported(count)`` report to the metrics. :meth:`start`
    must be called in the running loop before spans are exported (spans that end before are kept,
    within the bound).
    """

    def __init__(self, config: TracingConfig, *, on_dropped: Callable[[DropReason, int], None] | None = None,
                 on_exported: Callable[[int], None] | None = None) -> None:
        self.endpoint = config.otlp_endpoint
        self.max_queue = config.max_queue_spans
        self.max_batch = config.max_batch_spans
        self.interval_seconds = config.export_interval_seconds
        self.timeout_seconds = config.export_timeout_seconds
        self.queue: deque[ReadableSpan] = deque()
        self._on_dropped = on_dropped or _ignore_drop
        self._on_exported = on_exported or _ignore_count
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._late: asyncio.Future[None] | None = None
        self._failing = False  # the last export failed: logged once until one succeeds again

    # --- SpanProcessor: called by the SDK, on the loop, from span.end() ---

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        queue = self.queue
        if len(queue) >= self.max_queue:
            self._on_dropped("queue_full", 1)
            return
        queue.append(span)
        if self._closed:
            if self._late is None:  # a request admitted before a reload replaced this exporter
                self._late = asyncio.ensure_future(self._export_late())
        elif len(queue) == self.max_batch and self._wake is not None:
            self._wake.set()

    def shutdown(self) -> None:
        """The SDK's synchronous shutdown: nothing to do here (:meth:`close` flushes, on the loop)."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Not supported synchronously (the export runs on the loop): see :meth:`close`."""
        return False

    # --- the export task ---

    def start(self) -> None:
        """Start the export task in the running loop (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Export what is queued, within ``export_timeout_seconds``; drop and count the rest."""
        self._closing = True
        task = self._task
        if task is not None and self._wake is not None:
            self._wake.set()
            done, _ = await asyncio.wait((task,), timeout=self.timeout_seconds)
            if not done:
                task.cancel()
                await asyncio.wait((task,))
            elif not task.cancelled() and task.exception() is not None:
                log.warning("span export task failed", exc_info=task.exception())
        self._closed = True
        if self.queue:
            self._on_dropped("shutdown", len(self.queue))
            self.queue.clear()

    async def _export_late(self) -> None:
        """Spans that ended after :meth:`close`: those of requests still in flight when a reload
        replaced this exporter (they keep their runtime). Sent one interval later, in one go."""
        try:
            await asyncio.sleep(self.interval_seconds)
            while self.queue:
                await self.export(self._take())
        finally:
            self._late = None

    async def _run(self) -> None:
        wake = self._wake
        if wake is None:
            return
        while not self._closing:
            try:
                await asyncio.wait_for(wake.wait(), self.interval_seconds)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            while self.queue:  # everything queued now, in batches; new spans wait for the next round
                await self.export(self._take())
        while self.queue:  # closing: what is left, until close()'s time is over
            await self.export(self._take())

    def _take(self) -> list[ReadableSpan]:
        queue = self.queue
        return [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]

    async def export(self, spans: Sequence[ReadableSpan]) -> bool:
        """Send one batch; True when the collector took it. A failure is counted, never raised."""
        body = await encode(spans)
        request = HTTPRequest(self.endpoint, method="POST", body=body, headers={"Content-Type": CONTENT_TYPE},
                              connect_timeout=self.timeout_seconds, request_timeout=self.timeout_seconds)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (GatewayError, ResponseInterrupted, OSError) as exc:
            detail = exc.detail if isinstance(exc, GatewayError) else str(exc)
            return self._failed(len(spans), detail)
        if not 200 <= response.code < 300:
            return self._failed(len(spans), f"answered {response.code}")
        rejected = _rejected(response.body)
        if rejected:
            self._on_dropped("rejected", rejected)
        self._on_exported(len(spans) - rejected)
        if self._failing:
            self._failing = False
            log.info("span export to %s works again", self.endpoint)
        return True

    def _failed(self, count: int, why: str) -> bool:
        self._on_dropped("export_failed", count)
        if not self._failing:
            self._failing = True
            log.warning("span export to %s failed (%s): %d span(s) dropped, and later failures are only counted "
                        "(gateway_spans_dropped_total)", self.endpoint, why, count)
        return False


async def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """One ``ExportTraceServiceRequest`` for ``spans``, encoded :data:`ENCODE_CHUNK` spans per turn of
    the loop; the serialized chunks concatenate into one message (repeated fields append)."""
    parts = []
    for start in range(0, len(spans), ENCODE_CHUNK):
        if start:
            await asyncio.sleep(0)
        parts.append(encode_request(spans[start:start + ENCODE_CHUNK]))
    return b"".join(parts)


def _rejected(body: bytes | None) -> int:
    """Spans a collector's partial success says it rejected (0 for an empty or unreadable answer)."""
    if not body:
        return 0
    try:
        answer = ExportTraceServiceResponse.FromString(body)
    except DecodeError:  # an answer we cannot read rejects nothing
        return 0
    return int(answer.partial_success.rejected_spans)


def _ignore_drop(reason: DropReason, count: int) -> None:
    pass


def _ignore_count(count: int) -> Any:
    return None
