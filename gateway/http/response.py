"""The response writer: how every answer of the main listener is written, and the response-started line.

:class:`ResponseWriter` is the ``RequestHandler`` base of the main listener's
handlers (:class:`~gateway.http.handler.ProxyHandler` and the ``/-/`` endpoints).
An answer is in one :class:`Phase`:

- ``BEFORE``: nothing has reached the client. A failure renders SPEC §4's JSON
  (:meth:`ResponseWriter.fail`) and a retry may still happen upstream.
- ``DECIDED``: the gateway made its answer (an error, a step's reply) and a
  plugin's ``on_response`` that waits is still changing its headers. The answer
  goes out when it is done; a later failure changes nothing.
- ``STARTED``: the head went out (a relayed answer's first body byte, or an
  answer with no body). A failure can no longer be told to the client: it is
  logged and the connection closed (:meth:`ResponseWriter.cut_off`).
- ``ENDED``: answered, cut off or the client gone. Counted and logged exactly
  once (:meth:`ResponseWriter.report`); nothing more is written.

Every error renders through the one renderer (:func:`gateway.errors.render_error`):
the gateway's refusals, ``send_error``, Tornado's own ``HTTPError`` (its 405 for a
method a handler does not take) all reach :meth:`ResponseWriter.write_error`,
never Tornado's HTML page.

What Tornado's ``RequestHandler`` adds by default is left out (measured in the
README, Performance): :meth:`clear` builds no ``Server``/``Content-Type``/``Date``
headers to remove again, :meth:`compute_etag` returns None (a proxy never makes
an ``Etag`` of its own), and a relayed answer's fields are handed over whole
(``_headers``, assigned once), not through ``set_header``'s regexes per field.
The gateway sends no ``Server`` and no ``Date`` of its own: a relayed answer
carries the upstream's (SPEC §1: the answer is the upstream's), a gateway-made
one neither. Verified on Tornado 6.6.1 (setup.cfg allows 6.4-6.6): relies on
``RequestHandler._headers``, ``_write_buffer``, ``_status_code``, ``_reason``,
``_headers_written``, ``_finished``, ``_auto_finish``, ``_prepared_future`` (set as ``__init__`` sets them)
and ``_break_cycles()`` (the steps of ``finish()``); pinned by tests/unit/test_http_private.py; and
``HTTP1Connection._disconnect_on_finish`` (pinned by tests/unit/test_head.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import Any, cast

from tornado import httputil
from tornado.concurrent import Future
from tornado.http1connection import HTTP1Connection
from tornado.web import RequestHandler

from ..context import RequestContext
from ..errors import (
    BadRequest,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NoRoute,
    render_error,
)
from ..framing import body_length, request_host
from ..headers import field, request_id_from, tornado_headers
from ..policies import Reply, Request, Response, run_response_steps
from ..runtime import RuntimeHolder
from ..tables import BODILESS_STATUSES
from .head import write_head

__all__ = ["Phase", "ResponseWriter", "pin_nodelay"]

log = logging.getLogger("gateway")


class Phase(enum.IntEnum):
    """Where an answer stands: the response-started line is BEFORE → STARTED."""

    BEFORE = 0
    DECIDED = 1
    STARTED = 2
    ENDED = 3


class ResponseWriter(RequestHandler):
    """A main-listener handler's answer: written once, in phases, errors as SPEC §4 JSON.

    Subclasses call :meth:`begin` first thing in ``prepare()`` (the framing and Host
    checks) and end every request through :meth:`end`, :meth:`fail`, :meth:`cut_off` or
    :meth:`client_left`.
    """

    holder: RuntimeHolder
    view: Request | None = None  # what the policy steps saw and recorded (ProxyHandler)
    route_label = ""  # the metrics/access-log label of a /-/ endpoint, which has no route
    phase = Phase.BEFORE
    held: tuple[int, str, httputil.HTTPHeaders] | None = None  # a relayed head, until its first body byte
    read_done = False  # the whole request body has been read
    declared_length = 0  # the body's: 0 for none, CHUNKED (-1) when chunked; checked by gateway.framing
    unread_body = False  # a body follows the headers and has not been read: an early answer closes
    refused_unread = False  # refused on its head, its body never to be read: the answer closes
    counted = False  # in holder.in_flight
    reported = False  # counted in metrics and the access log

    def __init__(self, application: Any, request: httputil.HTTPServerRequest, **kwargs: Any) -> None:
        """``RequestHandler.__init__`` without the template namespace (``self.ui``: a dict and a
        module namespace built per request for templates a proxy never renders; ~1 % of a request's
        instructions). The rest is Tornado's, in its order."""
        self.application = application
        self.request = request
        self._headers_written = False
        self._finished = False
        self._auto_finish = True
        self._prepared_future = None
        self.clear()
        request.connection.set_close_callback(self.on_connection_close)  # type: ignore[union-attr]
        self.initialize(**kwargs)

    def initialize(self, holder: RuntimeHolder) -> None:  # type: ignore[override]
        self.holder = holder
        request = self.request
        self.started = time.perf_counter()
        headers = request.headers
        self.ctx = RequestContext(request_id_from(field(headers, "X-Request-Id")), request.remote_ip or "")
        stream = request.connection.stream  # type: ignore[union-attr]
        pin_nodelay(stream)
        guard = getattr(stream, "gateway_guard", None)
        if guard is not None:  # gateway.malformed: Tornado's bare 400 for this request becomes JSON
            guard.delegate = weakref.ref(self)
        self.unread_body = "Transfer-Encoding" in headers._as_list or field(headers, "Content-Length") not in (None, "0")

    def begin(self) -> bool:
        """The checks every request's head goes through first (framing, Host). False when the
        request was refused on them (answered, its body left unread)."""
        request = self.request
        try:
            self.declared_length = body_length(request.version, request.headers)
            self.host = request_host(request.version, request.headers) or "127.0.0.1"
        except GatewayError as error:
            self.refuse_unread(error)
            return False
        self.unread_body = self.declared_length != 0
        return True

    # --- Tornado's defaults, left out ---

    def clear(self) -> None:
        """Reset the answer with no default headers (no Server, Content-Type or Date)."""
        self._headers = httputil.HTTPHeaders()
        self._write_buffer = []
        self._status_code = 200
        self._reason = "OK"

    def compute_etag(self) -> str | None:
        return None

    def flush(self, include_footers: bool = False) -> Future[None]:
        """Tornado's ``flush()``, except that the head goes out through :func:`gateway.http.head.write_head`
        (``write_headers``' bytes and state without its per-field work)."""
        if self._headers_written or self._transforms or hasattr(self, "_new_cookie"):
            return super().flush(include_footers)
        chunk = b"".join(self._write_buffer)
        self._write_buffer = []
        self._headers_written = True
        request = self.request
        return write_head(cast(HTTP1Connection, request.connection), request, self._status_code, self._reason,
                          self._headers, b"" if request.method == "HEAD" else chunk)

    def finish(self, chunk: Any = None) -> Future[None]:
        """Tornado's ``finish()`` less its empty flush once the head is out and nothing is buffered
        (a relayed answer: its last chunk went out as it came). Tornado writes that empty chunk
        through the IOStream all the same (a future, a write attempt and their callbacks per
        request; measured in README, Performance). Everything else is Tornado's own."""
        connection = self.request.connection
        if chunk is not None or self._finished or not self._headers_written or self._write_buffer or connection is None:
            return super().finish(chunk)
        connection.set_close_callback(None)  # type: ignore[attr-defined]
        connection.finish()
        self._finished = True
        self.on_finish()
        self._break_cycles()
        done: Future[None] = Future()
        done.set_result(None)
        return done

    @property
    def headers_written(self) -> bool:
        """Whether the answer's head went out (read by :mod:`gateway.malformed`)."""
        return self.phase >= Phase.STARTED

    def data_received(self, chunk: bytes) -> Any:
        return None  # an endpoint answers before any body byte: what follows is dropped

    # --- answering ---

    def stamp(self, status: int, out: httputil.HTTPHeaders) -> bool | Coroutine[Any, Any, bool]:
        """Add what every answer carries: X-Request-Id, then the changes of the steps whose
        ``on_response`` is due (CORS, rate-limit headers, plugins). False when a plugin raised
        there (logged): the answer must then be a 500. A coroutine of that verdict when a plugin's
        ``on_response`` may wait (:func:`~gateway.policies.run_response_steps`): the answer's head
        waits for it."""
        if self.ctx.request_id:
            out["X-Request-Id"] = self.ctx.request_id
        view = self.view
        if view is None or not view.passed or view.plan is None or not view.plan.responders:
            return True
        return run_response_steps(view, Response(status, out))

    def reply(self, answer: Reply) -> None:
        """Send the answer a step gave instead of the upstream's."""
        if answer.problem is not None:
            self.fail(answer.problem)
        else:
            self.respond(answer.status, tornado_headers(answer.headers.items()), answer.body)

    def respond(self, status: int, out: httputil.HTTPHeaders, body: bytes = b"") -> None:
        """A whole answer made by the gateway (not relayed), stamped."""
        self._answer_stamped(self.stamp(status, out), status, out, body)

    def fail(self, error: GatewayError) -> None:
        """Answer ``error`` as SPEC §4's JSON, or close the connection if an answer already started.

        The body shows ``error.message``; an error's ``log_message`` (an upstream's address, a
        library's words) goes to one log line with the request id: warning for 5xx, info for a
        refusal.
        """
        if self.phase == Phase.ENDED:
            return
        if self.phase == Phase.DECIDED:
            log.info("request_id=%s %s while its answer waited on a plugin: that answer stands",
                     self.ctx.request_id, error.detail)
            return
        if self.phase == Phase.STARTED:
            log.warning("request_id=%s failed after the response started: %s", self.ctx.request_id, error.detail)
            self.cut_off()
            return
        if error.log_message is not None:
            log.log(logging.WARNING if error.status >= 500 else logging.INFO, "request_id=%s %d %s: %s",
                    self.ctx.request_id, error.status, error.code, error.log_message)
        out = _error_headers()
        stamped = self.stamp(error.status, out)
        for name, value in error.headers.items():
            out[name] = value
        self._answer_stamped(stamped, error.status, out, render_error(error, self.ctx.request_id))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's ``send_error`` (its own ``HTTPError``s, an uncaught exception): SPEC §4's JSON."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.fail(exc if isinstance(exc, GatewayError) else error_for_status(status_code, self.SUPPORTED_METHODS))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        if self.phase == Phase.BEFORE:
            self.write_error(status_code, **kwargs)
        elif self.phase == Phase.STARTED:
            self.cut_off()

    def hold(self, status: int, reason: str, out: httputil.HTTPHeaders) -> None:
        """Keep a relayed answer's status and fields until its first body byte (or its end): an
        upstream that breaks off in between still gets the client a JSON 502."""
        self.held = (status, reason, out)

    def relay(self, chunk: bytes) -> Any:
        """Write a relayed body chunk (the held head first); the awaitable resolves once the
        client's socket took it (backpressure)."""
        if self.phase == Phase.BEFORE:
            self._start_held()
        self._write_buffer.append(chunk)
        return self.flush()

    def _start_held(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self._status_code, self._reason, self._headers = held
        self.phase = Phase.STARTED

    def end(self) -> None:
        """Finish the answer (its head first, if no body byte has sent it) and report the request."""
        if self.phase == Phase.ENDED:
            return
        if self.phase == Phase.BEFORE:  # a relayed answer with no body: the head alone
            self._start_held()
            out = self._headers
            if "Content-Length" not in out and self._status_code not in BODILESS_STATUSES:
                out["Content-Length"] = "0"
        self._finish()

    def cut_off(self) -> None:
        """End a request whose answer cannot be completed: close the connection (the client sees
        the answer cut short, never completed as if whole), report it once, with its status."""
        if self.phase == Phase.ENDED:
            return
        self.phase = Phase.ENDED
        self._finished = True  # Tornado must not finish (or auto-finish) an answer cut short
        connection = self.request.connection
        if connection is not None:
            connection.close()  # type: ignore[attr-defined]
        self.report()

    def client_left(self, status: int) -> None:
        """The client went away before its answer ended: report it with ``status`` if no answer had
        started (else with the answer's)."""
        if self.phase == Phase.ENDED:
            return
        if self.phase <= Phase.DECIDED:
            self._status_code = status
        self.phase = Phase.ENDED
        self._finished = True  # nothing more can be written
        self.report()

    def refuse_unread(self, error: GatewayError) -> None:
        """Refuse a request on its head alone, its body (if any) unread: the answer says
        Connection: close, and the framing fields are removed from the headers Tornado reads the
        body by (after prepare() returns), so Tornado reads no body and adds no bare 400 of its
        own to a malformed one; it closes the connection after the answer instead."""
        self.unread_body = self.refused_unread = True
        self.fail(error)
        headers = self.request.headers
        headers.pop("Content-Length", None)
        headers.pop("Transfer-Encoding", None)

    def _answer_stamped(self, stamped: bool | Coroutine[Any, Any, bool], status: int, out: httputil.HTTPHeaders,
                        body: bytes) -> None:
        """Send a gateway-made answer once the steps' ``on_response`` ran: now, or (DECIDED meanwhile)
        when the plugin that waits is done. A plugin that raised makes it a 500 (no plugin runs
        on that one: ``plugins_failed``)."""
        if stamped is True:
            self._answer(status, out, body)
        elif stamped is False:
            self.fail(InternalError())
        else:
            self.phase = Phase.DECIDED
            asyncio.ensure_future(stamped).add_done_callback(lambda done: self._stamped(done, status, out, body))

    def _stamped(self, done: asyncio.Future[bool], status: int, out: httputil.HTTPHeaders, body: bytes) -> None:
        if self.phase != Phase.DECIDED:
            return  # the client left, or the connection was cut, while the plugin ran
        self.phase = Phase.BEFORE
        self._answer_stamped(not done.cancelled() and done.exception() is None and done.result(), status, out, body)

    def _answer(self, status: int, out: httputil.HTTPHeaders, body: bytes) -> None:
        self._status_code = status
        self._reason = httputil.responses.get(status, "Unknown")
        if status not in BODILESS_STATUSES:
            out["Content-Length"] = str(len(body))
        if self.refused_unread or (not self.read_done and self.unread_body):
            # Answered before its body was read: Tornado closes the connection after it. Say so.
            out["Connection"] = "close"
            if self.refused_unread:
                # Tornado took the body as empty (its framing fields were removed): when the answer
                # waited on a plugin, that "body" was read meanwhile and Tornado would keep the
                # connection, parsing the real body as a next request. Close after the answer.
                cast(HTTP1Connection, self.request.connection)._disconnect_on_finish = True
        self._headers = out
        if body and self.request.method != "HEAD":
            self.ctx.bytes_out += len(body)
            self._write_buffer.append(body)
        self.phase = Phase.STARTED
        self._finish()

    def _finish(self) -> None:
        self.phase = Phase.ENDED
        self.report()  # before finish(), which may raise: the request is reported however it ends
        if not self.read_done and not self.unread_body:
            # Answered on its head, and no body follows: Tornado reads the (empty) body next, and
            # finishing before that would make it close the connection. Finish once it has.
            self.request._body_future.add_done_callback(self._finish_read)  # type: ignore[attr-defined]
            return
        self._finish_now()
        if not self.read_done:
            # Answered before its body was read (refused): Tornado closes the connection after the
            # answer and will not run the HTTP method; settle the body's future so that the
            # handler's coroutine ends now.
            RequestHandler.on_connection_close(self)

    def _finish_read(self, body: Any) -> None:
        if not self._finished and not body.cancelled() and body.exception() is None:
            self._finish_now()

    def _finish_now(self) -> None:
        try:
            self.finish()
        except Exception:  # Tornado refused to finish the answer (HTTPOutputError); it closed the connection
            log.error("request_id=%s could not finish the answer", self.ctx.request_id, exc_info=True)
            self._finished = True

    # --- bookkeeping ---

    def report(self) -> None:
        """The request is over: its access-log line and metrics (once per request)."""
        if self.reported:
            return
        self.reported = True
        self.release()
        self.uncount()
        ctx = self.ctx
        self.holder.log_request(ctx, self.request.method or "", self.request.path, self._status_code,
                                time.perf_counter() - self.started, ctx.route_name or self.route_label)

    def uncount(self) -> None:
        """No longer a request in flight: of the process (``holder.in_flight``) and of the runtime it was
        admitted with (``Runtime.admitted``, which a reload waits on before closing that runtime's stores)."""
        if self.counted:
            self.counted = False
            self.holder.in_flight -= 1
            runtime = getattr(self, "runtime", None)
            if runtime is not None:
                runtime.admitted -= 1

    def release(self) -> None:
        """Let go of what the request holds beyond its end (overridden by the proxy handler)."""

    def on_connection_close(self) -> None:
        RequestHandler.on_connection_close(self)  # a streamed body's future: the handler's coroutine ends
        self.client_left(499)

    def _log(self) -> None:
        """Tornado's own access log line: the gateway writes its own (:meth:`report`)."""


def error_for_status(status: int, allowed: Any = ("GET",)) -> GatewayError:
    """The gateway error for a status Tornado itself raised (``HTTPError``)."""
    if status == 405:
        return MethodNotAllowed(tuple(allowed))
    if status == 404:
        return NoRoute()
    if status == 400:
        return BadRequest()
    return InternalError()


def pin_nodelay(stream: Any) -> None:
    """Turn TCP_NODELAY on for good on a client connection's IOStream.

    HTTP1Connection switches it on to finish each message and off again after, two
    setsockopt calls per message; a proxy writes every message in one go, so Nagle's
    algorithm never helps it. Measured in README, Performance. Idempotent.
    """
    if stream.set_nodelay is _nodelay_pinned:
        return
    stream.set_nodelay(True)
    stream.set_nodelay = _nodelay_pinned


def _nodelay_pinned(value: bool) -> None:
    pass


def _error_headers() -> httputil.HTTPHeaders:
    out = httputil.HTTPHeaders()
    out["Content-Type"] = "application/json"
    out["Cache-Control"] = "no-store"
    return out

