"""The main listener's HTTPServer, answering the requests Tornado's own parser refuses as SPEC §4 JSON.

When ``HTTP1Connection`` cannot parse a request (a broken request line, a
malformed header line, a body whose framing it rejects) it catches its own
``HTTPInputError``, writes the bare ``HTTP/1.1 400 Bad Request\\r\\n\\r\\n`` to the
connection's stream and closes it; no delegate is told when the head itself
was unreadable. Tornado offers no hook there, so :class:`GatewayHTTPServer`
takes the one seam it does offer, ``handle_stream`` (once per connection): the
stream's ``write`` is wrapped so that exactly those bytes, written while the
current request has no answer under way, become the JSON 400 ``bad_request``
with ``Content-Type``, ``Content-Length``, ``Connection: close`` and an
``X-Request-Id``. Tornado closes the connection after that write, as before.

The same bytes written after the request's answer started are relayed as they
are: they can only be a body chunk (an upstream's body may be anything) or
Tornado's refusal after an answer, where the connection closes anyway.

This relies on a Tornado detail (``_read_message_inner`` writing that literal
through ``IOStream.write``), verified on the Tornado versions pinned in
setup.cfg and covered by ``tests/e2e/test_malformed.py``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError

from .context import RequestContext
from .errors import BadRequest, render_error
from .headers import request_id_from

__all__ = ["GatewayHTTPServer", "TORNADO_BARE_400", "malformed_answer"]

log = logging.getLogger("gateway")

TORNADO_BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"


class Answering(Protocol):
    """What the guard reads from a request delegate (a :class:`~gateway.http.response.ResponseWriter`)."""

    headers_written: bool
    ctx: RequestContext


class RefusalLog(Protocol):
    """Where a refused head is counted and logged (:class:`~gateway.runtime.RuntimeHolder`)."""

    def log_request(self, ctx: RequestContext, method: str, path: str, status: int, seconds: float,
                    route: str) -> None: ...


def malformed_answer(request_id: str) -> bytes:
    """The whole HTTP answer (head and JSON body) for a request Tornado could not parse."""
    body = render_error(BadRequest("malformed request"), request_id)
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        f"X-Request-Id: {request_id}\r\n\r\n"
    )
    return head.encode("latin1") + body


class GatewayHTTPServer(HTTPServer):
    """An HTTPServer whose connections answer Tornado's own refusals as JSON (see the module docstring).

    ``refusals`` counts and logs a refused head as a 400 (an unreadable head has no
    delegate that would); a refusal after the head was read is the delegate's to log.
    """

    def initialize(self, *args: Any, refusals: RefusalLog | None = None, **kwargs: Any) -> None:
        self._refusals = refusals
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        guard = _StreamGuard(stream, address, self._refusals)
        stream.write = guard.write  # type: ignore[method-assign]
        stream.gateway_guard = guard  # type: ignore[attr-defined]
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        # A new request on the connection: no handler yet (its initialize() registers itself).
        server_conn.stream.gateway_guard.delegate = None  # type: ignore[attr-defined]
        return super().start_request(server_conn, request_conn)


class _StreamGuard:
    """One connection's ``write``, with Tornado's bare 400 swapped for the JSON one.

    The stream holds the guard (its ``write``); the guard holds the stream and the request now being
    read or answered only weakly, so a connection and its requests leave no reference cycle for the
    cyclic collector.
    """

    __slots__ = ("_stream", "_address", "_refusals", "delegate")

    def __init__(self, stream: IOStream, address: tuple[Any, ...], refusals: RefusalLog | None) -> None:
        self._stream = weakref.ref(stream)
        self._address = address
        self._refusals = refusals
        self.delegate: weakref.ref[Any] | None = None  # the request now being read or answered

    def write(self, data: Any) -> Any:
        stream = self._stream()
        if stream is None:
            raise StreamClosedError()
        if data == TORNADO_BARE_400:
            data = self._refusal(stream, data)
        return type(stream).write(stream, data)  # the class's own write: the instance's is this one

    def _refusal(self, stream: IOStream, data: bytes) -> bytes:
        if stream.closed():
            # Closed after an answer that said Connection: close: Tornado went on to parse bytes still
            # buffered (an unread body) as a next request. Nobody sent that request; nothing to log.
            return data
        delegate: Answering | None = self.delegate() if self.delegate is not None else None
        if delegate is not None and getattr(delegate, "headers_written", False):
            return data  # an answer is under way: these bytes belong to it
        ctx = getattr(delegate, "ctx", None)
        request_id = ctx.request_id if isinstance(ctx, RequestContext) else ""
        if not request_id:
            # The head was never read: no delegate will log this request, so it is logged here.
            request_id = request_id_from(None)
            if self._refusals is not None:
                client = str(self._address[0]) if self._address else ""
                self._refusals.log_request(RequestContext(request_id, client), "", "", 400, 0.0, "")
        log.info("request_id=%s malformed request refused with 400", request_id)
        return malformed_answer(request_id)
