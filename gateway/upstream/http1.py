"""HTTP/1.1 on an upstream connection: the request head writer and the strict response parser.

:func:`request_head` formats a request line and header block, refusing a line break
smuggled into a value. A :class:`ResponseReader` parses one response from a
:class:`~gateway.upstream.connection.Connection` into two callables, ``on_fields(status,
reason, fields)`` and ``on_body(chunk)``, and watches the upstream's silence.
Either may return an awaitable: reading from the upstream pauses (the transport
stops reading) until it resolves, so a slow consumer pauses the upstream transfer
instead of filling memory (and a head waits for a plugin's ``on_response`` that waits).
An awaitable that fails with a :class:`~gateway.errors.GatewayError` is the consumer's
own answer (it fails the exchange with it); any other failure means the client went
away. The bytes are parsed by :class:`~gateway.upstream.parser.ResponseParser`, which
is strict (SPEC §4, tests/unit/test_http1_parser.py, tests/e2e/test_upstream_wire.py): a
malformed status line or field, conflicting framing, a head over 64 KiB, a bad chunk are
failures, never guessed at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ..errors import BadGateway, GatewayError
from ..headers import Fields
from ..tables import BODILESS_STATUSES
from .connection import Connection, describe
from .parser import MAX_RESPONSE_HEAD_BYTES, Head, ResponseParser

__all__ = ["ResponseReader", "ResponseInterrupted", "request_head", "MAX_RESPONSE_HEAD_BYTES", "BODILESS_STATUSES"]

OnFields = Callable[[int, str, Fields], "Awaitable[None] | None"]
OnBody = Callable[[bytes], "Awaitable[None] | None"]


class ResponseInterrupted(Exception):
    """The exchange broke off after the response headers were handed on, or the client side
    gave it up (went away, or its streamed body broke its framing or stalled): nothing can be retried.

    ``upstream_fault`` is False when the client side caused it: not the target's fault, so it
    must not count against it (breaker, passive health, retries, error metrics).
    """

    def __init__(self, message: str, upstream_fault: bool = True) -> None:
        super().__init__(message)
        self.upstream_fault = upstream_fault


class ResponseReader:
    """Parses one response from a connection into ``on_fields``/``on_body``, and watches the
    upstream's silence: ``timeout`` bounds the wait for the head and any silence after it, not
    time spent waiting on the consumer (``waiting_on_client``)."""

    def __init__(self, conn: Connection, on_fields: OnFields, on_body: OnBody, timeout: float,
                 head_request: bool) -> None:
        self.conn = conn
        self.on_fields: OnFields | None = on_fields
        self.on_body: OnBody | None = on_body
        self.timeout = timeout
        self.head_request = head_request
        self.status = 0
        self.reason = ""
        self.started = False
        self.complete = False
        self.keep_alive = False
        self.timed_out = False
        self.received = False
        self.malformed = ""
        self.body_unsent = False
        self.waiting_on_client = False
        self.sink_error: BaseException | None = None
        self.done: asyncio.Future[None] = conn.loop.create_future()
        self._parser = ResponseParser(head_request)
        self._paused = False
        loop = self._loop = conn.loop
        self._last_activity = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_at(self._last_activity + timeout, self._check)
        conn.reader = self

    def touch(self) -> None:
        self._last_activity = self._loop.time()

    def stop(self) -> None:
        """The exchange is over: no more timer, and the consumer's callables are let go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.on_fields = self.on_body = None

    def abort(self) -> None:
        """The client went away: stop relaying and drop the upstream connection."""
        if not self.complete:
            self.sink_error = ResponseInterrupted("the client closed the connection", upstream_fault=False)
            self._end()

    def _check(self) -> None:
        self._timer = None
        now = self._loop.time()
        if self.waiting_on_client:
            self._last_activity = now
        elif now - self._last_activity >= self.timeout:
            self.timed_out = True
            self._end()
            return
        self._timer = self._loop.call_at(self._last_activity + self.timeout, self._check)

    def _end(self) -> None:
        """The exchange is over, one way or another: wake the exchange. The connection is closed
        unless the exchange finds it reusable."""
        if self.complete:
            self.conn.reader = None
        else:
            self.conn.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self) -> None:
        if self._paused:
            return  # what is buffered is still delivered once the client is ready (see _client_ready)
        if self._parser.until_close and self.sink_error is None and self._parser.eof():
            self.complete = True
        self._end()

    # --- parsing ---

    def feed(self, data: bytes) -> None:
        self.received = True
        if self.done.done():
            return
        self.touch()
        self._parser.feed(data)
        if not self._paused:
            self._parse()

    def _parse(self) -> None:
        """Hand on the parser's events; stop when the bytes run out, the consumer pauses, or it ends."""
        parser = self._parser
        while True:
            try:
                event = parser.step()
            except BadGateway as exc:
                self._fail(exc.log_message or exc.message)
                return
            if event is None:
                if parser.done:
                    self.complete = self.sink_error is None
                    self.keep_alive = parser.keep_alive
                    self._end()
                return
            if isinstance(event, bytes):
                if not self._deliver(event):
                    return
            elif not self._fields(event):
                return

    def _fields(self, head: Head) -> bool:
        """Hand the head on; False if the consumer failed, or is not ready (reading paused)."""
        self.status = head.status
        self.reason = head.reason
        self.keep_alive = head.keep_alive
        self.started = True
        try:
            pending = self.on_fields(head.status, head.reason, head.fields)  # type: ignore[misc]
        except Exception as exc:  # the consumer's failure is the caller's to report
            self.sink_error = exc
            self._end()
            return False
        return pending is None or self._wait_for(pending)

    def _deliver(self, chunk: bytes) -> bool:
        """Hand ``chunk`` on; False (and reading paused) while the consumer is not ready."""
        try:
            pending = self.on_body(chunk)  # type: ignore[misc]
        except Exception as exc:
            self.sink_error = exc
            self._end()
            return False
        return pending is None or self._wait_for(pending)

    def _wait_for(self, pending: Awaitable[None]) -> bool:
        """True when ``pending`` is already done; else pause reading until it is (False)."""
        if isinstance(pending, asyncio.Future) and pending.done() and not pending.cancelled() and \
                pending.exception() is None:
            return True  # already flushed: no need to pause
        self._paused = True
        self.waiting_on_client = True
        self.conn.transport.pause_reading()
        asyncio.ensure_future(pending).add_done_callback(self._client_ready)
        return False

    def _client_ready(self, pending: asyncio.Future[None]) -> None:
        self._paused = False
        self.waiting_on_client = False
        self.touch()
        if self.done.done():
            return
        error = None if pending.cancelled() else pending.exception()
        if isinstance(error, GatewayError):  # the consumer's own answer (a plugin's on_response raised)
            self.sink_error = error
            self._end()
            return
        if pending.cancelled() or error is not None:
            self.sink_error = ResponseInterrupted(
                f"the client went away: {describe(error) if error else 'cancelled'}", upstream_fault=False)
            self._end()
            return
        if self.conn.closing:  # the upstream closed while we waited: what is buffered may still finish it
            self._parse()
            if not self.done.done():
                self.connection_lost()
            return
        self.conn.transport.resume_reading()
        self._parse()

    def _fail(self, why: str) -> None:
        self.malformed = why
        self._end()


def request_head(method: str, target: str, host: str, fields: Sequence[tuple[str, str]], framing: str) -> bytes:
    """The request line and header block, checked for line breaks smuggled into values."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in fields]
    if framing:
        lines.append(framing)
    text = "\r\n".join(lines) + "\r\n\r\n"
    breaks = len(lines) + 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise BadGateway("a request header value contains a line break")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")
