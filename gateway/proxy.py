"""The main listener: each request is a :class:`ProxyRequest`, a conductor of the policy steps, then the forward.

Why not a ``tornado.web.RequestHandler``: the main listener answers two fixed
paths and proxies everything else, so Application routing, the handler's
output buffer, its ``_execute`` coroutine and its flush/finish plumbing are
pure cost there (measured in README, Performance). A :class:`ProxyRequest` is
the ``HTTPMessageDelegate`` Tornado's ``HTTP1Connection`` calls directly: the
headers (policy runs before any body byte is read), the body chunks (with flow
control), the end of the request, a closed connection.

The policy order is written once, in :data:`gateway.policies.ORDER`: request id →
route → CORS preflight → auth → scopes → rate limit → body rules → plugins →
forward. :meth:`ProxyRequest.admit` runs the route's compiled steps and acts on
what they return or record (an answer, header changes, the body's way); it
decides nothing itself.

The response-started line: until the first byte of an answer goes to the
client, a failure renders the JSON error of SPEC §4 and a retry may happen
(an upstream's head is held until its first body byte, so an upstream that
breaks off after its head is still a 502); after it, the failure is logged and
the connection closed. However a request ends (answered, refused, cut off, the
client gone) it is counted and logged exactly once (:meth:`ProxyRequest._log`).

Hostile input: the framing and Host are checked on the headers
(:mod:`gateway.framing`) before anything is admitted or sent upstream; a body
silent for ``server.body_timeout_seconds`` is a 408. A client's fault (a
refused or broken body, a stall, a client gone) aborts the upstream exchange
as ``ResponseInterrupted(upstream_fault=False)``, which counts against no upstream.

Request bodies: none, buffered (a declared length up to the upstream's
``replay_buffer_bytes``, or any ``validate_json`` body: replayable, so
retryable) or streamed (larger or of unknown length: fed to the upstream as
they arrive, never retried). Response bodies always stream, with backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from typing import Any, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError, UnsatisfiableReadError

from .context import RequestContext
from .errors import (
    BadGateway,
    BodyTooLarge,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NoHealthyUpstream,
    RequestTimeout,
    render_error,
)
from .framing import CHUNKED, body_length, request_host
from .headers import Fields, request_id_from, tornado_headers, traceparent_from
from .jsonbody import JsonBodyCheck
from .policies import BodyMode, Reply, Request, Response, run_request_steps, run_response_steps
from .policies.route import MAX_HEADER_BYTES, MAX_REQUEST_LINE_BYTES
from .runtime import RoutePlan, Runtime, RuntimeHolder
from .tables import BODILESS_STATUSES, PROXIED_METHODS
from .upstream.body import BodyStream
from .upstream.client import ResponseInterrupted
from .upstream.forward import ForwardEvents, forward
from .upstream.pool import Target, UpstreamPool
from .upstream.request import GatewayRequest

__all__ = ["MainListener", "ProxyRequest", "MAX_REQUEST_LINE_BYTES", "MAX_HEADER_BYTES", "SUPPORTED_METHODS"]

log = logging.getLogger("gateway")

SUPPORTED_METHODS = PROXIED_METHODS


class MainListener(httputil.HTTPServerConnectionDelegate):
    """What Tornado's HTTPServer calls for each request on the main listener."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> ProxyRequest:
        return ProxyRequest(self.holder, request_conn)  # type: ignore[arg-type]


