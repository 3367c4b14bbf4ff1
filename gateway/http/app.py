"""The main listener's Tornado ``Application``: which handler serves a request.

:class:`GatewayApplication` routes by one dictionary lookup on the path: ``/-/health``
and ``/-/ready`` are their own handlers (:mod:`gateway.http.endpoints`); every other
path is a :class:`~gateway.http.handler.ProxyHandler` (its WebSocket subclass when the
request carries ``Upgrade``), run by :class:`_ProxyDelegate` without a Task of its own,
whose ``prepare()`` asks the current runtime's route table once (the route step), so
that a reload swaps the table in one assignment and a request in flight keeps the
runtime it was admitted with. No regex rule list is walked per request (measured in README, Performance),
no transforms (a proxy relays bodies as they are) and no Tornado access log (the
gateway writes its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from tornado import httputil
from tornado.concurrent import future_set_result_unless_cancelled
from tornado.web import Application

from ..runtime import RuntimeHolder
from .endpoints import ENDPOINTS
from .handler import ProxyHandler
from .response import Phase
from .websocket import WebSocketProxyHandler

__all__ = ["GatewayApplication"]


class GatewayApplication(Application):
    """The main listener's application over ``holder`` (its current runtime, metrics, access log)."""

    def __init__(self, holder: RuntimeHolder) -> None:
        super().__init__([], compress_response=False)
        self.transforms = []
        self.holder = holder
        self._kwargs = {"holder": holder}

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Routing(self, server_conn, request_conn)

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is not None:
            return self.get_handler_delegate(request, endpoint, self._kwargs)
        # The field table's own dict, by the normalized name: 40 ns where `in request.headers` costs 300
        # per request (pinned by tests/unit/test_websocket.py). The handler relays the handshake on a
        # websocket: true route and is ProxyHandler anywhere else.
        if "Upgrade" in request.headers._as_list:  # type: ignore[attr-defined]
            return _ProxyDelegate(self, request, WebSocketProxyHandler)
        return _ProxyDelegate(self, request, ProxyHandler)

    def log_request(self, handler: Any) -> None:
        """Tornado's access log: the gateway writes its own (once per request, by the handler)."""


class _ProxyDelegate(httputil.HTTPMessageDelegate):
    """Tornado's ``_HandlerDelegate`` and ``RequestHandler._execute`` for :class:`ProxyHandler`,
    without their two extra turns of the event loop per request.

    Tornado runs a handler as a Task of its own: ``prepare()`` one turn after the head was read
    (the connection's task waits for it), the HTTP method one turn after the body was (the handler's
    task waits for the connection's). Here ``prepare()`` runs in the connection's own task, as the
    awaitable ``headers_received`` returns (a request whose steps do not wait is admitted in the
    same turn that read its head), and the forward starts as a Task as soon as the body has been
    read. Measured in README, Performance (loop turns and CPU per request).

    What ``_execute`` did that still matters is kept: ``request._body_future`` (settled when the
    body has been read or the client left; :class:`~gateway.http.response.ResponseWriter` finishes
    an early answer on it), no output transforms, and a request answered by ``prepare()`` runs no
    forward. An unknown method is the route step's 405.
    """

    __slots__ = ("request", "handler")

    def __init__(self, app: GatewayApplication, request: httputil.HTTPServerRequest,
                 handler_class: type[ProxyHandler]) -> None:
        self.request = request
        self.handler = handler_class(app, request, holder=app.holder)
        self.handler._transforms = []

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        self.request._body_future = asyncio.Future()  # type: ignore[attr-defined]
        return self.handler.prepare()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.handler.data_received(chunk)  # type: ignore[no-any-return]

    def finish(self) -> None:
        future_set_result_unless_cancelled(self.request._body_future, None)  # type: ignore[attr-defined]
        handler = self.handler
        if handler.phase != Phase.ENDED:  # not answered already (refused on its head or body)
            asyncio.ensure_future(handler.serve()).add_done_callback(_raise_unexpected)

    def on_connection_close(self) -> None:
        self.handler.on_connection_close()


def _raise_unexpected(task: asyncio.Future[None]) -> None:
    """The serving task's end: a failure ``serve`` did not turn into an answer is a bug, and goes to
    the loop's exception handler (logged), as Tornado's own handler tasks do."""
    if not task.cancelled():
        task.result()


class _Routing(httputil.HTTPMessageDelegate):
    """Tornado's routing delegate, except that a Host that ``HTTPServerRequest`` refuses (none, two,
    one it finds malformed) still reaches a handler: the handler refuses what SPEC §4 refuses
    (:func:`gateway.framing.request_host`), as JSON with the request's id and an access-log line,
    and routes the rest as the route table says, as any other request."""

    __slots__ = ("app", "server_conn", "request_conn", "delegate")

    def __init__(self, app: GatewayApplication, server_conn: object, request_conn: httputil.HTTPConnection) -> None:
        self.app = app
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.delegate: httputil.HTTPMessageDelegate | None = None

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        try:
            request = httputil.HTTPServerRequest(connection=self.request_conn, server_connection=self.server_conn,
                                                 start_line=start_line, headers=headers)
        except httputil.HTTPInputError:
            stand_in = httputil.HTTPHeaders(headers)
            stand_in["Host"] = "host.invalid"
            request = httputil.HTTPServerRequest(connection=self.request_conn, server_connection=self.server_conn,
                                                 start_line=start_line, headers=stand_in)
            request.headers = headers  # the handler reads the Host as sent, and Tornado the body by these
            request.host = request.host_name = ""
        delegate = self.delegate = self.app.find_handler(request)
        return delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)  # type: ignore[union-attr]

    def finish(self) -> None:
        self.delegate.finish()  # type: ignore[union-attr]

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()
