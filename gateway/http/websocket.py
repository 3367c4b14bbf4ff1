"""WebSocket relaying (SPEC §6): the handshake as a proxied request, then messages both ways.

:class:`WebSocketProxyHandler` is the :class:`~gateway.http.handler.ProxyHandler`
that :class:`~gateway.http.app.GatewayApplication` picks for a request carrying an
``Upgrade`` header. Its ``prepare()`` is ProxyHandler's: the route step and the
route's compiled steps (CORS origin check, auth, scopes, IP rules, rate limit,
plugins), so a handshake is refused exactly as a request is, as SPEC §4's JSON,
before anything reaches the upstream. On a route without ``websocket: true`` it
goes on as a plain request, its ``Upgrade`` dropped as hop-by-hop: an upgrade is
never relayed there.

On a ``websocket: true`` route the handshake is checked (RFC 6455 §4.2.1,
:func:`gateway.websocket.handshake_error`) where the body would be set up, then
the upstream's handshake is made with the very header plan of a proxied request
(``ProxyHandler.upstream_headers``: X-Forwarded-*, X-Request-Id, traceparent,
identity headers, the client's copies removed) by an :class:`UpstreamLeg`,
Tornado's ``WebSocketClientConnection`` (what ``websocket_connect`` builds). An
upstream that answers anything but ``101`` has its answer relayed as any
answer; one that cannot be reached is 502/503/504. The pool's retries apply as to any
GET without a body (:meth:`WebSocketProxyHandler._handshake`). After the upstream's ``101``
the client gets its own ``101`` (the upstream's subprotocol and fields, through
the route's response rules and ``on_response`` steps) and a
:class:`~gateway.http.wsrelay.Relay` takes both connections until both sides closed.
"""

from __future__ import annotations

import asyncio
import time

from tornado import httputil
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.iostream import IOStream
from tornado.simple_httpclient import HTTPTimeoutError

from ..errors import BadGateway, GatewayError, InternalError, UpstreamTimeout
from ..headers import tornado_headers
from ..policies import Request
from ..runtime import RoutePlan
from ..upstream.pool import Target, UpstreamPool
from ..websocket import HANDSHAKE_FIELDS, accept_value, handshake_error, is_upgrade, upstream_url
from .handler import ProxyHandler
from .response import Phase
from .wsrelay import Relay, UpstreamLeg

__all__ = ["WebSocketProxyHandler"]

_OUT_OF_101 = frozenset({"sec-websocket-accept", "sec-websocket-extensions", "content-length"})


