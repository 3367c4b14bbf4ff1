"""ProxyHandler: a thin conductor of the policy steps, then the streamed forward.

The policy order is written once, in :meth:`ProxyHandler.admit`: request id →
route → CORS preflight → auth → scopes → rate limit → body rules → forward.

The response-started line: until the first byte of an answer goes to the
client, a failure renders the JSON error of SPEC §4 and a retry may happen;
after it, the failure is logged and the connection closed.

Request bodies: none, buffered (a declared length up to the upstream's
``replay_buffer_bytes``, or any ``validate_json`` body: replayable, so
retryable) or streamed (larger or of unknown length: fed to the upstream as
they arrive, never retried). Response bodies always stream, with backpressure.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import Future
from collections.abc import Awaitable
from typing import Any

from tornado import httputil
from tornado.escape import json_decode
from tornado.web import HTTPError, RequestHandler, stream_request_body

from .context import RequestContext
from .errors import (
    BadRequest,
    BodyTooLarge,
    GatewayError,
    HeadersTooLarge,
    InternalError,
    InvalidJson,
    MethodNotAllowed,
    MissingToken,
    RateLimited,
    UriTooLong,
    render_error,
)
from .headers import request_id_from, traceparent_from
from .ratelimit import limit_key
from .runtime import RoutePlan, Runtime, RuntimeHolder
from .upstream.client import BodyStream, ResponseInterrupted
from .upstream.forward import ForwardEvents, forward
from .upstream.pool import Target, UpstreamPool

__all__ = ["ProxyHandler", "GatewayHandler", "MAX_REQUEST_LINE_BYTES", "MAX_HEADER_BYTES"]

log = logging.getLogger("gateway")

MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024


class GatewayHandler(RequestHandler):
    """Base of every handler on the main listener: JSON errors, no Tornado defaults added."""

    ctx: RequestContext

    def initialize(self, holder: RuntimeHolder) -> None:
        self.holder = holder
        self.ctx = RequestContext("", self.request.remote_ip or "")

    def clear(self) -> None:
        # Tornado's defaults (Server, Content-Type: text/html) must not leak into relayed answers.
        self._headers = httputil.HTTPHeaders()
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def compute_etag(self) -> None:
        return None

    def flush(self, include_footers: bool = False) -> Future[None]:
        self.ctx.bytes_out += sum(map(len, self._write_buffer))  # every body byte passes here: for the access log
        return super().flush(include_footers)

    _client_gone = False

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        if self._client_gone:  # nobody to answer, and on_connection_close already logged the request
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return super().finish(chunk)

    def stamp(self, out: httputil.HTTPHeaders) -> None:
        """Add what every answer carries: X-Request-Id and the context's headers (rate-limit, CORS),
        a ``Vary`` merged with one already there."""
        if self.ctx.request_id:
            out["X-Request-Id"] = self.ctx.request_id
        for name, value in self.ctx.response_headers.items():
            if name == "Vary" and "Vary" in out:
                value = _merge_vary(out.get_list("Vary"), value)  # keep the upstream's own Vary
            out[name] = value

    def fail(self, error: GatewayError) -> None:
        """Answer ``error`` as SPEC §4's JSON, or close the connection if an answer already started."""
        if self._finished or self._client_gone:
            return
        if self._headers_written:
            log.warning("request_id=%s failed after the response started: %s", self.ctx.request_id, error.message)
            self.request.connection.close()  # type: ignore[union-attr]
            return
        self.clear()
        self.set_status(error.status)
        headers = self._headers
        headers["Content-Type"] = "application/json"
        headers["Cache-Control"] = "no-store"
        self.stamp(headers)
        for name, value in error.headers.items():
            headers[name] = value
        self.finish(render_error(error, self.ctx.request_id))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GatewayError):
            self.fail(exc)
        elif isinstance(exc, HTTPError) or exc is None:
            self.fail(_from_status(status_code))
        else:
            self.fail(InternalError())

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, GatewayError):
            return
        if isinstance(value, HTTPError):
            log.info("request_id=%s refused by tornado: %s", self.ctx.request_id, value)
            return
        log.error("request_id=%s internal error", self.ctx.request_id, exc_info=(typ, value, tb))


