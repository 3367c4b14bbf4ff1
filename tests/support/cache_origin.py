"""A counting upstream and gateway config for the cache tests (tests/e2e/test_cache_*.py)."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tornado.iostream import StreamClosedError
from tornado.web import Application, RequestHandler

from tests.support.tokens import SECRET
from tests.support.wait import wait_for

__all__ = ["AUTH", "Origin", "config", "serve", "cache_counts", "wait_for"]

AUTH = f"""
auth:
  jwt: {{algorithms: [HS256], secret: "{SECRET}"}}
"""


class Origin:
    """A real upstream. ``headers`` are added to every answer (a list: names may repeat); the
    body says which call made it (``call N path?query``), ``size`` pads it to that many bytes;
    ``delay`` holds the head back, ``chunks``/``gap`` send the body in pieces (chunked)."""

    def __init__(self, headers: list[tuple[str, str]] | None = None, *, delay: float = 0.0, size: int = 0,
                 chunks: int = 1, gap: float = 0.0, status: int = 200) -> None:
        self.calls = 0
        self.cut = 0
        self.headers = headers or []
        self.delay, self.size, self.chunks, self.gap, self.status = delay, size, chunks, gap, status
        self.seen: list[dict[str, str]] = []
        origin = self

        class Handler(RequestHandler):
            SUPPORTED_METHODS = ("GET", "HEAD", "POST")  # type: ignore[assignment]

            async def get(self, *args: str) -> None:
                origin.calls += 1
                origin.seen.append(dict(self.request.headers))
                body = f"call {origin.calls} {self.request.uri}".encode()
                if origin.size:
                    body = body.ljust(origin.size, b".")
                if origin.delay:
                    await asyncio.sleep(origin.delay)
                self.set_status(origin.status)
                named: set[str] = set()
                for name, value in origin.headers:
                    (self.add_header if name in named else self.set_header)(name, value)
                    named.add(name)
                if self.request.method == "HEAD":
                    self.set_header("Content-Length", str(len(body)))
                    return
                if origin.chunks == 1:
                    self.write(body)
                    return
                step = -(-len(body) // origin.chunks)
                try:
                    for start in range(0, len(body), step):
                        self.write(body[start:start + step])
                        await self.flush()
                        if origin.gap:
                            await asyncio.sleep(origin.gap)
                except StreamClosedError:
                    origin.cut += 1  # the gateway gave up this answer (its client left)

            head = post = get

        self.app = Application([(r"/.*", Handler)])


def config(origin_url: str, cache: str = "{ttl_seconds: 30}", *, auth: str = "none", extra: str = "",
           route_extra: str = "") -> str:
    return textwrap.dedent(f"""
        upstreams:
          origin: {{targets: ["{origin_url}"]}}
        routes:
          - name: pages
            path: /pages
            upstream: origin
            auth: {auth}
            cache: {cache}
        """) + route_extra + textwrap.dedent(extra)


async def serve(start_upstream: Any, start_gateway: Any, origin: Origin, **kwargs: Any) -> Any:
    upstream = start_upstream(origin.app)
    prefix = AUTH if kwargs.get("auth", "none") != "none" else ""
    return await start_gateway(prefix + config(upstream.url, **kwargs))


def cache_counts(gateway: Any) -> dict[str, float]:
    text = gateway.holder.metrics.exposition().decode()
    return {s.labels["result"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "gateway_cache_total"}
