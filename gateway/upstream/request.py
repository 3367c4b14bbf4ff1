"""The gateway's own ``HTTPRequest``: fields as a list, a parsed-fields hook, built from a template.

:class:`GatewayRequest` is an :class:`~tornado.httpclient.HTTPRequest` that
:class:`~gateway.upstream.client.PooledHTTPClient` sends without the generic path's
per-request work, and with two documented extensions:

- ``fields_callback(status, reason, fields)`` receives the response's status line and
  header fields already parsed (``fields``: a list of ``(name, value)``, as received),
  in place of ``header_callback``'s formatted lines that the caller would parse back. It
  may return an awaitable: the body is not read until it resolves (the proxy's head waits
  for a plugin's ``on_response`` that waits); one that fails with a GatewayError fails
  the fetch with it.
- ``streaming_callback(chunk)`` may return an awaitable: the upstream is not read again
  until it resolves (backpressure for a slow consumer). This extension holds for any
  request sent by :class:`~gateway.upstream.client.PooledHTTPClient`.

A request's header fields are ``fields`` (a list of ``(name, value)``, sent as they
are): no ``HTTPHeaders`` is built and no field goes through its validating regexes
(the gateway's header plans produced them; a line break in a value is still refused
when the head is written). ``headers`` builds an ``HTTPHeaders`` copy for readers that
want one. ``origin``, ``target`` (the request line's path and query) stand for ``url``,
which is composed only when read. A route builds one template at load
(:func:`template`) and each request is a :meth:`~GatewayRequest.derive`: a copy of the
template's settings with nothing of another request.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from ..config import Origin
from ..headers import Fields
from .body import BodyStream
from .http1 import ResponseReader

__all__ = ["GatewayRequest", "GatewayResponse", "template", "parse_origin"]

FieldsCallback = Callable[[int, str, Fields], "Awaitable[None] | None"]
StreamingCallback = Callable[[bytes], "Awaitable[None] | None"]


class GatewayRequest(HTTPRequest):
    """One request to an upstream, as the gateway sends it (see the module docstring).

    Beyond ``HTTPRequest``'s attributes: ``origin``/``target``; ``path`` (the path and query
    before a target's base path, for :func:`~gateway.upstream.forward.forward`); ``fields``;
    ``fields_callback``; ``body_stream`` (a streamed body in place of ``body``); ``max_idle``
    (how many idle connections the origin's pool keeps afterwards).
    """

    origin: Origin
    target: str
    path: str
    fields: Fields
    fields_callback: FieldsCallback | None
    body_stream: BodyStream | None
    max_idle: int
    aborted: bool
    _reader: ResponseReader | None

    def __init__(self, url: str = "http://localhost/", **kwargs: Any) -> None:
        self.fields = []
        self.path = ""
        self.fields_callback = None
        self.body_stream = None
        self.max_idle = 64
        self.aborted = False
        self._reader = None
        super().__init__(url, **kwargs)

    @property  # type: ignore[override]
    def url(self) -> str:
        return f"{self.origin}{self.target}"

    @url.setter
    def url(self, value: str) -> None:
        self.origin, self.target = parse_origin(value)

    @property  # type: ignore[override]
    def headers(self) -> HTTPHeaders:
        """A copy of ``fields`` as ``HTTPHeaders`` (changing it changes nothing sent)."""
        headers = HTTPHeaders()
        for name, value in self.fields:
            headers.add(name, value)
        return headers

    @headers.setter
    def headers(self, value: HTTPHeaders | dict[str, str] | None) -> None:
        if isinstance(value, HTTPHeaders):
            self.fields = list(value.get_all())
        else:
            self.fields = list((value or {}).items())

    def derive(self) -> GatewayRequest:
        """A new request with this one's settings (its timeouts, TLS, callbacks, fields as they are)."""
        new = object.__new__(GatewayRequest)
        new.__dict__.update(self.__dict__)
        return new

    def abort(self) -> None:
        """The client side gave up: end the exchange in flight, or the next one before it is sent,
        with ``ResponseInterrupted(upstream_fault=False)``."""
        self.aborted = True
        reader = self._reader
        if reader is not None:
            reader.abort()

    def release(self) -> None:
        """Let go of everything the request refers to besides its settings (callbacks, body), so
        that a finished request keeps nothing alive and forms no reference cycle."""
        self.fields_callback = self.streaming_callback = None
        self.body_stream = None
        self._reader = None
        self._body = None  # type: ignore[assignment]


class GatewayResponse(HTTPResponse):
    """What a :class:`GatewayRequest`'s fetch resolves to: the status; the fields and body went to
    the request's callbacks. Built without ``HTTPResponse``'s per-response work: ``headers`` is empty,
    ``error`` is None whatever the status (a status is an answer to relay, not a failure)."""

    def __init__(self, request: GatewayRequest, code: int, reason: str) -> None:  # noqa: D107
        self.request = request
        self.code = code
        self.reason = reason
        self.buffer = None
        self._body = None
        self.error = None
        self._error_is_response_code = False
        self.start_time = self.request_time = None
        self.time_info = {}

    @property
    def headers(self) -> HTTPHeaders:  # type: ignore[override]
        return HTTPHeaders()

    @property
    def effective_url(self) -> str:  # type: ignore[override]
        return self.request.url


def template(*, connect_timeout: float, request_timeout: float, ssl_context: ssl.SSLContext | None,
             max_idle: int) -> GatewayRequest:
    """A route's (or an aggregate part's) request template, built once at load."""
    request = GatewayRequest(connect_timeout=connect_timeout, request_timeout=request_timeout,
                             ssl_options=ssl_context, follow_redirects=False, decompress_response=False,
                             allow_nonstandard_methods=True)
    request.max_idle = max_idle
    return request


def parse_origin(url: str) -> tuple[Origin, str]:
    """``url``'s origin and request target (path and query). Raises ValueError for what is not an
    absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target
