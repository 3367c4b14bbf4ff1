"""A WebSocket after its 101 (SPEC §6): :class:`Relay` passes messages both ways between the client's
connection and the upstream's (an :class:`UpstreamLeg`, Tornado's ``WebSocketClientConnection``).

Each side is Tornado's ``WebSocketProtocol13`` (:class:`LegProtocol`), whose frame loop does
not read the next frame until the message it handed over has been written to the other
side's socket. That is the backpressure: a reader that stalls stops the other side's
reading, and memory stays at about one message per direction.

What passes: text and binary messages (a fragmented message is passed on whole,
as one frame: each leg is its own connection), pings (answered by the gateway
at once and also passed on; the pong to a passed-on ping is not passed back, the
pinging side has its answer), close codes and reasons
(:func:`gateway.websocket.close_for_other_side`). Compression is not negotiated
on either leg.

A socket ends with one access-log line and ``gateway_requests_total`` count
(status 101, its whole duration, message bytes each way); while open it is in
``gateway_websocket_connections{route}`` and :attr:`RuntimeHolder.websockets`,
not in the in-flight requests. It keeps the runtime (route, limits, upstream)
its handshake was admitted with, across reloads. Shutdown (:func:`close_websockets`)
closes those still open with 1001 once ``drain_seconds`` is over.

Verified on Tornado 6.6.1; relies on ``WebSocketProtocol13``'s ``_receive_frame_loop``,
``_handle_message``, ``_write_frame``, ``_abort``, ``server_terminated``, and
``WebSocketClientConnection``'s ``_on_http_response`` and ``headers``; pinned by
tests/e2e/test_websocket_wire.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from asyncio import Future
from types import TracebackType
from typing import Any, cast

from tornado.httpclient import HTTPRequest, HTTPResponse, _RequestProxy
from tornado.iostream import IOStream, StreamClosedError
from tornado.util import _websocket_mask
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketProtocol13,
    _WebSocketParams,
)

from ..runtime import RoutePlan, RuntimeHolder
from ..websocket import GOING_AWAY, WebSocketPlan, close_for_other_side

__all__ = ["Relay", "UpstreamLeg", "LegProtocol", "close_websockets", "CLOSE_WAIT_SECONDS"]

log = logging.getLogger("gateway")

_pack = struct.pack
CLOSE_WAIT_SECONDS = 1.0  # at shutdown, how long the close handshakes may take before the sockets are dropped


class LegProtocol(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol on one side of a relay, remembering how its connection ended:
    ``received`` (the close frame that side sent) and ``sent`` (the gateway's own first close)."""

    gate: asyncio.Future[None] | None = None  # the upstream side reads no frame until the client has its 101
    received: tuple[int | None, str | None] | None = None
    sent: tuple[int | None, str | None] | None = None
    _pending: list[bytes] | None = None  # frames passed on in this turn of the loop, not yet written
    _written: Future[None] | None = None  # the socket's last write

    async def _receive_frame_loop(self) -> None:
        if self.gate is not None:
            await self.gate
        await super()._receive_frame_loop()

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        handled = super()._handle_message(opcode, data)
        if opcode == 0x8 and self.received is None:
            self.received = (self.close_code, self.close_reason)
        return handled

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self._pending is not None and not self.server_terminated:
            self.flush()  # the messages passed on before the close go out before it
        if self.sent is None and not self.server_terminated and self.received is None:
            self.sent = (code, reason)
        super().close(code, reason)

    def pass_on(self, message: str | bytes) -> asyncio.Future[None] | None:
        """Send ``message`` as one frame of its kind (nothing once this side is closing).

        Frames are gathered and handed to the socket once per turn of the event loop (:meth:`flush`):
        the messages of one burst the other side sent go out in one ``send``, not one each (a
        syscall per message was most of the relay's cost). Returns None to go on reading, or, while
        the socket has not taken the last write yet, a future (never failing) that resolves once it
        has: the other side's frame loop waits on it, which is the backpressure. At most the last
        write and one message more are held.
        """
        if self.server_terminated:
            return None  # no frame may follow a close
        if isinstance(message, bytes):
            first, payload = 0x82, message
        else:
            first, payload = 0x81, message.encode()
        size = len(payload)
        masked = 0x80 if self.mask_outgoing else 0
        if size < 126:
            frame = _pack("!BB", first, size | masked)
        elif size < 65536:
            frame = _pack("!BBH", first, 126 | masked, size)
        else:
            frame = _pack("!BBQ", first, 127 | masked, size)
        if masked:
            key = os.urandom(4)  # RFC 6455 §5.3: unpredictable, as Tornado's own frames
            frame += key + _websocket_mask(key, payload)
        else:
            frame += payload
        self._wire_bytes_out += len(frame)
        pending = self._pending
        if pending is None:
            pending = self._pending = []
            asyncio.get_running_loop().call_soon(self.flush)
        pending.append(frame)
        written = self._written
        if written is None or written.done():
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.add_done_callback(lambda _: _settle(waiter))  # a failed write: this side's frame loop sees it
        return waiter

    def flush(self) -> None:
        """Hand the gathered frames to the socket, in one write."""
        pending, self._pending = self._pending, None
        if not pending:
            return
        try:
            self._written = self.stream.write(pending[0] if len(pending) == 1 else b"".join(pending))
        except StreamClosedError:
            pass

    def pass_ping(self, data: bytes) -> None:
        if not self.server_terminated:
            self.flush()  # after the messages before it
            try:
                self.write_ping(data)
            except StreamClosedError:
                pass


