"""The only HTTP client on the proxy path: pooled keep-alive HTTP/1.1 on asyncio transports.

Why not ``AsyncHTTPClient``: the simple client opens a new connection per
request, and the curl client takes no ``body_producer`` and gives a streamed
download no backpressure (tornado#324). The gateway needs both pooled
connections *and* bounded memory for large bodies. Why not Tornado's
``HTTP1Connection`` over an ``IOStream`` (the first version): an IOStream
re-registers its socket with the event loop for every read and write, which
cost more CPU than the rest of the upstream leg together; an asyncio protocol
stays registered while the connection lives, and under uvloop reads and writes
happen in C (measured in README, Performance). So each connection is an
:class:`asyncio.Protocol` speaking HTTP/1.1, one exchange at a time, and idle
connections are kept per origin and TLS context (SPEC §4: a connection opened
under one upstream's trust store or client certificate is never handed to an
upstream with other TLS settings; :mod:`gateway.upstream.tls` builds one context
per distinct setting, so the context object stands for them):

- request bodies are either ``bytes`` (buffered, replayable) or a
  :class:`BodyStream` fed chunk by chunk from the client connection; each chunk
  is written before the next is taken, waiting while the transport's buffer is
  above its high-water mark, so a fast client cannot fill memory;
- response bodies go to a :class:`ResponseSink` whose ``on_body`` may return an
  awaitable: reading from the upstream pauses until it resolves, so a slow
  client pauses the upstream transfer instead of filling memory;
- an idle connection whose server closes it is noticed by the event loop and
  dropped; a kept connection that turns out dead before any byte of the answer
  is retried once on a fresh connection when the method is idempotent.

Errors are translated here, once: connect-phase failures raise
:class:`~gateway.errors.UpstreamConnectError` (``refused=True``: nothing was
sent) or :class:`~gateway.errors.UpstreamTimeout` (``sent=False``); failures
after the request went out raise :class:`~gateway.errors.BadGateway` or
:class:`~gateway.errors.UpstreamTimeout`; failures after the sink saw the
response headers raise :class:`ResponseInterrupted`. An error's ``message`` is
what the client is shown and names nothing internal; its ``log_message`` has the
origin and the socket or TLS library's words (SPEC §4).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from tornado.iostream import StreamClosedError

from ..config import Origin
from ..errors import BadGateway, UpstreamConnectError, UpstreamTimeout
from ..headers import Fields
from ..tables import IDEMPOTENT_METHODS
from .tls import system_context

__all__ = ["UpstreamClient", "BodyStream", "ResponseSink", "ResponseInterrupted", "Exchange"]

MAX_RESPONSE_HEAD_BYTES = 64 * 1024
_WRITE_HIGH_WATER = 256 * 1024  # a streamed upload waits while more than this is unsent
_BODILESS_STATUSES = frozenset({204, 304})
# The field lines of a response head (each with its CRLF): a token, a colon and a value without
# control characters, or a folded continuation (RFC 9112 obs-fold). Checked once per head.
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_LINES = re.compile(r"(?:(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:|[ \t])[\t\x20-\x7e\x80-\xff]*\r\n)*")


class ResponseSink(Protocol):
    """Where an upstream answer goes. ``on_body`` may return an awaitable to pause the upstream."""

    def on_headers(self, status: int, reason: str, headers: Fields) -> None: ...

    def on_body(self, chunk: bytes) -> Awaitable[None] | None: ...


class ResponseInterrupted(Exception):
    """The exchange broke off after the sink received the response headers, or the client side
    gave it up (went away, or its streamed body broke its framing or stalled): nothing can be retried.

    ``upstream_fault`` is False when the client side caused it: not the target's fault, so it
    must not count against it (breaker, passive health, retries, error metrics).
    """

    def __init__(self, message: str, upstream_fault: bool = True) -> None:
        super().__init__(message)
        self.upstream_fault = upstream_fault


class BodyStream:
    """A request body handed from the client connection to the upstream one, chunk by chunk.

    :meth:`put` returns once its chunk is queued, that is once the consumer has
    taken the previous one, so at most one chunk waits here while another is
    being written: the client is read as fast as the upstream accepts.
    ``length``: the declared length, or None to send the body chunked.
    """

    def __init__(self, length: int | None = None) -> None:
        self.length = length
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._aborted = False
        self._producer_waiting = False

    async def put(self, chunk: bytes) -> None:
        if not self._aborted:
            self._producer_waiting = self._queue.full()
            try:
                await self._queue.put(chunk)
            finally:
                self._producer_waiting = False

    def close(self) -> None:
        """The body is complete."""
        if self._aborted:
            return
        if self._queue.full():  # the last chunk is not taken yet: the end marker queues behind it
            asyncio.ensure_future(self._queue.put(None))
        else:
            self._queue.put_nowait(None)

    def abort(self) -> None:
        """Either side gave up: release a waiting producer, drop what is queued, wake a waiting consumer."""
        # A full queue does not mean that no consumer waits: get() may have been woken by the
        # queued chunk and not run yet; draining steals that chunk, so it must be woken again.
        producer_waiting = self._producer_waiting
        self._aborted = True
        while not self._queue.empty():
            self._queue.get_nowait()
        if not producer_waiting:
            self._queue.put_nowait(None)  # wakes get(), which then raises
        # else the drain released the producer, whose chunk wakes get() in turn

    @property
    def waiting(self) -> bool:
        """A chunk waits for the consumer to take the one before: the upstream side is the slow one."""
        return self._producer_waiting

    @property
    def aborted(self) -> bool:
        """The client side gave the body up: it must not be sent on, nor finished as if complete."""
        return self._aborted

    async def get(self) -> bytes | None:
        """The next chunk, or None at the end of the body. Raises StreamClosedError once aborted,
        so a body cut short is never finished as if complete."""
        if not self._aborted:
            chunk = await self._queue.get()
            if not self._aborted:
                return chunk
        raise StreamClosedError()


class Exchange:
    """What :meth:`UpstreamClient.send` reports about a finished exchange."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


