"""HTTP/1.1 on an upstream connection: the request head writer and the strict response parser.

:func:`request_head` formats a request line and header block, refusing a line break
smuggled into a value. A :class:`ResponseReader` parses one response from a
:class:`~gateway.upstream.connection.Connection` into two callables, ``on_fields(status,
reason, fields)`` and ``on_body(chunk)``, and watches the upstream's silence.
``on_body`` may return an awaitable: reading from the upstream pauses (the transport
stops reading) until it resolves, so a slow consumer pauses the upstream transfer
instead of filling memory. The parser is strict (SPEC §4, tests/e2e/test_upstream_wire.py):
a malformed status line or field, conflicting framing, a head over 64 KiB, a bad chunk
are failures, never guessed at.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence

from ..errors import BadGateway
from ..headers import Fields
from ..tables import BODILESS_STATUSES
from .connection import Connection, describe

__all__ = ["ResponseReader", "ResponseInterrupted", "request_head", "MAX_RESPONSE_HEAD_BYTES", "BODILESS_STATUSES"]

MAX_RESPONSE_HEAD_BYTES = 64 * 1024
# The field lines of a response head (each with its CRLF): a token, a colon and a value without
# control characters, or a folded continuation (RFC 9112 obs-fold). Checked once per head.
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_LINES = re.compile(r"(?:(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:|[ \t])[\t\x20-\x7e\x80-\xff]*\r\n)*")

OnFields = Callable[[int, str, Fields], None]
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


# Response parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


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
        self._state = _HEAD
        self._remaining = 0
        self._buffer = b""
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
        if self._state == _UNTIL_CLOSE and self.sink_error is None:
            self._state = _DONE
            self.complete = True
        self._end()

    # --- parsing ---

    def feed(self, data: bytes) -> None:
        self.received = True
        if self.done.done():
            return
        self.touch()
        self._buffer = self._buffer + data if self._buffer else data
        if not self._paused:
            self._parse()

    def _parse(self) -> None:
        """Consume the buffer as far as it goes; stop when it runs out, the consumer pauses, or it ends."""
        while True:
            state = self._state
            buffer = self._buffer
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0 or end > MAX_RESPONSE_HEAD_BYTES:
                    if end > MAX_RESPONSE_HEAD_BYTES or len(buffer) > MAX_RESPONSE_HEAD_BYTES:
                        self._fail("response head too large")
                    return
                self._buffer = buffer[end + 4:]
                if not self._head(buffer[:end]):
                    return
            elif state == _LENGTH or state == _CHUNK_DATA:
                if not buffer:
                    return
                take = self._remaining
                chunk = buffer if len(buffer) <= take else buffer[:take]
                self._buffer = buffer[len(chunk):]
                self._remaining = take - len(chunk)
                if self._remaining == 0:
                    self._state = _DONE if state == _LENGTH else _CHUNK_END
                if not self._deliver(chunk):
                    return
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        self._fail("chunk size line too long")
                    return
                size_text = buffer[:end].split(b";", 1)[0].strip()
                self._buffer = buffer[end + 2:]
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 16:
                    self._fail("bad chunk size")
                    return
                self._remaining = int(size_text, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    self._fail("chunk not followed by CRLF")
                    return
                self._buffer = buffer[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_RESPONSE_HEAD_BYTES:
                        self._fail("trailers too large")
                    return
                self._buffer = buffer[end + 2:]
                if end == 0:  # the blank line after the (ignored) trailer fields
                    self._state = _DONE
            elif state == _UNTIL_CLOSE:
                if not buffer:
                    return
                self._buffer = b""
                if not self._deliver(buffer):
                    return
            else:  # _DONE
                self.complete = self.sink_error is None
                if self._buffer:
                    self.keep_alive = False  # more bytes than the answer: the connection is not reusable
                self._end()
                return

    def _head(self, block: bytes) -> bool:
        """Read a status line and header fields; choose how the body is framed. False to stop parsing."""
        text = block.decode("latin-1")
        status_line, _, field_lines = text.partition("\r\n")
        parsed = _STATUS_LINE.fullmatch(status_line)
        if parsed is None:
            self._fail(f"bad status line {status_line[:80]!r}")
            return False
        minor, code_text, reason = parsed.groups()
        status = int(code_text)
        if status < 200:
            if status == 101:
                self._fail("101 Switching Protocols is not supported")
                return False
            return True  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if field_lines:
            field_lines += "\r\n"
            if field_lines[0] in " \t" or not _FIELD_LINES.fullmatch(field_lines):
                self._fail("malformed header field")
                return False
        fields: Fields = []
        lengths: list[str] = []
        transfer_encoding = connection = ""
        for line in field_lines.split("\r\n")[:-1]:
            if line[0] in " \t":  # obsolete line folding: part of the previous value
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}")
                continue
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            fields.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                lengths += value.split(",")
            elif lowered == "transfer-encoding":
                transfer_encoding += "," + value
            elif lowered == "connection":
                connection += "," + value.lower()
        self.keep_alive = minor == "1" and "close" not in connection
        if self.head_request or status in BODILESS_STATUSES:
            self._state = _DONE
        elif transfer_encoding:
            if lengths:
                self._fail("both Transfer-Encoding and Content-Length")
                return False
            if transfer_encoding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_CLOSE
                self.keep_alive = False
        elif lengths:
            distinct = {v.strip() for v in lengths}
            length_text = distinct.pop()
            if distinct or not length_text.isdigit() or len(length_text) > 18:
                self._fail("bad Content-Length")
                return False
            if len(lengths) > 1:  # one value downstream, however many came
                fields = [f for f in fields if f[0].lower() != "content-length"] + [("Content-Length", length_text)]
            self._remaining = int(length_text)
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._state = _UNTIL_CLOSE
            self.keep_alive = False
        self.status = status
        self.reason = reason = reason or ""
        self.started = True
        try:
            self.on_fields(status, reason, fields)  # type: ignore[misc]
        except Exception as exc:  # the consumer's failure is the caller's to report
            self.sink_error = exc
            self._end()
            return False
        return True

    def _deliver(self, chunk: bytes) -> bool:
        """Hand ``chunk`` on; False (and reading paused) while the consumer is not ready."""
        try:
            pending = self.on_body(chunk)  # type: ignore[misc]
        except Exception as exc:
            self.sink_error = exc
            self._end()
            return False
        if pending is None:
            return True
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