@stream_request_body
class ProxyHandler(GatewayHandler, ForwardEvents):
    """Every request on the main listener that is not a /-/ endpoint."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]

    runtime: Runtime
    plan: RoutePlan | None = None
    _body_chunks: list[bytes] | None = None
    _body_stream: BodyStream | None = None
    _forwarding: asyncio.Future[None] | None = None
    _abort_upstream: Any = None
    _forwarded_for = ""  # the X-Forwarded-For to send, worked out once by admit()
    _body_limit = 0

    _counted = False

    async def prepare(self) -> None:
        self.holder.in_flight += 1
        self._counted = True
        self.runtime = self.holder.runtime
        pin_nodelay(self.request.connection.stream)  # type: ignore[union-attr]
        request = self.request
        ctx = self.ctx
        ctx.request_id = request_id_from(request.headers.get("X-Request-Id"))
        try:
            await self.admit()
        except GatewayError as error:
            self.fail(error)

    async def admit(self) -> None:
        """The policy steps, in order. Raises a GatewayError to refuse the request."""
        request, ctx, runtime = self.request, self.ctx, self.runtime
        if len(request.uri or "") + len(request.method or "") + 10 > MAX_REQUEST_LINE_BYTES:
            raise UriTooLong()
        if sum(len(k) + len(v) + 4 for k, v in request.headers.get_all()) > MAX_HEADER_BYTES:
            raise HeadersTooLarge()
        self._forwarded_for, ctx.client_ip = runtime.trusted_proxies.forwarded_for(
            request.remote_ip or "", request.headers.get("X-Forwarded-For"))
        method = request.method or "GET"
        preflight_method = request.headers.get("Access-Control-Request-Method") if method == "OPTIONS" else None
        match = runtime.routes.match(preflight_method or method, request.host or "", request.path)
        ctx.match = match
        plan = self.plan = runtime.plans[match.route.name]
        route = match.route
        origin = request.headers.get("Origin")
        if plan.cors is not None:
            cors = plan.cors
            if origin and preflight_method and cors.is_preflight(method, request.headers):
                allowed = cors.preflight_headers(origin, preflight_method,
                                                 request.headers.get("Access-Control-Request-Headers"))
                self.set_status(204)
                for name, value in (allowed or {}).items():
                    self._headers[name] = value
                self.stamp(self._headers)
                self.finish()
                return
            ctx.response_headers.update(cors.response_headers(origin))
        authenticator = runtime.authenticator
        if route.auth != "none" and authenticator is not None:
            ctx.identity = await authenticator.authenticate(request.headers.get("Authorization"))
            if ctx.identity is None:
                if route.auth == "required":
                    raise MissingToken()
            elif route.scopes:
                authenticator.check_scopes(ctx.identity, route.scopes)
        if route.rate_limit is not None and runtime.rate_limits is not None:
            key = limit_key(route.rate_limit, route.name, ctx.subject, ctx.client_ip, request.headers)
            decision = await runtime.rate_limits.hit(key, route.rate_limit.requests, route.rate_limit.window_seconds)
            ctx.response_headers.update(decision.headers())
            if not decision.allowed:
                self.holder.metrics.rate_limit_refused(route.name)
                raise RateLimited()
        self.admit_body(plan)

    def admit_body(self, plan: RoutePlan) -> None:
        """Choose how the body travels: none, buffered (replayable) or streamed."""
        request = self.request
        limit = self._body_limit = self.runtime.server.max_body_bytes
        declared = request.headers.get("Content-Length")
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if length > limit:
                raise BodyTooLarge(f"request body is {length} bytes; the limit is {limit}")
        elif not chunked:
            return
        else:
            length = -1
        streamable = request.method in ("POST", "PUT", "PATCH") or length >= 0
        if plan.route.validate_json or not streamable or 0 <= length <= plan.replay_buffer_bytes:
            self._body_chunks = []
            return
        self._body_stream = BodyStream()
        self._forwarding = asyncio.ensure_future(self.forward(self._body_stream))

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        ctx = self.ctx
        ctx.bytes_in += len(chunk)
        if ctx.bytes_in > self._body_limit:
            # Answered here, not raised: Tornado would log a raise from data_received as uncaught
            # and drop the connection without an answer. The rest of the body is ignored.
            if not self._finished:
                self._stop_forwarding()
                self.fail(BodyTooLarge(f"request body exceeds {self._body_limit} bytes"))
            return None
        if self._body_stream is not None:
            return self._body_stream.put(chunk)
        if self._body_chunks is not None:
            self._body_chunks.append(chunk)
        return None

    async def get(self, *args: str) -> None:
        try:
            if self._forwarding is not None:
                self._body_stream.close()  # type: ignore[union-attr]
                await self._forwarding
            elif self.plan is not None and self.plan.aggregate is not None:
                await self.aggregate(self.plan)
            else:
                body = b"".join(self._body_chunks) if self._body_chunks else None
                if body and self.plan is not None and self.plan.route.validate_json:
                    _check_json(body, self.request.headers.get("Content-Type", ""))
                await self.forward(body)
        except GatewayError as error:
            self.fail(error)
            return
        except ResponseInterrupted as exc:
            log.info("request_id=%s %s", self.ctx.request_id, exc)
            if not self._finished:
                self.request.connection.close()  # type: ignore[union-attr]
            return
        if not self._finished and not self._client_gone:
            self.finish()

    head = post = put = patch = delete = options = get

    async def forward(self, body: bytes | BodyStream | None) -> None:
        """Send the request to the route's upstream (tries and retries in upstream.forward) and relay the answer."""
        plan, ctx, request = self.plan, self.ctx, self.request
        if plan is None or plan.pool is None or ctx.match is None:
            raise InternalError()
        headers = self.upstream_headers(plan)
        if isinstance(body, BodyStream) and "Content-Length" in request.headers:
            headers["Content-Length"] = request.headers["Content-Length"]
        query = request.query
        ctx.upstream = plan.pool.name
        await forward(
            plan.pool, self.runtime.client, method=request.method or "GET",
            path=ctx.match.upstream_path + ("?" + query if query else ""),
            headers=headers, body=body, sink=self, timeouts=plan.timeouts, ssl_context=plan.ssl_context,
            on_connection=self._bind_abort, events=self,
        )

    async def aggregate(self, plan: RoutePlan) -> None:
        """Fan out to the aggregate's parts and answer with their merged JSON."""
        ctx = self.ctx
        headers = self.upstream_headers(plan)
        headers.pop("Content-Length", None)
        result = await plan.aggregate.run(  # type: ignore[union-attr]
            self.runtime.client, ctx.match.params if ctx.match else {}, headers, self)
        self.set_status(200)
        out = self._headers
        out["Content-Type"] = "application/json"
        out["X-Gateway-Completed"] = "true" if result.completed else "false"
        self.stamp(out)
        self.finish(result.body)

    def upstream_headers(self, plan: RoutePlan) -> httputil.HTTPHeaders:
        """The request's headers as the upstream gets them: cleaned, forwarding and identity headers added."""
        ctx, request = self.ctx, self.request
        headers = plan.request_headers.apply(request.headers)
        headers["X-Forwarded-For"] = self._forwarded_for
        headers["X-Forwarded-Proto"] = request.protocol
        headers["X-Forwarded-Host"] = request.host or ""
        if ctx.match is not None and ctx.match.stripped_prefix:
            headers["X-Forwarded-Prefix"] = ctx.match.stripped_prefix
        headers["X-Request-Id"] = ctx.request_id
        headers["traceparent"] = traceparent_from(request.headers.get("traceparent"))
        if ctx.identity is not None:
            for name, value in ctx.identity.headers:
                headers[name] = value
        return headers

    # --- ForwardEvents ---

    def attempt(self, pool: UpstreamPool, target: Target) -> None:
        self.ctx.target = target.url

    def finished(self, pool: UpstreamPool, target: Target, seconds: float, ok: bool) -> None:
        self.holder.metrics.upstream_try(pool.name, target.url, seconds)

    def retrying(self, pool: UpstreamPool, target: Target, reason: str) -> None:
        self.holder.metrics.retry(pool.name)
        log.info("request_id=%s retrying after %s from %s", self.ctx.request_id, reason, target.url)

    # --- ResponseSink: the upstream's answer, relayed ---

    def on_headers(self, status: int, reason: str, headers: httputil.HTTPHeaders) -> None:
        self._status_code = status
        self._reason = reason or httputil.responses.get(status, "Unknown")
        out = self.plan.response_headers.apply(headers)  # type: ignore[union-attr]
        self.stamp(out)
        self._headers = out

    def on_body(self, chunk: bytes) -> Awaitable[None] | None:
        self._write_buffer.append(chunk)
        return self.flush()

    def _bind_abort(self, abort: Any) -> None:
        self._abort_upstream = abort

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.holder.in_flight -= 1

    def on_connection_close(self) -> None:
        self._uncount()
        self._stop_forwarding()
        super().on_connection_close()  # ends a request still waiting for its body
        if not self._finished:
            self._client_gone = True
            # Never finished, so Tornado will not log it: the access log and metrics still count it,
            # as 499 (nginx's "client closed request") when no answer had started.
            if not self._headers_written:
                self._status_code = 499
            self.application.log_request(self)

    def _stop_forwarding(self) -> None:
        """Abandon the upstream exchange: its failure is then expected, and not logged as unretrieved."""
        if self._abort_upstream is not None:
            self._abort_upstream()
        if self._body_stream is not None:
            self._body_stream.abort()
        if self._forwarding is not None:
            self._forwarding.add_done_callback(lambda f: f.cancelled() or f.exception())

    def on_finish(self) -> None:
        self._uncount()


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


def _merge_vary(existing: list[str], added: str) -> str:
    """One ``Vary`` value: the upstream's fields, then those of ``added`` it lacks
    (field names compare case-insensitively; ``*`` already varies on everything)."""
    fields = [f.strip() for line in existing for f in line.split(",") if f.strip()]
    if "*" not in fields:
        seen = {f.lower() for f in fields}
        fields += [f.strip() for f in added.split(",") if f.strip() and f.strip().lower() not in seen]
    return ", ".join(fields)


def _check_json(body: bytes, content_type: str) -> None:
    """A JSON body on a validate_json route must decode; other media types pass untouched."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media and not (media == "application/json" or media.endswith("+json")):
        return
    try:
        json_decode(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None


def _from_status(status: int) -> GatewayError:
    """Tornado's own refusals (unknown method, malformed request) in our vocabulary."""
    if status == 405:
        return MethodNotAllowed(list(ProxyHandler.SUPPORTED_METHODS))
    if 400 <= status < 500:
        return BadRequest()
    return InternalError()