_JOIN_BODY_BYTES = 64 * 1024  # a buffered body up to this size goes out in the same write as the head

PoolKey = tuple[Origin, "ssl.SSLContext | None"]  # the context is None for an http:// origin


class UpstreamClient:
    """Keep-alive connection pools, one per (origin, TLS context), and the one ``send()`` the proxy uses."""

    def __init__(self, *, idle_timeout_seconds: float = 50.0) -> None:
        self.idle_timeout_seconds = idle_timeout_seconds
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | BodyStream | None,
        sink: ResponseSink,
        *,
        connect_timeout: float,
        request_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        on_connection: Callable[[Callable[[], None]], None] | None = None,
        max_idle: int = 64,
    ) -> Exchange:
        """Send one request to ``origin`` and relay the answer into ``sink``.

        ``headers`` are sent as they are, after ``Host`` (the origin's) and before the
        body's framing (Content-Length, or chunked for a stream of unknown length).
        ``request_timeout`` bounds the wait for the response headers and any
        silence of the upstream afterwards (time spent waiting on the client is
        not counted). ``on_connection`` receives a callable that aborts the
        exchange, for a client that went away. ``ssl_context`` is the TLS setting of an
        ``https://`` origin (None: the system trust store); only connections opened with
        the same context are reused. At most ``max_idle`` idle connections to ``origin``
        under that context are kept afterwards. Raises the errors listed in the
        module docstring.
        """
        if isinstance(body, BodyStream):
            framing = "Transfer-Encoding: chunked" if body.length is None else f"Content-Length: {body.length}"
        elif body or method in ("POST", "PUT", "PATCH"):
            framing = f"Content-Length: {len(body or b'')}"
        else:
            framing = ""
        head = _request_head(method, target, origin.netloc, headers, framing)
        if origin.scheme != "https":
            ssl_context = None
        elif ssl_context is None:
            ssl_context = system_context()
        conn = self._take_idle((origin, ssl_context))
        reused = conn is not None
        if conn is None:
            conn = await self._connect(origin, connect_timeout, ssl_context)
        try:
            return await self._exchange(origin, conn, reused, method, head, body, sink,
                                        request_timeout, on_connection, max_idle)
        except _StaleConnection:
            # A kept-alive connection died before answering. Only a request that is safe to
            # repeat (or was never written) goes again, once, on a fresh connection.
            conn = await self._connect(origin, connect_timeout, ssl_context)
            return await self._exchange(origin, conn, False, method, head, body, sink,
                                        request_timeout, on_connection, max_idle)

    def close(self) -> None:
        """Close every idle connection and stop sweeping."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.idle_in = None
                conn.close()
        self._idle.clear()

    # --- connections ---

    async def _connect(self, origin: Origin, timeout: float, ssl_context: ssl.SSLContext | None) -> _Connection:
        """A new connection, TLS when ``ssl_context`` is given (send() gives one exactly for https)."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                _Connection, origin.host, origin.port, ssl=ssl_context,
                server_hostname=origin.host if ssl_context is not None else None), timeout)
        except TimeoutError:
            raise UpstreamTimeout(log_message=f"connecting to {origin} timed out after {timeout:g}s",
                                  sent=False) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(log_message=f"cannot connect to {origin}: {_describe(exc)}",
                                       refused=True) from exc
        conn.pool_key = (origin, ssl_context)
        return conn

    def _take_idle(self, key: PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            conn.idle_in = None
            if not conn.closing:
                return conn
        return None

    def _release(self, origin: Origin, conn: _Connection, max_idle: int) -> None:
        """Keep ``conn`` for reuse in the pool it was opened for (its origin and TLS context)."""
        idle = self._idle.setdefault(conn.pool_key, [])
        if self._closed or len(idle) >= max_idle or conn.closing:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        conn.idle_in = idle
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.idle_timeout_seconds / 2, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_event_loop()
        deadline = loop.time() - self.idle_timeout_seconds
        for idle in self._idle.values():
            while idle and idle[0].idle_since < deadline:
                conn = idle.pop(0)
                conn.idle_in = None
                conn.close()
        if any(self._idle.values()) and not self._closed:
            self._sweeper = loop.call_later(self.idle_timeout_seconds / 2, self._sweep)

    # --- one exchange ---

    async def _exchange(
        self, origin: Origin, conn: _Connection, reused: bool, method: str, head: bytes,
        body: bytes | BodyStream | None, sink: ResponseSink, request_timeout: float,
        on_connection: Callable[[Callable[[], None]], None] | None, max_idle: int,
    ) -> Exchange:
        reader = _ResponseReader(conn, sink, request_timeout, method == "HEAD")
        if on_connection is not None:
            on_connection(reader.abort)
        released = False
        try:
            if isinstance(body, BodyStream):
                if body.aborted:  # the client gave up while this connection was being found
                    raise ResponseInterrupted("the client's request body broke off before it was sent",
                                              upstream_fault=False)
                conn.write(head)
                await self._write_stream(conn, reader, body, origin)
            elif body and len(body) > _JOIN_BODY_BYTES:
                conn.write(head)  # a large buffered body is not copied again just to join it to the head
                conn.write(body)
            else:
                conn.write(head + body if body else head)  # one write, one system call
            reader.touch()
            await reader.done
            if reader.sink_error is not None:
                raise reader.sink_error
            if reader.complete:  # the reader has let go of the connection (see _ResponseReader._end)
                if reader.keep_alive and not reader.body_unsent:
                    released = True
                    self._release(origin, conn, max_idle)
                return Exchange(reader.status)
            if reader.started:
                why = "timed out" if reader.timed_out else "closed the connection"
                raise ResponseInterrupted(f"{origin} {why} while sending the response body")
            if reader.timed_out:
                raise UpstreamTimeout(log_message=f"{origin} did not answer within {request_timeout:g}s", sent=True)
            if reader.malformed:
                raise BadGateway("the upstream sent an invalid answer",
                                 log_message=f"{origin} answered malformed HTTP: {reader.malformed}")
            if reused and not reader.received and not isinstance(body, BodyStream) and (
                    method in IDEMPOTENT_METHODS):
                raise _StaleConnection()
            raise BadGateway("the upstream closed the connection before answering",
                             log_message=f"{origin} closed the connection before answering")
        finally:
            reader.stop()
            if isinstance(body, BodyStream):
                body.abort()
            if not released:
                conn.close()

    async def _write_stream(self, conn: _Connection, reader: _ResponseReader, body: BodyStream,
                            origin: Origin) -> None:
        """Write a streamed request body, chunk-encoded when its length is unknown; stop early
        if the upstream already answered (the rest of the body is then left unsent)."""
        declared = -1 if body.length is None else body.length
        chunked = declared < 0
        written = 0
        reader.waiting_on_client = True
        try:
            while not reader.done.done():
                try:
                    chunk = await body.get()
                except StreamClosedError:
                    reader.body_unsent = True
                    conn.close()  # the client went away mid-body: the upstream must not see it as complete
                    raise ResponseInterrupted("the client's request body broke off",
                                              upstream_fault=False) from None
                reader.waiting_on_client = False
                if reader.done.done():
                    break
                if chunk is None:
                    if chunked:
                        conn.write(b"0\r\n\r\n")
                    elif written != declared:
                        raise BadGateway("the request body was shorter than its Content-Length",
                                         log_message=f"request to {origin} could not be written: "
                                                     f"{written} of {declared} declared body bytes")
                    return
                if not chunk:
                    continue
                written += len(chunk)
                if chunked:
                    conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                elif written > declared:
                    raise BadGateway("the request body was longer than its Content-Length",
                                     log_message=f"request to {origin} could not be written: "
                                                 f"more than {declared} declared body bytes")
                else:
                    conn.write(chunk)
                reader.touch()
                await conn.drain()
                reader.waiting_on_client = True
            reader.body_unsent = True  # the answer came before the whole body went out
        finally:
            reader.waiting_on_client = False


class _StaleConnection(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One upstream connection: idle in its origin's list, or carrying one exchange."""

    transport: asyncio.Transport
    pool_key: PoolKey  # set by UpstreamClient._connect: the only pool this connection may idle in

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reader: _ResponseReader | None = None
        self.closing = False
        self.idle_in: list[_Connection] | None = None
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each message goes in one write
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)  # type: ignore[attr-defined]

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark of unsent bytes."""
        if self._drain is not None:
            await self._drain

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is None:
            self.close()  # an idle connection has nothing to say: whatever this is, it is not ours
        else:
            reader.feed(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.resume_writing()
        if self.idle_in is not None:
            try:
                self.idle_in.remove(self)
            except ValueError:
                pass
            self.idle_in = None
        if self.reader is not None:
            self.reader.connection_lost()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()


# Response parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class _ResponseReader:
    """Parses one response from a connection into a sink, and watches the upstream's silence."""

    def __init__(self, conn: _Connection, sink: ResponseSink, timeout: float, head_request: bool) -> None:
        self.conn = conn
        self.sink = sink
        self.timeout = timeout
        self.head_request = head_request
        self.status = 0
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
        """The exchange is over, one way or another: wake send(). The connection is closed unless
        send() finds it reusable."""
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
        """Consume the buffer as far as it goes; stop when it runs out, the sink pauses, or it ends."""
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
        if self.head_request or status in _BODILESS_STATUSES:
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
        self.started = True
        try:
            self.sink.on_headers(status, reason, fields)
        except Exception as exc:  # the sink's failure is the caller's to report
            self.sink_error = exc
            self._end()
            return False
        return True

    def _deliver(self, chunk: bytes) -> bool:
        """Hand ``chunk`` to the sink; False (and reading paused) while the sink is not ready."""
        try:
            pending = self.sink.on_body(chunk)
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
                f"the client went away: {_describe(error) if error else 'cancelled'}", upstream_fault=False)
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


def _request_head(method: str, target: str, host: str, fields: Sequence[tuple[str, str]], framing: str) -> bytes:
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


def _describe(exc: BaseException) -> str:
    """A failure in words for the log: the errno's own ("Connection refused", whatever the event loop
    wrapped it in), the TLS library's message, or the exception's."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
