"""Upstream connections and their idle pools, keyed by (origin, TLS context).

Each connection is an :class:`asyncio.Protocol` carrying one HTTP/1.1 exchange at a
time (why a protocol and not Tornado's IOStream: an IOStream re-registers its socket
with the event loop for every read and write, which cost more CPU than the rest of
the upstream leg together; a protocol stays registered while the connection lives;
measured in README, Performance). Idle connections are kept per origin and TLS
context (SPEC §4: a connection opened under one upstream's trust store or client
certificate is never handed to an upstream with other TLS settings;
:mod:`gateway.upstream.tls` builds one context per distinct setting, so the context
object stands for them). An idle connection whose server closes it is noticed by the
event loop and dropped; idle ones are swept after ``idle_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Protocol

from ..config import Origin
from ..errors import UpstreamConnectError, UpstreamTimeout

__all__ = ["Connection", "ConnectionPool", "PoolKey", "Reader", "describe"]


class Reader(Protocol):
    """What a connection hands its bytes to while an answer is read (http1.ResponseReader)."""

    def feed(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...

WRITE_HIGH_WATER = 256 * 1024  # a streamed upload waits while more than this is unsent

PoolKey = tuple[Origin, "ssl.SSLContext | None"]  # the context is None for an http:// origin


class Connection(asyncio.Protocol):
    """One upstream connection: idle in its pool's list, or carrying one exchange (``reader``)."""

    transport: asyncio.Transport
    pool_key: PoolKey  # set by ConnectionPool.connect: the only pool this connection may idle in

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reader: Reader | None = None
        self.closing = False
        self.idle_in: list[Connection] | None = None
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each message goes in one write
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]

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


class ConnectionPool:
    """Idle keep-alive connections, one list per (origin, TLS context); opens new ones on demand."""

    def __init__(self, *, idle_timeout_seconds: float = 50.0) -> None:
        self.idle_timeout_seconds = idle_timeout_seconds
        self.opened = 0  # connections opened so far (for tests and the curious)
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def connect(self, origin: Origin, timeout: float, ssl_context: ssl.SSLContext | None) -> Connection:
        """A new connection, TLS when ``ssl_context`` is given. Raises UpstreamTimeout (``sent=False``)
        or UpstreamConnectError (``refused=True``): nothing was sent either way."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                Connection, origin.host, origin.port, ssl=ssl_context,
                server_hostname=origin.host if ssl_context is not None else None), timeout)
        except TimeoutError:
            raise UpstreamTimeout(log_message=f"connecting to {origin} timed out after {timeout:g}s",
                                  sent=False) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(log_message=f"cannot connect to {origin}: {describe(exc)}",
                                       refused=True) from exc
        self.opened += 1
        conn.pool_key = (origin, ssl_context)
        return conn

    def take(self, key: PoolKey) -> Connection | None:
        """An idle connection opened under ``key``, or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            conn.idle_in = None
            if not conn.closing:
                return conn
        return None

    def release(self, conn: Connection, max_idle: int) -> None:
        """Keep ``conn`` for reuse in the pool it was opened for, unless that pool holds ``max_idle``."""
        idle = self._idle.setdefault(conn.pool_key, [])
        if self._closed or len(idle) >= max_idle or conn.closing:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        conn.idle_in = idle
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.idle_timeout_seconds / 2, self._sweep)

    def idle_count(self, key: PoolKey) -> int:
        return len(self._idle.get(key, ()))

    def close(self) -> None:
        """Close every idle connection and stop sweeping; later releases close their connection."""
        self._closed = True
        self.close_idle()

    def close_idle(self) -> None:
        """Close every idle connection (the pool stays usable)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.idle_in = None
                conn.close()
        self._idle.clear()

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


def describe(exc: BaseException) -> str:
    """A failure in words for the log: the errno's own ("Connection refused", whatever the event loop
    wrapped it in), the TLS library's message, or the exception's."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
