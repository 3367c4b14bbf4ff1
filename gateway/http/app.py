"""The main listener's Tornado ``Application``: which handler serves a request.

:class:`GatewayApplication` routes by one dictionary lookup on the path: ``/-/health``
and ``/-/ready`` are their own handlers (:mod:`gateway.http.endpoints`); every other
path is a :class:`~gateway.http.handler.ProxyHandler`, whose ``prepare()`` asks the
current runtime's route table once (the route step), so that a reload swaps the
table in one assignment and a request in flight keeps the runtime it was admitted
with. No regex rule list is walked per request (measured in README, Performance),
no transforms (a proxy relays bodies as they are) and no Tornado access log (the
gateway writes its own).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from tornado import httputil
from tornado.web import Application

from ..runtime import RuntimeHolder
from .endpoints import ENDPOINTS
from .handler import ProxyHandler
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
        handler = ENDPOINTS.get(request.path, ProxyHandler)
        # The field table's own dict, by the normalized name: 40 ns where `in request.headers` costs 300
        # per request (pinned by tests/unit/test_websocket.py). The handler relays the handshake on a
        # websocket: true route and is ProxyHandler anywhere else.
        if "Upgrade" in request.headers._as_list and handler is ProxyHandler:
            handler = WebSocketProxyHandler
        return self.get_handler_delegate(request, handler, self._kwargs)

    def log_request(self, handler: Any) -> None:
        """Tornado's access log: the gateway writes its own (once per request, by the handler)."""


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