class UpstreamLeg(WebSocketClientConnection):
    """The upstream side: Tornado's WebSocket client (what ``websocket_connect`` builds), whose
    messages, pings and close go to its :class:`Relay`. ``refusal`` keeps an answer other than 101."""

    relay: Relay | None = None
    refusal: HTTPResponse | None = None
    leg: LegProtocol | None = None

    def __init__(self, request: HTTPRequest, max_message_bytes: int) -> None:
        # As websocket_connect does: the request's unset options read as HTTPRequest's defaults.
        request = cast(HTTPRequest, _RequestProxy(request, HTTPRequest._DEFAULTS))
        super().__init__(request, on_message_callback=_nothing, compression_options=None, ping_interval=None,
                         max_message_size=max_message_bytes)

    def get_websocket_protocol(self) -> LegProtocol:
        leg = self.leg = LegProtocol(self, mask_outgoing=True, params=self.params)
        leg.gate = asyncio.get_running_loop().create_future()
        return leg

    def _on_http_response(self, response: HTTPResponse) -> None:
        self.refusal = response
        super()._on_http_response(response)

    def abandon(self) -> None:
        """Give the connection up, before or after its 101 (the client is gone)."""
        leg = self.leg
        if leg is not None:
            leg.close(GOING_AWAY, "client went away")
            if leg.gate is not None and not leg.gate.done():
                leg.gate.set_result(None)  # let its frame loop run, to see the close through
            self.protocol = None  # type: ignore[assignment]
        elif getattr(self, "stream", None) is not None:
            self.stream.close()  # connected: the handshake fails now; else the handler drops it once made

    def on_message(self, message: str | bytes) -> asyncio.Future[None] | None:
        relay = self.relay
        return relay.to_client(message) if relay is not None else None

    def on_ping(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.ping_client(data)

    def on_pong(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.seen = self.relay.loop.time()

    def on_ws_connection_close(self, close_code: int | None = None, close_reason: str | None = None) -> None:
        super().on_ws_connection_close(close_code, close_reason)
        if self.relay is not None and self.leg is not None:
            self.relay.side_closed("upstream", self.leg)

    def log_exception(self, typ: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        _log_relay_exception(value, tb)


class Relay:
    """One open WebSocket: the client's connection and the upstream's, messages passed both ways.

    It is the client side's protocol delegate (``on_message``, ``on_ping``, ``on_pong``,
    ``on_ws_connection_close``); :class:`UpstreamLeg` hands it the upstream side's.
    """

    def __init__(self, holder: RuntimeHolder, plan: RoutePlan, route: str, stream: IOStream,
                 upstream: UpstreamLeg) -> None:
        limits: WebSocketPlan = plan.websocket  # type: ignore[assignment]
        self.holder = holder
        self.idle_seconds = limits.idle_seconds
        self.client = LegProtocol(self, mask_outgoing=False,
                                  params=_WebSocketParams(max_message_size=limits.max_message_bytes))
        self.client.stream = stream
        self.connection = upstream
        self.upstream: LegProtocol = upstream.leg  # type: ignore[assignment]
        upstream.relay = self
        self.loop = asyncio.get_running_loop()
        self.seen = self.loop.time()
        self.bytes_in = 0  # message bytes from the client
        self.bytes_out = 0  # message bytes to the client
        self.ended: set[str] = set()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._open, self._to_upstream, self._to_client = holder.metrics.websocket_children(route)

    async def run(self) -> None:
        """Relay until both sides have closed."""
        self.holder.websockets.add(self)
        self._open.inc()
        self._timer = self.loop.call_at(self.seen + self.idle_seconds, self._check_idle)
        gate = self.upstream.gate
        if gate is not None and not gate.done():
            gate.set_result(None)
        try:
            await self.client._receive_frame_loop()
            await self.done
        finally:
            self._finish()

    def shut(self, code: int, reason: str) -> None:
        """The gateway closes both sides with ``code`` (idle timeout, shutdown)."""
        self.client.close(code, reason)
        self.upstream.close(code, reason)

    def abort(self) -> None:
        """Drop both connections without a close handshake (it took too long)."""
        for side in (self.client, self.upstream):
            if side.stream is not None:
                side.stream.close()

    # --- the client side's delegate ---

    def on_message(self, message: str | bytes) -> asyncio.Future[None] | None:
        self.seen = self.loop.time()
        self.bytes_in += len(message) if isinstance(message, bytes) else len(message.encode())
        self._to_upstream.inc()
        return self.upstream.pass_on(message)

    def on_ping(self, data: bytes) -> None:
        self.seen = self.loop.time()
        self.upstream.pass_ping(data)

    def on_pong(self, data: bytes) -> None:
        self.seen = self.loop.time()

    def on_ws_connection_close(self, close_code: int | None = None, close_reason: str | None = None) -> None:
        self.side_closed("client", self.client)

    def log_exception(self, typ: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        _log_relay_exception(value, tb)

    # --- from the upstream side ---

    def to_client(self, message: str | bytes) -> asyncio.Future[None] | None:
        self.seen = self.loop.time()
        self.bytes_out += len(message) if isinstance(message, bytes) else len(message.encode())
        self._to_client.inc()
        return self.client.pass_on(message)

    def ping_client(self, data: bytes) -> None:
        self.seen = self.loop.time()
        self.client.pass_ping(data)

    # --- the end ---

    def side_closed(self, side: str, leg: LegProtocol) -> None:
        """``side``'s connection ended: the first to end has the other closed as
        :func:`~gateway.websocket.close_for_other_side` says; the relay is done once both have."""
        if side in self.ended:
            return
        self.ended.add(side)
        if len(self.ended) == 1:
            other = self.upstream if side == "client" else self.client
            code, reason = close_for_other_side(side, leg.received, leg.sent)
            other.close(code, reason)
        if len(self.ended) == 2 and not self.done.done():
            self.done.set_result(None)

    def _check_idle(self) -> None:
        self._timer = None
        if self.done.done():
            return
        if self.loop.time() - self.seen >= self.idle_seconds:
            self.shut(GOING_AWAY, "idle timeout")
            return
        self._timer = self.loop.call_at(self.seen + self.idle_seconds, self._check_idle)

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self in self.holder.websockets:
            self.holder.websockets.discard(self)
            self._open.dec()
        self.connection.relay = None
        self.connection.protocol = None  # type: ignore[assignment]  # closed: nothing left to warn about
        self.connection.tcp_client.close()


async def close_websockets(holder: RuntimeHolder) -> None:
    """Shutdown, once ``drain_seconds`` is over: close every open socket with 1001 and wait (at most
    CLOSE_WAIT_SECONDS) for the close handshakes; drop those that did not finish by then."""
    relays = list(holder.websockets)
    if not relays:
        return
    log.warning("closing %d WebSocket(s) still open (1001)", len(relays))
    for relay in relays:
        relay.shut(GOING_AWAY, "gateway shutting down")
    pending = [relay.done for relay in relays if not relay.done.done()]
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_WAIT_SECONDS)
    for relay in relays:
        if not relay.done.done():
            relay.abort()


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _nothing(message: Any) -> None:
    """The upstream connection's end-of-stream callback: the relay learns of it from its close."""


def _log_relay_exception(value: BaseException | None, tb: TracebackType | None) -> None:
    if isinstance(value, (StreamClosedError, WebSocketClosedError)):
        return  # a side went away mid-write: its own close is reported by its frame loop
    log.error("WebSocket relay failed", exc_info=(type(value), value, tb) if value is not None else None)
