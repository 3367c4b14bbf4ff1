"""Spans of one request: a server span, and a client span per upstream try (HTTP semantic conventions).

:class:`Tracing` is built once per config from its ``tracing`` section: an SDK tracer provider
sampling with ``ParentBased(TraceIdRatioBased(sample_ratio))`` (a caller's sampled flag is
followed; a new trace is recorded with probability ``sample_ratio``), whose one span processor
is the :class:`~gateway.tracing.export.LoopExporter`.

A request's :class:`RequestTrace` (``Tracing.begin``) holds its server span: a child of the
caller's ``traceparent`` when that is valid (W3C: version ``00``, lower-case hex, trace and
parent id not all zeros, one header line), the root of a new trace otherwise. Its context
goes upstream as ``traceparent``; each try gets a client span of its own
(:meth:`RequestTrace.fetch_for`), whose context replaces it in that try's ``traceparent``.
The caller's ``tracestate`` is passed through unchanged (it is an ordinary header to the
proxy). A request that is not sampled makes no client span: the upstream gets the server
span's (unsampled) context.

Attributes (semantic conventions for HTTP, stable):

- server span ``{method} {http.route}`` (``{method}`` when no route matched):
  ``http.request.method``, ``url.path``, ``url.scheme``, ``network.protocol.version``,
  ``network.peer.address``, ``user_agent.original`` (when sent), ``gateway.request_id``; at its
  end ``client.address`` (after ``trusted_proxies``), ``http.route`` (the route's path as
  configured), ``http.response.status_code``, and for a 5xx or an answer cut short
  ``error.type`` (the gateway's error code such as ``upstream_timeout``, the upstream's status,
  or ``response_interrupted``) with the span's status ERROR;
- client span ``{method}``: ``http.request.method``, ``server.address``, ``server.port``,
  ``url.full`` (the target URL without its query), ``gateway.upstream``,
  ``http.request.resend_count`` (from the second try on), then ``http.response.status_code``,
  or ``error.type`` (``timeout``, ``connect``, ``reset``, ``response_interrupted``,
  ``client_closed``, ``cancelled``) with status ERROR; a status of 400 or more is ERROR too,
  with ``error.type`` the status.

Query strings are left out of every span: they often carry keys and tokens.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace import Span as ApiSpan

from .. import __version__
from ..config import TracingConfig
from ..errors import GatewayError
from ..upstream.client import ResponseInterrupted, failure_kind
from .export import DropReason, LoopExporter

if TYPE_CHECKING:
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httputil import HTTPServerRequest

    from ..context import RequestContext
    from ..upstream.request import GatewayRequest, GatewayResponse

__all__ = ["Tracing", "RequestTrace", "parse_traceparent", "format_traceparent"]

Fetch = Callable[["GatewayRequest"], Awaitable["GatewayResponse"]]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ERROR = Status(StatusCode.ERROR)


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context a W3C ``traceparent`` value names, or None when it is absent or
    invalid (another version, upper-case hex, an all-zero id, two header lines joined by a comma)."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value)  # fullmatch: "$" would let a trailing newline through
    if m is None:
        return None
    trace_id, span_id = int(m.group(1), 16), int(m.group(2), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m.group(3), 16) & 1))


def format_traceparent(context: SpanContext) -> str:
    """The ``traceparent`` value that names ``context``."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 1:02x}"


class Tracing:
    """One config's tracing: the tracer provider, its sampler and its exporter (see the module docstring).

    Building it starts nothing; :meth:`start` (in the running loop) starts the export task and
    :meth:`close` flushes it.
    """

    def __init__(self, config: TracingConfig, *, on_dropped: Callable[[DropReason, int], None] | None = None,
                 on_exported: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.exporter = LoopExporter(config, on_dropped=on_dropped, on_exported=on_exported)
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            resource=Resource.create({"service.name": config.service_name, "service.version": __version__}),
            shutdown_on_exit=False)
        self.provider.add_span_processor(self.exporter)
        self.tracer = self.provider.get_tracer("gateway", __version__)

    def start(self) -> None:
        self.exporter.start()

    async def close(self) -> None:
        await self.exporter.close()

    def begin(self, request: HTTPServerRequest, ctx: RequestContext) -> RequestTrace:
        """Start the server span of ``request`` (as a child of its valid ``traceparent``, if any)."""
        headers = request.headers
        remote = parse_traceparent(headers.get("traceparent"))
        parent = set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None
        method = request.method or ""
        attributes: dict[str, Any] = {
            "http.request.method": method, "url.path": request.path, "url.scheme": request.protocol,
            "network.protocol.version": request.version[5:], "network.peer.address": request.remote_ip or "",
            "gateway.request_id": ctx.request_id,
        }
        agent = headers.get("User-Agent")
        if agent:
            attributes["user_agent.original"] = agent
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        return RequestTrace(self, span, method)


