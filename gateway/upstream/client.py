"""The only HTTP client on the proxy path: pooled keep-alive HTTP/1.1 on Tornado's HTTP1Connection.

Why not ``AsyncHTTPClient``: the simple client opens a new connection per
request, and the curl client takes no ``body_producer`` and gives a streamed
download no backpressure (tornado#324). The gateway needs both pooled
connections *and* bounded memory for large bodies, so it speaks HTTP/1.1 over
Tornado's own :class:`~tornado.http1connection.HTTP1Connection`, one exchange
at a time per connection, and keeps idle connections per origin:

- request bodies are either ``bytes`` (buffered, replayable) or a
  :class:`BodyStream` fed chunk by chunk from the client connection; each chunk
  is awaited until written upstream, so a fast client cannot fill memory;
- response bodies go to a :class:`ResponseSink` whose ``on_body`` may return an
  awaitable: the upstream is not read again until it resolves, so a slow client
  pauses the upstream transfer instead of filling memory;
- an idle connection whose server closes it is noticed by the IOLoop and
  dropped; a kept connection that turns out dead before any byte of the answer
  is retried once on a fresh connection when the method is idempotent.

Errors are translated here, once: connect-phase failures raise
:class:`~gateway.errors.UpstreamConnectError` (``refused=True``: nothing was
sent) or :class:`~gateway.errors.UpstreamTimeout` (``sent=False``); failures
after the request went out raise :class:`~gateway.errors.BadGateway` or
:class:`~gateway.errors.UpstreamTimeout`; failures after the sink saw the
response headers raise :class:`ResponseInterrupted`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from ..config import Origin
from ..errors import BadGateway, UpstreamConnectError, UpstreamTimeout

__all__ = ["UpstreamClient", "BodyStream", "ResponseSink", "ResponseInterrupted", "Exchange", "pin_nodelay"]

log = logging.getLogger("gateway.upstream")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_PARAMS = HTTP1ConnectionParameters(
    no_keep_alive=False,
    chunk_size=64 * 1024,
    max_header_size=64 * 1024,
    max_body_size=1 << 62,  # bodies stream through; size policy belongs to the proxy, not the transport
    decompress=False,
)


class ResponseSink(Protocol):
    """Where an upstream answer goes. ``on_body`` may return an awaitable to pause the upstream."""

    def on_headers(self, status: int, reason: str, headers: httputil.HTTPHeaders) -> None: ...

    def on_body(self, chunk: bytes) -> Awaitable[None] | None: ...


class ResponseInterrupted(Exception):
    """The exchange broke off after the sink received the response headers: nothing can be retried.

    ``upstream_fault`` is False when the client side went away (not the target's fault).
    """

    def __init__(self, message: str, upstream_fault: bool = True) -> None:
        super().__init__(message)
        self.upstream_fault = upstream_fault


class BodyStream:
    """A request body handed from the client connection to the upstream one, chunk by chunk.

    :meth:`put` returns once its chunk is queued, that is once the consumer has
    taken the previous one, so at most one chunk waits here while another is
    being written: the client is read as fast as the upstream accepts.
    """

    def __init__(self) -> None:
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


class UpstreamClient:
    """Keep-alive connection pools, one per origin, and the one ``send()`` the proxy uses."""

    def __init__(self, *, idle_timeout_seconds: float = 50.0) -> None:
        self.idle_timeout_seconds = idle_timeout_seconds
        self._idle: dict[Origin, list[tuple[IOStream, float]]] = {}
        self._tcp = TCPClient()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: httputil.HTTPHeaders,
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

        ``request_timeout`` bounds the wait for the response headers and any
        silence of the upstream afterwards (time spent waiting on the client is
        not counted). ``on_connection`` receives a callable that aborts the
        exchange, for a client that went away. At most ``max_idle`` idle
        connections to ``origin`` are kept afterwards. Raises the errors listed in the
        module docstring.
        """
        stream, reused = self._take_idle(origin)
        if stream is None:
            stream = await self._connect(origin, connect_timeout, ssl_context)
        try:
            return await self._exchange(origin, stream, reused, method, target, headers, body, sink,
                                        request_timeout, on_connection, max_idle)
        except _StaleConnection:
            # A kept-alive connection died before answering. Only a request that is safe to
            # repeat (or was never written) goes again, once, on a fresh connection.
            stream = await self._connect(origin, connect_timeout, ssl_context)
            return await self._exchange(origin, stream, False, method, target, headers, body, sink,
                                        request_timeout, on_connection, max_idle)

    def close(self) -> None:
        """Close every idle connection and stop sweeping."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for streams in self._idle.values():
            for stream, _ in streams:
                stream.close()
        self._idle.clear()

    # --- connections ---

    async def _connect(self, origin: Origin, timeout: float, ssl_context: ssl.SSLContext | None) -> IOStream:
        try:
            stream = await self._tcp.connect(
                origin.host, origin.port, ssl_options=ssl_context if origin.scheme == "https" else None,
                timeout=timeout, max_buffer_size=_PARAMS.chunk_size * 16,
            )
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {origin} timed out", sent=False) from None
        except StreamClosedError as exc:
            reason = exc.real_error or exc
            raise UpstreamConnectError(f"cannot connect to {origin}: {_describe(reason)}", refused=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to {origin}: {_describe(exc)}", refused=True) from exc
        pin_nodelay(stream)
        return stream

    def _take_idle(self, origin: Origin) -> tuple[IOStream | None, bool]:
        idle = self._idle.get(origin)
        while idle:
            stream, _ = idle.pop()
            stream.set_close_callback(None)
            if not stream.closed() and not stream._read_buffer_size:
                return stream, True
            stream.close()
        return None, False

    def _release(self, origin: Origin, stream: IOStream, max_idle: int) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= max_idle or stream.closed():
            stream.close()
            return
        entry = (stream, IOLoop.current().time())
        idle.append(entry)
        stream.set_close_callback(lambda: _discard(idle, entry))
        if self._sweeper is None:
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_event_loop()
        self._sweeper = loop.call_later(self.idle_timeout_seconds / 2, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = IOLoop.current().time() - self.idle_timeout_seconds
        for idle in self._idle.values():
            while idle and idle[0][1] < deadline:
                stream, _ = idle.pop(0)
                stream.set_close_callback(None)
                stream.close()
        if any(self._idle.values()) and not self._closed:
            self._schedule_sweep()

    # --- one exchange ---

    async def _exchange(
        self, origin: Origin, stream: IOStream, reused: bool, method: str, target: str,
        headers: httputil.HTTPHeaders, body: bytes | BodyStream | None, sink: ResponseSink,
        request_timeout: float, on_connection: Callable[[Callable[[], None]], None] | None, max_idle: int,
    ) -> Exchange:
        conn = HTTP1Connection(stream, True, _PARAMS)
        reader = _ResponseReader(sink, stream, request_timeout)
        if on_connection is not None:
            on_connection(reader.abort)
        written = False
        try:
            if isinstance(body, BodyStream):
                conn.write_headers(httputil.RequestStartLine(method, target, "HTTP/1.1"), headers)
                written = True
                reader.waiting_on_client = True
                while (chunk := await body.get()) is not None:
                    reader.waiting_on_client = False
                    await conn.write(chunk)
                    reader.touch()
                    reader.waiting_on_client = True
                reader.waiting_on_client = False
            else:
                if body:
                    headers["Content-Length"] = str(len(body))
                conn.write_headers(httputil.RequestStartLine(method, target, "HTTP/1.1"), headers, body or None)
                written = True  # the upstream may have read it: a POST must not go again on a fresh connection
            conn.finish()
            reader.touch()
            open_after = await conn.read_response(reader)
        except StreamClosedError:
            open_after = False
        except httputil.HTTPOutputError as exc:
            reader.stop()
            stream.close()
            raise BadGateway(f"request to {origin} could not be written: {exc}") from None
        finally:
            reader.stop()
            if isinstance(body, BodyStream):
                body.abort()
        if reader.sink_error is not None:
            stream.close()
            raise reader.sink_error
        if reader.complete:
            if open_after and reader.keep_alive:
                self._release(origin, stream, max_idle)
            else:
                stream.close()
            return Exchange(reader.status)
        stream.close()
        if reader.started:
            why = "timed out" if reader.timed_out else "closed the connection"
            raise ResponseInterrupted(f"{origin} {why} while sending the response body")
        if reader.timed_out:
            raise UpstreamTimeout(f"{origin} did not answer within {request_timeout:g}s", sent=True)
        if reused and (method in IDEMPOTENT_METHODS or not written) and not isinstance(body, BodyStream):
            raise _StaleConnection()
        raise BadGateway(f"{origin} closed the connection or answered malformed HTTP")


class _StaleConnection(Exception):
    pass


class _ResponseReader(httputil.HTTPMessageDelegate):
    """Relays one response into a sink and watches the upstream's silence."""

    def __init__(self, sink: ResponseSink, stream: IOStream, timeout: float) -> None:
        self.sink = sink
        self.stream = stream
        self.timeout = timeout
        self.status = 0
        self.started = False
        self.complete = False
        self.keep_alive = False
        self.timed_out = False
        self.waiting_on_client = False
        self.sink_error: BaseException | None = None
        self._loop = IOLoop.current()
        self._last_activity = self._loop.time()
        self._timer: object | None = self._loop.call_at(self._last_activity + timeout, self._check)

    def touch(self) -> None:
        self._last_activity = self._loop.time()

    def stop(self) -> None:
        if self._timer is not None:
            self._loop.remove_timeout(self._timer)
            self._timer = None

    def abort(self) -> None:
        """The client went away: stop relaying and drop the upstream connection."""
        if not self.complete:
            self.sink_error = ResponseInterrupted("the client closed the connection", upstream_fault=False)
            self.stream.close()

    def _check(self) -> None:
        self._timer = None
        now = self._loop.time()
        if self.waiting_on_client:
            self._last_activity = now
        elif now - self._last_activity >= self.timeout:
            self.timed_out = True
            self.stream.close()
            return
        self._timer = self._loop.call_at(self._last_activity + self.timeout, self._check)

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        if not isinstance(start_line, httputil.ResponseStartLine) or start_line.code < 200:
            return  # 1xx: Tornado reads the real answer next
        self.touch()
        self.status = start_line.code
        connection = headers.get("Connection", "").lower()
        self.keep_alive = start_line.version == "HTTP/1.1" and "close" not in connection
        self.started = True
        try:
            self.sink.on_headers(start_line.code, start_line.reason, headers)
        except Exception as exc:  # the sink's failure is the caller's to report, not Tornado's to log
            self.sink_error = exc
            self.stream.close()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.sink_error is not None:
            return None
        self.touch()
        try:
            pending = self.sink.on_body(chunk)
        except Exception as exc:
            self.sink_error = exc
            self.stream.close()
            return None
        if pending is None:
            return None
        return self._wait_for_client(pending)

    async def _wait_for_client(self, pending: Awaitable[None]) -> None:
        self.waiting_on_client = True
        try:
            await pending
        except Exception as exc:
            self.sink_error = ResponseInterrupted(f"the client went away: {_describe(exc)}", upstream_fault=False)
            self.stream.close()
        finally:
            self.waiting_on_client = False
            self.touch()

    def finish(self) -> None:
        self.complete = self.started and self.sink_error is None

    def on_connection_close(self) -> None:
        pass


def pin_nodelay(stream: IOStream) -> None:
    """Turn TCP_NODELAY on for good.

    HTTP1Connection switches it on to finish each message and off again after, two
    setsockopt calls per message on each leg; a proxy writes every message in one go,
    so Nagle's algorithm never helps it. Measured in README, Performance. Idempotent.
    """
    if stream.set_nodelay is _nodelay_pinned:
        return
    stream.set_nodelay(True)
    stream.set_nodelay = _nodelay_pinned  # type: ignore[method-assign]


def _nodelay_pinned(value: bool) -> None:
    pass


def _discard(idle: list[tuple[IOStream, float]], entry: tuple[IOStream, float]) -> None:
    try:
        idle.remove(entry)
    except ValueError:
        pass


def _describe(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