class ProxyRequest(httputil.HTTPMessageDelegate, ForwardEvents):
    """One request on the main listener, from its headers to the access-log line."""

    runtime: Runtime
    headers: httputil.HTTPHeaders
    plan: RoutePlan | None = None
    view: Request | None = None  # what the policy steps see and record on, made by admit()
    method = "GET"
    path = ""
    query = ""
    host = ""
    route_label = ""  # the metrics/access-log label of a /-/ endpoint, which has no route
    # the answer
    status = 200
    reason = "OK"
    out: httputil.HTTPHeaders | None = None  # the answer's headers, until they are written
    headers_written = False
    ended = False  # the answer is complete
    read_done = False  # Tornado has read the whole request (finish() was called)
    _finish_early = False  # answered before a body it will not read: the connection closes after the answer
    client_gone = False
    # the body and the forward
    _body_chunks: list[bytes] | None = None
    _body_stream: BodyStream | None = None
    _json_check: JsonBodyCheck | None = None  # a validate_json route's check, fed as the body arrives
    _forwarding: asyncio.Future[None] | None = None
    _relaying: asyncio.Future[None] | None = None
    _request: GatewayRequest | None = None  # the upstream request while it is being forwarded
    _body_limit = 0
    declared_length = 0  # the body's: 0 for none, CHUNKED (-1) when chunked; checked by gateway.framing
    _unread_body = False  # a body follows the headers and is not wanted: answer with Connection: close
    _body_timer: asyncio.TimerHandle | None = None  # watches the body's silence (server.body_timeout_seconds)
    _body_seen = 0.0  # the loop time the body last sent something
    _loop: asyncio.AbstractEventLoop
    _counted = False
    _active = False  # headers received: a delegate waiting on an idle keep-alive connection is not

    def __init__(self, holder: RuntimeHolder, conn: HTTP1Connection) -> None:
        self.holder = holder
        self.conn = conn
        context = conn.context
        self.remote_ip: str = getattr(context, "remote_ip", "") or ""
        self.protocol: str = getattr(context, "protocol", "http")
        self.ctx = RequestContext("", self.remote_ip)
        conn.set_close_callback(self.on_connection_close)

    # --- HTTPMessageDelegate: what the client sends ---

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.started = time.perf_counter()
        self._active = True
        self.method = start_line.method
        self.uri = start_line.path
        self.path, _, self.query = start_line.path.partition("?")
        self.headers = headers
        self.ctx.request_id = request_id_from(headers.get("X-Request-Id"))
        pin_nodelay(self.conn.stream)
        try:
            self.declared_length = body_length(start_line.version, headers)
            self.host = request_host(start_line.version, headers) or "127.0.0.1"
        except GatewayError as error:
            self._refuse_unread(error)
            return None
        self._unread_body = self.declared_length != 0
        if self.path in _ENDPOINTS:
            self._endpoint(self.path)
            return None
        self.holder.in_flight += 1
        self._counted = True
        self.runtime = self.holder.runtime
        return self._admit()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.ended:
            return None  # answered already (refused): the rest of the body is read and dropped
        ctx = self.ctx
        ctx.bytes_in += len(chunk)
        self._body_seen = self._loop.time()
        if ctx.bytes_in > self._body_limit:
            # Answered here, not raised: a raise from data_received would drop the connection unanswered.
            self._stop_forwarding()
            self.fail(BodyTooLarge(f"request body exceeds {self._body_limit} bytes"))
            return None
        stream = self._body_stream
        if stream is not None:
            if self._forwarding is None:
                self._forwarding = asyncio.ensure_future(self.forward(stream))
            return stream.put(chunk)
        if self._body_chunks is not None:
            self._body_chunks.append(chunk)
            if self._json_check is not None:
                try:
                    if self._json_check.feed(chunk):
                        return asyncio.sleep(0)  # a turn of the loop between two checked chunks
                except GatewayError as error:  # refused now, not after the rest of the body
                    self._body_chunks = None
                    self.fail(error)
        return None

    def finish(self) -> None:
        """The whole request has been read: finish an answer made meanwhile, or relay the request
        (a streamed body is already on its way)."""
        self.read_done = True
        self._stop_body_timer()
        if not self._active or self.client_gone:
            return
        if self.ended:
            if not self._finish_early:
                self.conn.finish()
        else:
            self._relaying = asyncio.ensure_future(self._run())  # held: the loop keeps only weak references

    def on_connection_close(self) -> None:
        if not self._active or self.client_gone or self.ended:
            return
        self._uncount()
        self._stop_forwarding()
        self.client_gone = True
        # The access log and metrics still count it, when no answer had started: as 400 when Tornado
        # refused the body's framing, 503 when the gateway cut it at the end of its drain time, else
        # 499 (nginx's "client closed request").
        if not self.headers_written:
            self.status = 400 if self._body_refused() else 503 if self.holder.cutting else 499
        self._log()

    # --- policy ---

    async def _admit(self) -> None:
        try:
            await self.admit()
        except GatewayError as error:
            self.fail(error)
        except Exception:
            self._bug()

    async def admit(self) -> None:
        """The policy steps, in order (:data:`gateway.policies.ORDER`): the route step, then the
        route's own; an answer one of them gives is sent. Raises a GatewayError to refuse the request."""
        view = self.view = Request(self.method, self.uri, self.path, self.query, self.host, self.remote_ip,
                                   self.headers, self.ctx, self.declared_length)
        self.runtime.route_step.on_request(view)
        plan = self.plan = cast(RoutePlan, view.plan)  # the route step records one of the runtime's plans
        if plan is None:  # the route step records one or raises
            raise InternalError()
        answer = await run_request_steps(plan.steps, view)
        if answer is not None:
            self.reply(answer)
            return
        self.admit_body(view)

    def admit_body(self, view: Request) -> None:
        """Set the body's way up as the body step decided it: none, buffered (replayable) or streamed."""
        mode = view.body_mode
        if mode == BodyMode.NONE:
            return
        self._body_limit = view.body_limit
        self._watch_body()
        if mode == BodyMode.BUFFER:
            self._body_chunks = []
            if view.json_check:
                self._json_check = JsonBodyCheck()
            return
        # The forward starts with the first body byte (data_received): a body whose framing is
        # broken from its start never reaches the upstream.
        length = self.declared_length
        self._body_stream = BodyStream(None if length == CHUNKED else length)

    def _watch_body(self) -> None:
        """Answer 408 when the body sends nothing for ``server.body_timeout_seconds``: a client that
        dribbles or stalls must not hold an upstream connection (or buffer) for ever.

        One timer per request, re-armed from the time of the last chunk rather than reset on each,
        so a chunk costs a clock read. Time spent waiting for the upstream to take the body (a
        streamed upload under backpressure) is the gateway's, not the client's, and does not count.
        """
        loop = self._loop = asyncio.get_running_loop()
        self._body_seen = loop.time()
        self._body_timer = loop.call_at(self._body_seen + self.runtime.server.body_timeout_seconds,
                                        self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        if self.read_done or self.ended or self.client_gone:
            return
        timeout = self.runtime.server.body_timeout_seconds
        now = self._loop.time()
        if self._body_stream is not None and self._body_stream.waiting:
            self._body_seen = now
        elif now - self._body_seen >= timeout:
            self._stop_forwarding()  # the client's fault: the upstream exchange, if begun, is aborted
            self.fail(RequestTimeout(f"the request body sent nothing for {timeout:g}s"))
            return
        self._body_timer = self._loop.call_at(self._body_seen + timeout, self._check_body)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # --- relaying ---

    async def _run(self) -> None:
        """Forward (or aggregate) and finish the answer; every failure ends as an answer or a close."""
        try:
            stream = self._body_stream
            if stream is not None:
                if self._forwarding is None:  # an empty chunked body
                    self._forwarding = asyncio.ensure_future(self.forward(stream))
                stream.close()
                await self._forwarding
            elif self.plan is not None and self.plan.aggregate is not None:
                await self.aggregate(self.plan)
            else:
                if self._json_check is not None:
                    self._json_check.close()
                body = b"".join(self._body_chunks) if self._body_chunks else None
                self._body_chunks = None  # the joined copy is the replay buffer: one copy of the body, not two
                await self.forward(body)
        except GatewayError as error:
            self.fail(error)
            return
        except ResponseInterrupted as exc:
            log.info("request_id=%s %s", self.ctx.request_id, exc)
            if exc.upstream_fault and not self.headers_written:
                # The upstream's head is held until its first body byte: the client has seen
                # nothing yet, so it still gets SPEC §4's answer.
                self.fail(BadGateway("the upstream broke off its answer"))
            else:
                self._cut_off()
            return
        except Exception:
            self._bug()
            return
        try:
            self.end()
        except Exception:  # Tornado refused to finish the answer (HTTPOutputError); it closed the connection
            log.error("request_id=%s could not finish the answer", self.ctx.request_id, exc_info=True)

    async def forward(self, body: bytes | BodyStream | None) -> None:
        """Send the request to the route's upstream (tries and retries in upstream.forward, each one
        ``AsyncHTTPClient.fetch``) and relay the answer (this object's on_headers/on_body)."""
        plan, ctx = self.plan, self.ctx
        if plan is None or plan.pool is None or plan.request is None or ctx.match is None:
            raise InternalError()
        request = self._request = plan.request.derive()
        request.method = self.method
        query = self.query
        request.path = ctx.match.upstream_path + ("?" + query if query else "")
        request.fields = self.upstream_headers(plan)
        if isinstance(body, BodyStream):
            request.body_stream = body
        elif body is not None:
            request.body = body
        request.fields_callback, request.streaming_callback = self.on_headers, self.on_body
        ctx.upstream = plan.pool.name
        try:
            await forward(plan.pool, self.holder.client, request, self)  # type: ignore[arg-type]
        finally:
            self._request = None  # forward() let go of our callbacks: no cycle through the request

    async def aggregate(self, plan: RoutePlan) -> None:
        """Fan out to the aggregate's parts and answer with their merged JSON."""
        ctx = self.ctx
        headers = self.upstream_headers(plan)
        result = await plan.aggregate.run(  # type: ignore[union-attr]
            self.holder.client, ctx.match.params if ctx.match else {}, headers, self)  # type: ignore[arg-type]
        out = httputil.HTTPHeaders()
        out["Content-Type"] = "application/json"
        out["X-Gateway-Completed"] = "true" if result.completed else "false"
        self.respond(200, out, result.body)

    def upstream_headers(self, plan: RoutePlan) -> Fields:
        """The request's headers as the upstream gets them: cleaned, forwarding and identity headers added
        (the plan drops the client's copies of all of these)."""
        ctx, view = self.ctx, self.view
        if view is None:  # only an admitted request is forwarded
            raise InternalError()
        request_headers = view.upstream_source()
        headers = plan.request_headers.apply(request_headers.get_all())
        headers += (("X-Forwarded-For", view.forwarded_for), ("X-Forwarded-Proto", self.protocol),
                    ("X-Forwarded-Host", self.host))
        if ctx.match is not None and ctx.match.stripped_prefix:
            headers.append(("X-Forwarded-Prefix", ctx.match.stripped_prefix))
        headers += (("X-Request-Id", ctx.request_id),
                    ("traceparent", traceparent_from(request_headers.get("traceparent"))))
        if ctx.identity is not None:
            headers += ctx.identity.headers
        return headers

    # --- ForwardEvents ---

    def attempt(self, pool: UpstreamPool, target: Target) -> None:
        self.ctx.target = target.url

    def finished(self, pool: UpstreamPool, target: Target, seconds: float, ok: bool) -> None:
        self.holder.metrics.upstream_try(pool.name, target.url, seconds)

    def retrying(self, pool: UpstreamPool, target: Target, reason: str) -> None:
        self.holder.metrics.retry(pool.name)
        log.info("request_id=%s retrying after %s from %s", self.ctx.request_id, reason, target.url)

    # --- the upstream's answer, relayed (the GatewayRequest's fields_callback and streaming_callback) ---

    def on_headers(self, status: int, reason: str, headers: Fields) -> None:
        self.status = status
        self.reason = reason or httputil.responses.get(status, "Unknown")
        out = tornado_headers(self.plan.response_headers.apply(headers))  # type: ignore[union-attr]
        if status == 204 and "Content-Length" in out:
            del out["Content-Length"]  # RFC 9110 §8.6: never on a 204 (a 304 may keep it: the representation's)
        if not self.stamp(status, out):
            raise InternalError()  # a plugin's on_response raised (logged): answered 500 instead
        self.out = out

    def on_body(self, chunk: bytes) -> Awaitable[None] | None:
        if self.method == "HEAD" or not chunk:
            return None
        self.ctx.bytes_out += len(chunk)
        if self.headers_written:
            return self.conn.write(chunk)
        return self._write_head(chunk)

    # --- answering ---

    def stamp(self, status: int, out: httputil.HTTPHeaders) -> bool:
        """Add what every answer carries: X-Request-Id, then the changes of the steps whose
        ``on_response`` is due (CORS, rate-limit headers, plugins). False when a plugin raised
        there (logged): the answer must then be a 500."""
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
        if not self.stamp(status, out):
            self.fail(InternalError())
            return
        self._answer(status, out, body)

    def fail(self, error: GatewayError) -> None:
        """Answer ``error`` as SPEC §4's JSON, or close the connection if an answer already started.

        The body shows ``error.message``; an error's ``log_message`` (an upstream's address, a
        library's words) goes to one log line with the request id: warning for 5xx, info for a
        refusal. An error without one (404, a /-/ready probe's 503) has nothing more to tell than
        the access log's line.
        """
        if self.ended or self.client_gone:
            return
        if self.headers_written:
            log.warning("request_id=%s failed after the response started: %s", self.ctx.request_id, error.detail)
            self._cut_off()
            return
        if error.log_message is not None:
            log.log(logging.WARNING if error.status >= 500 else logging.INFO, "request_id=%s %d %s: %s",
                    self.ctx.request_id, error.status, error.code, error.log_message)
        out = _error_headers()
        if not self.stamp(error.status, out):  # a plugin's on_response raised (logged); no plugin runs again
            error = InternalError()
            out = _error_headers()
            self.stamp(error.status, out)
        for name, value in error.headers.items():
            out[name] = value
        self._answer(error.status, out, render_error(error, self.ctx.request_id))

    def end(self) -> None:
        """Finish the answer (its headers first, if no body byte has sent them) and log the request.

        Until Tornado has read the request, the connection's answer is finished by :meth:`finish`:
        finishing it earlier would make Tornado close the connection.
        """
        if self.ended or self.client_gone:
            return
        if not self.headers_written:
            out = self.out if self.out is not None else httputil.HTTPHeaders()
            if "Content-Length" not in out and self.status not in BODILESS_STATUSES:
                out["Content-Length"] = "0"
            self.out = out
            self._write_head(None)
        self.ended = True
        self._uncount()
        self._log()  # before finish(), which may raise: the request is logged however it ends
        if self.read_done or self._finish_early:
            self.conn.finish()

    def _cut_off(self) -> None:
        """End a request whose answer cannot be completed: close the connection (the client sees
        the answer cut short, never completed as if whole), and count and log it once, with the
        status it was given. Closing the connection ourselves clears Tornado's close callback,
        so on_connection_close will not do this."""
        if self.ended or self.client_gone:
            return
        self.ended = True
        self.conn.close()
        self._uncount()
        self._log()

    def _answer(self, status: int, out: httputil.HTTPHeaders, body: bytes) -> None:
        self.status = status
        self.reason = httputil.responses.get(status, "Unknown")
        if status not in BODILESS_STATUSES:
            out["Content-Length"] = str(len(body))
        if not self.read_done and self._unread_body:
            # Refused before its body was read: the body is not wanted, and Tornado closes the
            # connection after an answer finished early. Say so.
            out["Connection"] = "close"
            self._finish_early = True
        self.out = out
        if body and self.method != "HEAD":
            self.ctx.bytes_out += len(body)
            self._write_head(body)
        self.end()

    def _write_head(self, chunk: bytes | None) -> Awaitable[None]:
        out = self.out
        assert out is not None
        self.out = None
        self.headers_written = True
        return self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", self.status, self.reason), out, chunk)

    def _body_refused(self) -> bool:
        """Whether Tornado gave up the request body because its framing broke (a bad chunk size,
        say), rather than because the client went away. Asked only from on_connection_close.

        Tornado answers a broken body with its own bare 400 and then tells the delegate the
        connection closed (HTTP1Connection._read_message_inner): from its ``finally`` clause,
        after the HTTPInputError was handled, so no exception is in flight. A client that went
        away mid-body raises StreamClosedError through that same ``finally``; so does a chunk-size
        line too long to read (IOStream closes the stream, with UnsatisfiableReadError as its
        ``real_error``), which is a broken body. A request read whole (the client left while its
        answer was awaited) is not refused. Pinned by tests/e2e/test_framing_wire.py (broken bodies
        are logged as 400, a vanished client as 499).
        """
        if self.read_done:
            return False
        exc = sys.exc_info()[1]
        return not isinstance(exc, StreamClosedError) or isinstance(exc.real_error, UnsatisfiableReadError)

    def _refuse_unread(self, error: GatewayError) -> None:
        """Refuse a request on its headers alone, its body (if any) unread: the answer says
        Connection: close, and the framing fields are removed from the headers Tornado reads the
        body by (after headers_received returns), so Tornado reads no body and adds no bare 400
        of its own to a malformed one; it closes the connection after the answer instead."""
        self._unread_body = True
        self.fail(error)
        headers = self.headers
        headers.pop("Content-Length", None)
        headers.pop("Transfer-Encoding", None)

    def _bug(self) -> None:
        log.error("request_id=%s internal error", self.ctx.request_id, exc_info=True)
        self.fail(InternalError())

    def _endpoint(self, path: str) -> None:
        """``/-/health`` (the process is alive) and ``/-/ready`` (config loaded, every upstream
        has a healthy target, not draining)."""
        self.route_label = path
        if self.method != "GET":
            self.fail(MethodNotAllowed(("GET",)))
            return
        if path == "/-/ready":
            holder = self.holder
            if holder.draining or not holder.runtime.ready():
                self.fail(NoHealthyUpstream(
                    "not ready: " + ("draining" if holder.draining else "an upstream has no healthy target")))
                return
            body = b'{"status":"ready"}'
        else:
            body = b'{"status":"ok"}'
        out = httputil.HTTPHeaders()
        out["Content-Type"] = "application/json"
        self.respond(200, out, body)

    # --- bookkeeping ---

    def _log(self) -> None:
        """The request is over: its access-log line and metrics (called once per request)."""
        self._stop_body_timer()
        # The request is over: let go of the forward and the body, so that this object leaves no
        # reference cycle behind (a finished task's exception holds frames that hold self).
        forwarding, self._forwarding, self._body_stream = self._forwarding, None, None
        if forwarding is not None and forwarding.done() and not forwarding.cancelled():
            forwarding.exception()  # retrieved: nothing to log about it later
        ctx = self.ctx
        self.holder.log_request(ctx, self.method, self.path, self.status, time.perf_counter() - self.started,
                                ctx.route_name or self.route_label)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.holder.in_flight -= 1

    def _stop_forwarding(self) -> None:
        """Abandon the upstream exchange: its failure is then expected, and not logged as unretrieved."""
        if self._request is not None:
            self._request.abort()
        if self._body_stream is not None:
            self._body_stream.abort()
        if self._forwarding is not None:
            self._forwarding.add_done_callback(lambda f: f.cancelled() or f.exception())


_ENDPOINTS = frozenset({"/-/health", "/-/ready"})


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