class RequestTrace:
    """One request's server span; the parent of its tries' client spans."""

    __slots__ = ("tracing", "span", "method", "recording", "traceparent", "context", "error_type")

    def __init__(self, tracing: Tracing, span: ApiSpan, method: str) -> None:
        self.tracing = tracing
        self.span = span
        self.method = method
        self.recording = span.is_recording()
        self.traceparent = format_traceparent(span.get_span_context())  # what the upstream gets, unless a try's
        self.context: Context | None = set_span_in_context(span) if self.recording else None
        self.error_type: str | None = None  # set by the handler: the gateway's error code, or a cut-off answer

    def fetch_for(self, client: AsyncHTTPClient, upstream: str) -> Fetch:
        """What one forward calls per try in place of ``client.fetch``: the same fetch inside a
        client span when this request is recorded (plain ``client.fetch`` when it is not)."""
        if not self.recording:
            return client.fetch  # type: ignore[return-value]
        return _Tries(self, client, upstream).fetch

    def end(self, status: int, route_path: str | None, client_address: str) -> None:
        """End the server span with the answer's status (once, when the request is reported)."""
        span = self.span
        if self.recording:
            attributes: dict[str, Any] = {"http.response.status_code": status, "client.address": client_address}
            if route_path is not None:
                attributes["http.route"] = route_path
                span.update_name(f"{self.method} {route_path}")
            error_type = self.error_type
            if error_type is None and status >= 500:
                error_type = str(status)
            if error_type is not None:
                attributes["error.type"] = error_type
                span.set_status(_ERROR)
            span.set_attributes(attributes)
        span.end()


class _Tries:
    """The tries of one forward (one upstream request, or one aggregate part): a client span each."""

    __slots__ = ("trace", "client", "upstream", "sent")

    def __init__(self, trace: RequestTrace, client: AsyncHTTPClient, upstream: str) -> None:
        self.trace = trace
        self.client = client
        self.upstream = upstream
        self.sent = 0

    async def fetch(self, request: GatewayRequest) -> GatewayResponse:
        trace = self.trace
        origin = request.origin
        attributes: dict[str, Any] = {
            "http.request.method": request.method, "server.address": origin.host, "server.port": origin.port,
            "url.full": f"{origin}{request.target.partition('?')[0]}", "gateway.upstream": self.upstream,
        }
        if self.sent:
            attributes["http.request.resend_count"] = self.sent
        self.sent += 1
        span = trace.tracing.tracer.start_span(request.method, context=trace.context, kind=SpanKind.CLIENT,
                                               attributes=attributes)
        request.fields = _with_traceparent(request.fields, format_traceparent(span.get_span_context()))
        try:
            response: GatewayResponse = await self.client.fetch(request)  # type: ignore[assignment]
        except BaseException as exc:
            span.set_status(_ERROR)
            span.set_attribute("error.type", _error_type(exc))
            raise
        else:
            code = response.code
            if code >= 400:
                span.set_status(_ERROR)
                span.set_attributes({"http.response.status_code": code, "error.type": str(code)})
            else:
                span.set_attribute("http.response.status_code", code)
            return response
        finally:
            span.end()


def _with_traceparent(fields: list[tuple[str, str]], value: str) -> list[tuple[str, str]]:
    """A copy of ``fields`` with the gateway's ``traceparent`` field set to ``value`` (a copy: the
    parts of an aggregate share one list)."""
    out = list(fields)
    for i in range(len(out) - 1, -1, -1):
        if out[i][0] == "traceparent":
            out[i] = ("traceparent", value)
            return out
    out.append(("traceparent", value))
    return out


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, GatewayError):
        return failure_kind(exc)[0]
    if isinstance(exc, ResponseInterrupted):
        return "response_interrupted" if exc.upstream_fault else "client_closed"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__qualname__
