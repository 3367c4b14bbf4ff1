"""Aggregate routes: one GET fanned out to several upstreams in parallel, JSON answers merged.

Each part goes through its upstream's pool with the same balancing, timeouts,
retries and breaker as a proxied request (:func:`gateway.upstream.forward.forward`:
one ``AsyncHTTPClient().fetch`` per try, on the gateway's pooled client).
The answer is ``{"<part name>": <decoded JSON>, ...}``. A part that failed,
answered a non-2xx status, timed out, or was not JSON is ``null`` and the
answer carries ``X-Gateway-Completed: false``; when every part failed the
route answers 502. The route's ``timeout`` bounds the whole fan-out.

Why a part failed (an upstream's address, a library's words) is logged with the
request id, never put in the answer: one line per failed part when the answer is
partial; when every part failed, the 502's own log line lists them all.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tornado.escape import json_decode, json_encode
from tornado.httpclient import AsyncHTTPClient

from .config import AggregatePart, RouteConfig, UpstreamConfig
from .errors import BadGateway, GatewayError
from .headers import Fields
from .routing import PATH_PARAM
from .upstream.client import ResponseInterrupted
from .upstream.forward import ForwardEvents, forward
from .upstream.pool import UpstreamPool
from .upstream.request import GatewayRequest, template

__all__ = ["AggregatePlan", "AggregateResult", "MAX_PART_BYTES"]

log = logging.getLogger("gateway.aggregate")

MAX_PART_BYTES = 8 * 1024 * 1024  # a part's answer is held in memory to be decoded


@dataclass(frozen=True)
class AggregateResult:
    body: bytes
    completed: bool  # every part answered 2xx JSON


@dataclass(frozen=True)
class _Part:
    name: str
    template: str
    pool: UpstreamPool
    request: GatewayRequest  # the part's template: timeouts, TLS context, idle pool size


class AggregatePlan:
    """One aggregate route's parts, resolved against the runtime's pools at load time."""

    def __init__(
        self,
        route: RouteConfig,
        pools: Mapping[str, UpstreamPool],
        upstreams: Mapping[str, UpstreamConfig],
        ssl_contexts: Mapping[str, ssl.SSLContext],
    ) -> None:
        self.route = route
        self.timeout_seconds = route.timeout_seconds or max(
            upstreams[p.upstream].request_timeout_seconds for p in route.aggregate or ())
        self.parts = tuple(_part(p, pools, upstreams, ssl_contexts) for p in route.aggregate or ())

    async def run(
        self,
        client: AsyncHTTPClient,
        params: Mapping[str, str],
        headers: Fields,
        events: ForwardEvents,
    ) -> AggregateResult:
        """Fetch every part in parallel and merge. Raises BadGateway when every part failed."""
        tasks = [
            asyncio.ensure_future(self._fetch(part, client, substitute(part.template, params), headers, events))
            for part in self.parts
        ]
        done, pending = await asyncio.wait(tasks, timeout=self.timeout_seconds)
        for task in pending:
            task.cancel()
        results = [task.result() if task in done else _Failed("did not finish within the route's timeout")
                   for task in tasks]
        if pending:
            await asyncio.wait(pending)  # let the cancelled parts release their connections
        failures = [(part.name, value.reason) for part, value in zip(self.parts, results, strict=True)
                    if isinstance(value, _Failed)]
        if len(failures) == len(self.parts):
            raise BadGateway("every part of the aggregate failed", log_message="every part of the aggregate failed: "
                             + "; ".join(f"{name}: {reason}" for name, reason in failures))
        if failures:
            request_id = _request_id(headers)
            for name, reason in failures:
                log.info("request_id=%s aggregate part %s failed: %s", request_id, name, reason)
        merged = {part.name: (None if isinstance(value, _Failed) else value)
                  for part, value in zip(self.parts, results, strict=True)}
        return AggregateResult(json_encode(merged).encode(), completed=not failures)

    async def _fetch(self, part: _Part, client: AsyncHTTPClient, path: str, headers: Fields,
                     events: ForwardEvents) -> Any:
        """The part's decoded JSON, or a :class:`_Failed` saying why there is none."""
        sink = _Collector()
        request = part.request.derive()
        request.method, request.path, request.fields = "GET", path, headers
        request.fields_callback, request.streaming_callback = sink.on_headers, sink.on_body
        try:
            response = await forward(part.pool, client, request, events)
        except GatewayError as exc:
            return _Failed(exc.detail)
        except ResponseInterrupted as exc:
            return _Failed(str(exc))
        if not 200 <= response.code < 300:
            return _Failed(f"answered {response.code}")
        if sink.overflow:
            return _Failed(f"answered more than {MAX_PART_BYTES} bytes")
        try:
            return json_decode(b"".join(sink.chunks))
        except (ValueError, UnicodeDecodeError):
            return _Failed("did not answer JSON")


def substitute(template: str, params: Mapping[str, str]) -> str:
    """Put URL-escaped route parameters into a part's path (query included)."""
    return PATH_PARAM.sub(lambda m: quote(params[m.group(1)], safe=""), template)


class _Failed:
    """A part that has no answer to merge, and why (for the log)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<failed: {self.reason}>"


def _request_id(headers: Fields) -> str:
    """The request id the proxy put among the parts' headers (it is added last, so look from the end)."""
    return next((value for name, value in reversed(headers) if name == "X-Request-Id"), "-")


class _Collector:
    """A part's answer as it arrives (the request's callbacks): the body, up to MAX_PART_BYTES."""

    __slots__ = ("chunks", "size", "overflow")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False

    def on_headers(self, status: int, reason: str, headers: Fields) -> None:
        pass

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_PART_BYTES:
            self.overflow = True
            self.chunks.clear()
        elif not self.overflow:
            self.chunks.append(chunk)


def _part(part: AggregatePart, pools: Mapping[str, UpstreamPool], upstreams: Mapping[str, UpstreamConfig],
          ssl_contexts: Mapping[str, ssl.SSLContext]) -> _Part:
    upstream = upstreams[part.upstream]
    return _Part(
        name=part.name,
        template=part.path,
        pool=pools[part.upstream],
        request=template(connect_timeout=upstream.connect_timeout_seconds,
                         request_timeout=upstream.request_timeout_seconds,
                         ssl_context=ssl_contexts.get(part.upstream), max_idle=upstream.max_idle_connections),
    )