class WebSocketProxyHandler(ProxyHandler):
    """A request with an ``Upgrade`` header: relayed as a WebSocket on a ``websocket: true`` route."""

    upgrading = False  # the route relays WebSockets and this is a valid handshake
    _connecting: UpstreamLeg | None = None

    def admit_body(self, view: Request) -> None:
        """After every step let the request go on: a handshake on a WebSocket route is checked here
        (refused on its head, body unread, when malformed); anything else has its body set up."""
        plan = self.plan
        if plan is None or plan.websocket is None or not is_upgrade(self.request.headers):
            super().admit_body(view)
            return
        error = handshake_error(self.request.method or "", self.request.headers, self.declared_length)
        if error is not None:
            self.refuse_unread(error)
            return
        self.upgrading = True

    async def serve(self) -> None:
        if not self.upgrading:
            await super().serve()
            return
        self.read_done = True
        if self.phase == Phase.ENDED or self.phase == Phase.DECIDED:
            return
        try:
            await self._open()
        except GatewayError as error:
            self.fail(error)
        except Exception:
            self._bug()

    def on_connection_close(self) -> None:
        connecting = self._connecting
        if connecting is not None:  # the client left while the upstream's handshake was on its way
            connecting.abandon()
        super().on_connection_close()

    async def _open(self) -> None:
        """The upstream's handshake, the client's 101, then the relay until both sides closed."""
        plan = self.plan
        if plan is None or plan.pool is None or plan.websocket is None or self.ctx.match is None:
            raise InternalError()
        leg = await self._handshake(plan, plan.pool, plan.websocket.max_message_bytes)
        if leg is None:  # answered with the upstream's refusal, or the client left
            return
        if self.phase == Phase.ENDED:  # the client left meanwhile
            leg.abandon()
            return
        stream = await self._switch(plan, leg)
        if stream is None:  # the client left while a plugin's on_response ran
            return
        relay = Relay(self.holder, plan, self.ctx.route_name, stream, leg)
        self.uncount()  # an open socket is not a request in flight: the drain waits for it on its own
        try:
            await relay.run()
        finally:
            self.ctx.bytes_in, self.ctx.bytes_out = relay.bytes_in, relay.bytes_out
            self.phase = Phase.ENDED
            self.report()

    async def _handshake(self, plan: RoutePlan, pool: UpstreamPool, max_message_bytes: int) -> UpstreamLeg | None:
        """The upstream's 101, tried again on another target as SPEC §4's retries allow a GET without
        a body: after a refused connection, a timeout or an ``on_statuses`` answer, within the pool's
        ``attempts``, backoff and retry budget. None when the upstream's own refusal was relayed
        (the last one kept back for a retry, if no try could go out after all) or the client left."""
        retry, ctx = pool.retry, self.ctx
        retry.record_request()
        tried: list[Target] = []
        held: HTTPResponse | None = None  # the last refusal, kept back for a retry
        last_error: GatewayError | None = None
        while True:
            try:
                target = pool.pick(exclude=tried)  # 503 no_healthy_upstream when none is available
            except GatewayError:
                if held is not None:
                    await self._relay_refusal(held)
                    return None
                if last_error is not None:
                    raise last_error from None  # the failure that led here says more than "no target left"
                raise
            ctx.upstream, ctx.target = pool.name, target.url
            leg = self._connecting = UpstreamLeg(self._upstream_request(plan, target), max_message_bytes)
            pool.begin(target)
            started = time.perf_counter()
            try:
                await leg.connect_future
            except Exception as exc:
                self._connecting = None
                if self.phase == Phase.ENDED:  # the client went away: says nothing about the target
                    pool.end(target, None)
                    return None
                refusal = leg.refusal if leg.refusal is not None and leg.refusal.code != 599 else None
                pool.end(target, refusal.code < 500 if refusal is not None else False)
                self.holder.metrics.upstream_try(pool.name, target.url, time.perf_counter() - started)
                attempt = len(tried) + 1
                if refusal is not None:
                    again = retry.should_retry(method="GET", attempt=attempt, refused=False, failure=None,
                                               status=refusal.code, replayable=True)
                    if not again:
                        await self._relay_refusal(refusal)
                        return None
                    held, last_error, reason = refusal, None, f"status {refusal.code}"
                else:
                    last_error, failure, refused = _handshake_failure(exc, target)
                    if not retry.should_retry(method="GET", attempt=attempt, refused=refused, failure=failure,
                                              status=None, replayable=True):
                        raise last_error from None
                    held, reason = None, failure
                tried.append(target)
                self.retrying(pool, target, reason)
                await asyncio.sleep(retry.backoff_seconds(
                    attempt, held.headers.get("Retry-After") if held is not None else None))
                if self.phase == Phase.ENDED:
                    return None
                continue
            self._connecting = None
            pool.end(target, True)
            self.holder.metrics.upstream_try(pool.name, target.url, time.perf_counter() - started)
            return leg

    def _upstream_request(self, plan: RoutePlan, target: Target) -> HTTPRequest:
        """The upstream handshake: the proxied request's header plan, less this leg's own handshake fields."""
        headers = httputil.HTTPHeaders()
        for name, value in self.upstream_headers(plan):
            if name.lower() not in HANDSHAKE_FIELDS:
                headers.add(name, value)
        query = self.request.query
        path = self.ctx.match.upstream_path + ("?" + query if query else "")  # type: ignore[union-attr]
        return HTTPRequest(upstream_url(target.config, path), headers=headers,
                           connect_timeout=plan.timeouts.connect_seconds,
                           request_timeout=plan.timeouts.request_seconds,
                           ssl_options=plan.ssl_context, decompress_response=False, follow_redirects=False)

    async def _relay_refusal(self, refusal: HTTPResponse) -> None:
        """No 101: the upstream's own answer is relayed, as any answer."""
        stamping = self.on_headers(refusal.code, refusal.reason, list(refusal.headers.get_all()))
        if stamping is not None:  # a plugin's on_response that waits
            await stamping
            if self.phase == Phase.ENDED:  # the client left meanwhile
                return
        body = refusal.body
        if body:
            self.ctx.bytes_out += len(body)
            await self.relay(body)
        self.end()

    async def _switch(self, plan: RoutePlan, leg: UpstreamLeg) -> IOStream | None:
        """Answer the client's handshake with 101 and take its connection from Tornado's HTTP
        (None when the client left meanwhile: the upstream leg is let go)."""
        received = leg.headers if leg.headers is not None else httputil.HTTPHeaders()
        fields = [(name, value) for name, value in received.get_all() if name.lower() not in _OUT_OF_101]
        out = tornado_headers(plan.response_headers.apply(fields))
        out["Upgrade"] = "websocket"
        out["Connection"] = "Upgrade"
        out["Sec-WebSocket-Accept"] = accept_value(self.request.headers["Sec-WebSocket-Key"])
        stamped = self.stamp(101, out)
        if not isinstance(stamped, bool):  # a plugin's on_response that waits
            stamped = await stamped
            if self.phase == Phase.ENDED:
                leg.abandon()
                return None
        if not stamped:
            leg.abandon()
            raise InternalError()  # a plugin's on_response raised (logged)
        self._status_code, self._reason, self._headers = 101, "Switching Protocols", out
        self.phase = Phase.STARTED
        self.finish()
        return self.detach()


def _handshake_failure(exc: Exception, target: Target) -> tuple[GatewayError, str, bool]:
    """A failed upstream handshake with no answer: SPEC §4's error, the failure's kind for the retry
    policy (``"timeout"``, ``"connect"`` or ``"reset"``) and whether the connection was refused
    (nothing sent)."""
    if isinstance(exc, HTTPTimeoutError):
        return UpstreamTimeout(log_message=f"WebSocket handshake to {target.url}: {exc}"), "timeout", False
    error = BadGateway(log_message=f"WebSocket handshake to {target.url} failed: {exc!r}")
    if isinstance(exc, ConnectionRefusedError):
        return error, "connect", True
    return error, "reset", False
