"""The main listener's conductor: :class:`ProxyHandler`, a ``RequestHandler`` that runs the policy steps, then the forward.

One request's way (README, Architecture): Tornado reads the head and the
:class:`~gateway.http.app.GatewayApplication` picks this handler (a path not
``/-/``); ``prepare()`` checks the framing and Host
(:meth:`~gateway.http.response.ResponseWriter.begin`), takes the current runtime
and runs the route step then the route's compiled steps
(:data:`gateway.policies.ORDER`); it acts on what they return or record (an
answer, header changes, the body's way) and decides nothing itself.
``data_received`` feeds the body as the body step chose it: none, buffered (a
declared length up to the upstream's ``replay_buffer_bytes``, or any
``validate_json`` body: replayable, so retryable) or streamed (larger or of
unknown length: fed to the upstream as it arrives, never retried), within the
body limit and the body timeout. The HTTP method (one ``async def`` for every
method) starts or awaits the forward: ``AsyncHTTPClient().fetch()`` per try
(:func:`gateway.upstream.forward.forward`), whose callbacks relay the answer with
backpressure (each chunk's flush awaited). On a ``cache`` route the cache step's
exchange (:mod:`gateway.cache.step`) replays a hit through those same callbacks instead
of forwarding, and copies a miss as it is relayed. The request is reported to metrics
and the access log once, however it ends (:mod:`gateway.http.response`).

A client's fault (a refused or broken body, a stall, a client gone) aborts the
upstream exchange as ``ResponseInterrupted(upstream_fault=False)``, which counts
against no upstream.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import Any, cast

from tornado import httputil
from tornado.iostream import StreamClosedError, UnsatisfiableReadError
from tornado.web import stream_request_body

from ..cache.step import CacheExchange
from ..compression import Encoder, accept_encoding
from ..errors import BadGateway, BodyTooLarge, GatewayError, InternalError, RequestTimeout
from ..framing import CHUNKED
from ..headers import Fields, field, tornado_headers, traceparent_from
from ..jsonbody import JsonBodyCheck
from ..policies import BodyMode, Request, run_request_steps
from ..runtime import RoutePlan, Runtime
from ..tables import PROXIED_METHODS
from ..upstream.body import BodyStream
from ..upstream.client import ResponseInterrupted
from ..upstream.forward import ForwardEvents, forward
from ..upstream.pool import Target, UpstreamPool
from ..upstream.request import GatewayRequest
from .response import Phase, ResponseWriter

__all__ = ["ProxyHandler", "SUPPORTED_METHODS"]

log = logging.getLogger("gateway")

SUPPORTED_METHODS = PROXIED_METHODS


@stream_request_body
class ProxyHandler(ResponseWriter, ForwardEvents):
    """One proxied request, from its head to the access-log line."""

    SUPPORTED_METHODS = PROXIED_METHODS  # type: ignore[assignment]

    runtime: Runtime
    plan: RoutePlan | None = None
    host = ""
    _body_chunks: list[bytes] | None = None
    _body_stream: BodyStream | None = None
    _json_check: JsonBodyCheck | None = None  # a validate_json route's check, fed as the body arrives
    _forwarding: asyncio.Future[None] | None = None
    _upstream: GatewayRequest | None = None  # the upstream request while it is being forwarded
    _body_limit = 0
    _body_timer: asyncio.TimerHandle | None = None  # watches the body's silence (server.body_timeout_seconds)
    _body_seen = 0.0  # the loop time the body last sent something
    _loop: asyncio.AbstractEventLoop
    _encoder: Encoder | None = None  # this answer's compression (gateway.compression), when it has one

    # --- what the client sends ---

    async def prepare(self) -> None:
        """The head: framing, then the policy steps in order; an answer one of them gives is sent."""
        tracing = self.holder.runtime.tracing
        if tracing is not None:  # decided at load: without a tracing section no span is made
            self.trace = tracing.begin(self.request, self.ctx)
        if not self.begin():
            return
        holder = self.holder
        holder.in_flight += 1
        self.counted = True
        runtime = self.runtime = holder.runtime
        runtime.admitted += 1  # its stores stay open for this request across a reload (Runtime.stop)
        try:
            await self.admit()
        except GatewayError as error:
            self.fail(error)
        except Exception:
            self._bug()

    async def admit(self) -> None:
        """The route step, then the route's own; raises a GatewayError to refuse the request."""
        request = self.request
        view = self.view = Request(request.method or "", request.uri or "", request.path, request.query, self.host,
                                   self.ctx.client_ip, request.headers, self.ctx, self.declared_length)
        self.runtime.route_step.on_request(view)
        plan = self.plan = cast(RoutePlan, view.plan)  # the route step records one of the runtime's plans
        if plan is None:
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

    def data_received(self, chunk: bytes) -> Any:
        if self.phase == Phase.ENDED or self.phase == Phase.DECIDED:
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

    async def serve(self) -> None:
        """The whole request has been read (started by the application's delegate,
        :class:`gateway.http.app._ProxyDelegate`): forward (a streamed body is already on its way)
        or aggregate, and finish the answer."""
        self.read_done = True
        self._stop_body_timer()
        if self.phase == Phase.ENDED or self.phase == Phase.DECIDED:
            return  # answered already (refused), or its answer waits on a plugin
        await self._run()

    def on_connection_close(self) -> None:
        if self.phase != Phase.ENDED:
            self._stop_forwarding()
            # Counted still, when no answer had started: as 400 when Tornado refused the body's framing,
            # 503 when the gateway cut it at the end of its drain time, else 499 (nginx's "client closed request").
            self.client_left(400 if self._body_refused() else 503 if self.holder.cutting else 499)
        super().on_connection_close()

    # --- the body's timeout ---

    def _watch_body(self) -> None:
        """Answer 408 when the body sends nothing for ``server.body_timeout_seconds``.

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
        if self.read_done or self.phase == Phase.ENDED:
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
            if self._encoder is not None:
                await self._finish_encoding()
        except GatewayError as error:
            self.fail(error)
            return
        except ResponseInterrupted as exc:
            log.info("request_id=%s %s", self.ctx.request_id, exc)
            if exc.upstream_fault and self.phase == Phase.BEFORE:
                # The upstream's head is held until its first body byte: the client has seen
                # nothing yet, so it still gets SPEC §4's answer.
                self.fail(BadGateway("the upstream broke off its answer"))
            else:
                self.cut_off()
            return
        except Exception:
            self._bug()
            return
        self.end()

    async def forward(self, body: bytes | BodyStream | None) -> None:
        """Send the request to the route's upstream (tries and retries in upstream.forward, each one
        ``AsyncHTTPClient.fetch``) and relay the answer (this handler's on_headers/on_body)."""
        plan, ctx = self.plan, self.ctx
        if plan is None or plan.pool is None or plan.request is None or ctx.match is None:
            raise InternalError()
        cache: CacheExchange | None = self.view.cache if self.view is not None else None  # gateway.cache
        if cache is not None and cache.entry is not None:
            await cache.replay(self.on_headers, self.on_body)  # a hit: no upstream call
            return
        request = self._upstream = plan.request.derive()
        request.method = self.request.method or "GET"
        query = self.request.query
        request.path = ctx.match.upstream_path + ("?" + query if query else "")
        request.fields = self.upstream_headers(plan)
        if isinstance(body, BodyStream):
            request.body_stream = body
        elif body is not None:
            request.body = body
        request.fields_callback, request.streaming_callback = self.on_headers, self.on_body
        if cache is not None:  # a miss: the answer is copied as it is relayed
            request.fields_callback, request.streaming_callback = cache.relay(self.on_headers, self.on_body)
        ctx.upstream = plan.pool.name
        try:
            await forward(plan.pool, self.holder.client, request, self)  # type: ignore[arg-type]
        finally:
            self._upstream = None  # forward() let go of our callbacks: no cycle through the request
        if cache is not None:
            cache.complete()  # relayed whole: kept if it may be, and handed to the requests waiting for it

    async def aggregate(self, plan: RoutePlan) -> None:
        """Fan out to the aggregate's parts and answer with their merged JSON."""
        ctx = self.ctx
        headers = self.upstream_headers(plan)
        result = await plan.aggregate.run(  # type: ignore[union-attr]
            self.holder.client, ctx.match.params if ctx.match else {}, headers, self)  # type: ignore[arg-type]
        out = httputil.HTTPHeaders()
        out["Content-Type"] = "application/json"
        out["X-Gateway-Completed"] = "true" if result.completed else "false"
        body = result.body
        if plan.compression is not None:
            body = plan.compression.encode_whole(self.request.method or "GET", 200, out, body,
                                                 accept_encoding(self.request.headers))
        self.respond(200, out, body)

    def upstream_headers(self, plan: RoutePlan) -> Fields:
        """The request's headers as the upstream gets them: cleaned, forwarding and identity headers added
        (the plan drops the client's copies of all of these)."""
        ctx, view = self.ctx, self.view
        if view is None:  # only an admitted request is forwarded
            raise InternalError()
        request_headers = view.upstream_source()
        headers = plan.request_headers.apply(request_headers.get_all())
        headers += (("X-Forwarded-For", view.forwarded_for), ("X-Forwarded-Proto", self.request.protocol),
                    ("X-Forwarded-Host", self.host))
        if ctx.match is not None and ctx.match.stripped_prefix:
            headers.append(("X-Forwarded-Prefix", ctx.match.stripped_prefix))
        headers += (("X-Request-Id", ctx.request_id),
                    ("traceparent", traceparent_from(field(request_headers, "Traceparent")) if self.trace is None
                     else self.trace.traceparent))  # the server span's; each try puts its client span's
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

    def on_headers(self, status: int, reason: str, headers: Fields) -> Awaitable[None] | None:
        """Stamp the upstream's head and hold it until its first body byte. An awaitable when a
        plugin's ``on_response`` waits: the upstream is not read on until it is done (a documented
        extension of our client's ``fields_callback``: gateway.upstream.request)."""
        out = tornado_headers(self.plan.response_headers.apply(headers))  # type: ignore[union-attr]
        if status == 204 and "Content-Length" in out:
            del out["Content-Length"]  # RFC 9110 §8.6: never on a 204 (a 304 may keep it: the representation's)
        stamped = self.stamp(status, out)
        if stamped is True:
            self._hold_stamped(status, reason, out)
            return None
        if stamped is False:
            raise InternalError()  # a plugin's on_response raised (logged): answered 500 instead
        return self._hold_when_stamped(stamped, status, reason, out)

    async def _hold_when_stamped(self, stamped: Awaitable[bool], status: int, reason: str,
                                 out: httputil.HTTPHeaders) -> None:
        if not await stamped:
            raise InternalError()  # as above
        self._hold_stamped(status, reason, out)

    def _hold_stamped(self, status: int, reason: str, out: httputil.HTTPHeaders) -> None:
        compression = self.plan.compression  # type: ignore[union-attr]
        if compression is not None:
            self._encoder = compression.start(self.request.method or "GET", status, out,
                                              accept_encoding(self.request.headers))
        self.hold(status, reason or httputil.responses.get(status, "Unknown"), out)

    def on_body(self, chunk: bytes) -> Any:
        if not chunk or self.request.method == "HEAD" or self.phase == Phase.ENDED:
            return None  # nothing to send; or the client left (while a held answer's head waited on a plugin)
        if self._encoder is not None:
            chunk = self._encoder.compress(chunk)  # flushed: a streamed answer stays streamed
        self.ctx.bytes_out += len(chunk)
        return self.relay(chunk)

    async def _finish_encoding(self) -> None:
        """The compressed stream's tail, once the upstream's answer ended (a client gone meanwhile
        gets nothing more)."""
        encoder, self._encoder = self._encoder, None
        if encoder is None or self.phase == Phase.ENDED:
            return
        tail = encoder.finish()
        self.ctx.bytes_out += len(tail)
        try:
            await self.relay(tail)
        except StreamClosedError:
            self.client_left(499)

    # --- bookkeeping ---

    def release(self) -> None:
        """The request is over: let go of the forward, the body and its timer, so that this handler
        leaves no reference cycle behind (a finished task's exception holds frames that hold self).
        The server span, when traced, ends here with the answer's status."""
        if self.trace is not None:
            match = self.ctx.match
            self.trace.end(self._status_code, match.route.path if match is not None else None, self.ctx.client_ip)
        self._stop_body_timer()
        if self.view is not None and self.view.cache is not None:
            self.view.cache.close()
        self._encoder = None
        forwarding, self._forwarding, self._body_stream = self._forwarding, None, None
        if forwarding is not None and forwarding.done() and not forwarding.cancelled():
            forwarding.exception()  # retrieved: nothing to log about it later

    def fail(self, error: GatewayError) -> None:
        if self.trace is not None and self.phase == Phase.BEFORE and error.status >= 500:
            self.trace.error_type = error.code  # the server span says which failure the 5xx was
        super().fail(error)

    def cut_off(self) -> None:
        if self.trace is not None and self.phase != Phase.ENDED:
            self.trace.error_type = "response_interrupted"
        super().cut_off()

    def _stop_forwarding(self) -> None:
        """Abandon the upstream exchange: its failure is then expected, and not logged as unretrieved."""
        if self._upstream is not None:
            self._upstream.abort()
        if self._body_stream is not None:
            self._body_stream.abort()
        if self._forwarding is not None:
            self._forwarding.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _bug(self) -> None:
        log.error("request_id=%s internal error", self.ctx.request_id, exc_info=True)
        self.fail(InternalError())

    def _body_refused(self) -> bool:
        """Whether Tornado gave up the request body because its framing broke (a bad chunk size,
        say), rather than because the client went away. Asked only from on_connection_close.

        Tornado answers a broken body with its own bare 400 and then tells the delegate the
        connection closed (HTTP1Connection._read_message_inner): from its ``finally`` clause,
        after the HTTPInputError was handled, so no exception is in flight. A client that went
        away mid-body raises StreamClosedError through that same ``finally``; so does a chunk-size
        line too long to read (IOStream closes the stream, with UnsatisfiableReadError as its
        ``real_error``), which is a broken body. A request read whole (the client left while its
        answer was awaited) is not refused. Pinned by tests/e2e/test_framing_wire.py.
        """
        if self.read_done:
            return False
        exc = sys.exc_info()[1]
        return not isinstance(exc, StreamClosedError) or isinstance(exc.real_error, UnsatisfiableReadError)
