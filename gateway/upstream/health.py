"""Active health checks of one upstream pool.

A :class:`HealthChecker` polls ``health_check.path`` on every target of one pool,
all targets at once, every ``interval_seconds`` (start to start). The path is
absolute on the target's origin (``http://10.0.0.7:9001/health``), as in nginx's
``health_check uri=`` and Kong's ``http_path``; a path in the target URL is not put
before it. A 2xx or 3xx answer within ``timeout_seconds`` (connect and whole
request) is a success; anything else (another status, refused, reset, timeout,
TLS failure) is a failure. ``healthy_threshold`` consecutive successes mark an
unhealthy target healthy, ``unhealthy_threshold`` consecutive failures mark a
healthy one unhealthy. Targets start healthy, so a new pool serves at once.

The checker never blocks traffic: it only flips ``Target.healthy`` and calls
``on_change(target)`` after each flip. A probe is an ``AsyncHTTPClient().fetch``
on the gateway's pooled client (:mod:`gateway.upstream.client`: redirects not
followed, bodies discarded as they arrive), so it reuses the target's kept-alive
connections, and that client has no ``max_clients`` queue: checks never wait
behind proxied requests. ``timeout_seconds`` bounds the connect and the wait for
each part of the answer. ``https://`` targets are checked with the upstream's own TLS
context (``ssl_context``, built once at load by :mod:`gateway.upstream.tls`: the trust
store and client certificate the proxied requests use), so a probe's connection is
pooled with the proxied requests' ones.

:meth:`HealthChecker.stop` waits for the round in flight, if any (at most
``timeout_seconds``): nothing is left on the IOLoop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..config import HealthCheckConfig
from ..errors import GatewayError
from .http1 import ResponseInterrupted
from .target import Target

__all__ = ["HealthChecker"]

log = logging.getLogger("gateway.upstream.health")

USER_AGENT = "gateway-health-check"


class HealthChecker:
    """Polls one pool's targets and keeps their ``healthy`` flag current."""

    def __init__(
        self,
        config: HealthCheckConfig,
        targets: Sequence[Target],
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_change: Callable[[Target], None] | None = None,
        upstream: str = "",
    ) -> None:
        if config.interval_seconds <= 0 or config.timeout_seconds <= 0:
            raise ValueError("health_check interval_seconds and timeout_seconds must be positive")
        if config.healthy_threshold < 1 or config.unhealthy_threshold < 1:
            raise ValueError("health_check thresholds must be at least 1")
        self.config = config
        self.targets = tuple(targets)
        self._ssl_context = ssl_context
        self._on_change = on_change
        self._upstream = upstream
        self._successes = {id(target): 0 for target in self.targets}  # consecutive
        self._failures = {id(target): 0 for target in self.targets}  # consecutive
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether the polling loop is running."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start polling on the running loop; the first round begins at once. No-op when running."""
        if self.running:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling: let the round in flight end. No-op when stopped."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def check_once(self) -> None:
        """One round: check every target at once and apply the verdicts."""
        results = await asyncio.gather(*(self._probe(target) for target in self.targets))
        if self._stopping.is_set():
            return
        for target, ok in zip(self.targets, results, strict=True):
            self._record(target, ok)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                await self.check_once()
            except Exception:  # a bug here must not stop the checks for good
                log.exception("health check round failed for upstream %r", self._upstream)
            delay = started + self.config.interval_seconds - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass

    async def _probe(self, target: Target) -> bool:
        request = HTTPRequest(
            f"{target.origin}{self.config.path}",
            method="GET",
            headers={"User-Agent": USER_AGENT},
            connect_timeout=self.config.timeout_seconds,
            request_timeout=self.config.timeout_seconds,
            follow_redirects=False,
            decompress_response=False,
            streaming_callback=_discard,
            ssl_options=self._ssl_context,  # None only for an upstream without https:// targets
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (GatewayError, ResponseInterrupted) as exc:  # refused, reset, timeout, TLS, garbage
            log.debug("health check of %s failed: %s", target.url, getattr(exc, "detail", exc))
            return False
        return 200 <= response.code < 400

    def _record(self, target: Target, ok: bool) -> None:
        key = id(target)
        if ok:
            self._failures[key] = 0
            self._successes[key] += 1
            flip = not target.healthy and self._successes[key] >= self.config.healthy_threshold
        else:
            self._successes[key] = 0
            self._failures[key] += 1
            flip = target.healthy and self._failures[key] >= self.config.unhealthy_threshold
        if not flip:
            return
        target.healthy = not target.healthy
        if target.healthy:
            log.info("upstream %r target %s is healthy again", self._upstream, target.url)
        else:
            log.warning("upstream %r target %s is unhealthy", self._upstream, target.url)
        if self._on_change is not None:
            self._on_change(target)


def _discard(chunk: bytes) -> None:
    """Health check bodies are not read: drop them as they arrive."""
