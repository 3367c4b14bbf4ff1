"""``PooledHTTPClient``: the gateway's ``AsyncHTTPClient``, over keep-alive pools of its own.

Every outgoing call of the gateway (forwarding, aggregation, JWKS, health checks) is an
``AsyncHTTPClient().fetch(...)``; :func:`install` configures this class once at start, so
they all share one set of keep-alive pools (:mod:`gateway.upstream.connection`, keyed by
origin and TLS context). Why not a stock client: the simple client opens a connection per
request and queues fetches behind ``max_clients``; the curl client cannot stream an upload
and gives a streamed download no backpressure (tornado#324). This one has no queue: a health
check never waits behind traffic.

Request settings honoured: ``method``, ``headers``, ``body`` or ``body_producer`` (streamed,
chunked unless a Content-Length is given; each ``write`` resolves once the chunk is taken,
and the next is taken after the socket drained: backpressure), ``connect_timeout``,
``request_timeout`` (bounds the wait for the response head and any silence of the upstream
after it; time spent waiting on a ``streaming_callback`` is not counted), ``header_callback``
(Tornado's lines: the status line, each field, the blank line), ``streaming_callback`` (may
return an awaitable: the upstream is not read again until it resolves), ``user_agent``,
``auth_username``/``auth_password`` (basic), TLS through ``ssl_options`` (an
``ssl.SSLContext``, as :mod:`gateway.upstream.tls` builds them) or
``ca_certs``/``client_cert``/``client_key``/``validate_cert`` (one context per distinct
setting). Redirects are never followed and bodies never decompressed (a proxy relays both).
A :class:`~gateway.upstream.request.GatewayRequest` skips the generic path's copies and
parsing (see there) and adds ``fields_callback``.

Failures are the gateway's error tree (SPEC §4), raised from ``fetch()``:
:class:`~gateway.errors.UpstreamConnectError` (``refused``: nothing was sent) or
:class:`~gateway.errors.UpstreamTimeout` (``sent=False``) while connecting;
:class:`~gateway.errors.BadGateway` or ``UpstreamTimeout`` after the request went out;
:class:`ResponseInterrupted` once the response head was handed on, or when the caller's side
gave up (``upstream_fault=False``). An error's ``message`` names nothing internal; its
``log_message`` has the origin and the socket or TLS library's words. An HTTP status is a
response, never an exception, for a ``GatewayRequest``; other requests keep ``raise_error``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from io import BytesIO
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from ..errors import BadGateway, GatewayError, UpstreamConnectError, UpstreamTimeout
from ..headers import Fields
from .body import BodyStream, from_producer
from .connection import ConnectionPool
from .exchange import exchange
from .http1 import ResponseInterrupted
from .request import GatewayRequest, GatewayResponse, parse_origin
from .tls import system_context

__all__ = ["PooledHTTPClient", "install", "failure_kind", "ResponseInterrupted", "DEFAULTS"]

# Request defaults suited to a proxy: nothing followed or decoded, any method with any body.
DEFAULTS: dict[str, Any] = {"follow_redirects": False, "decompress_response": False,
                            "allow_nonstandard_methods": True}
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})


def install() -> None:
    """Make :class:`PooledHTTPClient` what ``AsyncHTTPClient()`` builds, with :data:`DEFAULTS`.
    Idempotent; called once at start (and by the test harness)."""
    if AsyncHTTPClient.configured_class() is not PooledHTTPClient:
        AsyncHTTPClient.configure(PooledHTTPClient, defaults=DEFAULTS)


def failure_kind(error: GatewayError) -> tuple[str, bool]:
    """What a failed try says to the retry policy: its kind ("timeout", "connect" or "reset") and
    whether it was ``refused`` (no byte of the request was sent)."""
    if isinstance(error, UpstreamTimeout):
        return "timeout", not error.sent
    if isinstance(error, UpstreamConnectError):
        return "connect", error.refused
    return "reset", False


class PooledHTTPClient(AsyncHTTPClient):
    """An ``AsyncHTTPClient`` whose fetches run over the gateway's keep-alive pools (module docstring).

    ``max_clients`` is accepted and ignored (there is no queue); ``max_body_size`` bounds a
    buffered response body (default 100 MiB). Verified on Tornado 6.4–6.6: relies on
    ``AsyncHTTPClient._closed`` and ``HTTPResponse._error_is_response_code``.
    """

    def initialize(self, defaults: dict[str, Any] | None = None, *, max_clients: int | None = None,
                   max_body_size: int | None = None, idle_timeout_seconds: float = 50.0) -> None:
        super().initialize(defaults)
        self.pool = ConnectionPool(idle_timeout_seconds=idle_timeout_seconds)
        self.max_body_size = max_body_size or 100 * 1024 * 1024
        self._contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def close(self) -> None:
        """Close every idle connection; the client takes no fetch afterwards."""
        self.pool.close()
        super().close()

    def close_idle(self) -> None:
        """Close every idle connection; the client stays usable (it is this loop's shared one)."""
        self.pool.close_idle()

    def fetch(self, request: str | HTTPRequest, raise_error: bool = True,  # type: ignore[override]
              **kwargs: Any) -> Any:
        """As ``AsyncHTTPClient.fetch``; a :class:`GatewayRequest` is sent as it is (no copy, no
        defaults merged: its template carries them) and its awaitable resolves to a
        :class:`GatewayResponse` whatever the status."""
        if type(request) is GatewayRequest:
            if self._closed:
                raise RuntimeError("fetch() called on closed AsyncHTTPClient")
            return self._send(request)
        return super().fetch(request, raise_error=raise_error, **kwargs)

    async def _send(self, request: GatewayRequest) -> GatewayResponse:
        origin = request.origin
        context = _https_context(request.ssl_options) if origin.scheme == "https" else None
        body: bytes | BodyStream | None = request.body_stream or request.body
        fields_callback, streaming_callback = request.fields_callback, request.streaming_callback
        if fields_callback is None or streaming_callback is None:
            raise ValueError("a GatewayRequest needs a fields_callback and a streaming_callback")
        status, reason = await exchange(
            self.pool, origin, context, request.method, request.target, request.fields, body,
            fields_callback, streaming_callback, request.connect_timeout or 20.0,
            request.request_timeout or 20.0, request.max_idle, request)
        return GatewayResponse(request, status, reason)

    def fetch_impl(self, request: HTTPRequest, callback: Any) -> None:
        task = asyncio.ensure_future(self._fetch_generic(request, callback))
        self._tasks.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _fetch_generic(self, request: HTTPRequest, callback: Any) -> None:
        """Any other caller's request: Tornado's settings mapped onto :func:`exchange`."""
        started, start_time = time.perf_counter(), time.time()
        headers = HTTPHeaders()
        chunks: list[bytes] = []
        received = [0]  # body bytes buffered so far
        header_callback, streaming_callback = request.header_callback, request.streaming_callback
        max_body = self.max_body_size

        def on_fields(status: int, reason: str, fields: Fields) -> None:
            for name, value in fields:
                headers.add(name, value)
            if header_callback is not None:
                header_callback(f"HTTP/1.1 {status} {reason}\r\n")
                for name, value in fields:
                    header_callback(f"{name}: {value}\r\n")
                header_callback("\r\n")

        def on_body(chunk: bytes) -> Any:
            if streaming_callback is not None:
                return streaming_callback(chunk)
            received[0] += len(chunk)
            if received[0] > max_body:
                raise BadGateway("the upstream's answer is too large",
                                 log_message=f"{request.url} answered more than {max_body} bytes")
            chunks.append(chunk)
            return None

        producer: asyncio.Future[Any] | None = None
        try:
            origin, target = parse_origin(request.url)
            fields = [(n, v) for n, v in request.headers.get_all() if n.lower() not in _FRAMING]
            if request.user_agent and "User-Agent" not in request.headers:
                fields.append(("User-Agent", request.user_agent))
            if request.auth_username is not None and "Authorization" not in request.headers:
                if request.auth_mode not in (None, "basic"):
                    raise ValueError(f"unsupported auth_mode {request.auth_mode}")
                token = base64.b64encode(f"{request.auth_username}:{request.auth_password or ''}".encode())
                fields.append(("Authorization", "Basic " + token.decode()))
            body: bytes | BodyStream | None = request.body or None
            if request.body_producer is not None:
                declared = request.headers.get("Content-Length")
                body, producer = from_producer(request.body_producer, int(declared) if declared else None)
            context = self._context_for(request) if origin.scheme == "https" else None
            status, reason = await exchange(
                self.pool, origin, context, request.method, target, fields, body, on_fields, on_body,
                request.connect_timeout or 20.0, request.request_timeout or 20.0, 64, None)
            if producer is not None:
                await producer  # its failure is this fetch's
        except Exception as exc:  # the gateway's error tree, or the caller's own mistake
            if producer is not None and not producer.done():
                producer.cancel()
            callback(HTTPResponse(request, 599, error=exc, request_time=time.perf_counter() - started,
                                  start_time=start_time))
            return
        buffer = None if streaming_callback is not None else BytesIO(b"".join(chunks))
        callback(HTTPResponse(request, status, headers=headers, buffer=buffer, reason=reason or None,
                              request_time=time.perf_counter() - started, start_time=start_time))

    def _context_for(self, request: HTTPRequest) -> ssl.SSLContext:
        """The request's TLS context: its ``ssl_options`` context, or one per distinct
        ``ca_certs``/``client_cert``/``client_key``/``validate_cert`` setting, built once."""
        if isinstance(request.ssl_options, ssl.SSLContext):
            return request.ssl_options
        if request.ssl_options:
            raise ValueError("ssl_options must be an ssl.SSLContext")
        key = (request.ca_certs, request.client_cert, request.client_key, bool(request.validate_cert))
        if key == (None, None, None, True):
            return system_context()
        context = self._contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=request.ca_certs)
            if request.client_cert:
                context.load_cert_chain(request.client_cert, request.client_key)
            if not request.validate_cert:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[key] = context
        return context


def _https_context(options: Any) -> ssl.SSLContext:
    return options if isinstance(options, ssl.SSLContext) else system_context()
