"""Tornado applications, listeners, signals and the ordered shutdown.

:class:`GatewayServer` owns one process's listeners and its
:class:`~gateway.runtime.RuntimeHolder`. Shutdown is written as steps: stop
accepting, let requests in flight finish within ``drain_seconds``, stop
background work, close pooled connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from .config import ConfigError, GatewayConfig
from .errors import ServiceUnavailable
from .loader import load_config
from .proxy import GatewayHandler, ProxyHandler
from .runtime import Runtime, RuntimeHolder
from .upstream.client import UpstreamClient

__all__ = ["GatewayServer", "make_app"]

log = logging.getLogger("gateway")

MAX_HEADER_BYTES_READ = 256 * 1024  # larger than SPEC's limits, so the gateway can answer 414/431 itself


class HealthHandler(GatewayHandler):
    """``GET /-/health``: the process is alive."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(b'{"status":"ok"}')


class ReadyHandler(GatewayHandler):
    """``GET /-/ready``: config loaded and every upstream has a healthy target."""

    def get(self) -> None:
        runtime = self.holder.runtime
        if self.holder.draining or not runtime.ready():
            raise ServiceUnavailable("not ready: " + ("draining" if self.holder.draining else "an upstream has no healthy target"))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "ready"}).encode())


def make_app(holder: RuntimeHolder) -> Application:
    """The main listener's application."""
    kwargs = {"holder": holder}
    return Application(
        [
            (r"/-/health", HealthHandler, kwargs),
            (r"/-/ready", ReadyHandler, kwargs),
            (r".*", ProxyHandler, kwargs),
        ],
        log_function=holder.log_request,
    )


def _server_ssl(config: GatewayConfig) -> ssl.SSLContext | None:
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.certfile, tls.keyfile)
    return context


class GatewayServer:
    """One process of the gateway: its runtime, listeners and lifecycle."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.client = UpstreamClient()
        self.holder = RuntimeHolder(Runtime(config, client=self.client))
        self.http_server: HTTPServer | None = None
        self.sockets: list[Any] = []

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1]) if self.sockets else 0

    def bind(self) -> None:
        """Bind the main listener (before forking workers, so they share it)."""
        self.sockets = bind_sockets(self.config.server.port, self.config.server.host)

    async def start(self) -> None:
        """Serve on the bound sockets and start background work."""
        if not self.sockets:
            self.bind()
        self.http_server = HTTPServer(
            make_app(self.holder),
            ssl_options=_server_ssl(self.config),
            max_header_size=MAX_HEADER_BYTES_READ,
            max_body_size=1 << 62,  # ProxyHandler answers 413 itself, as JSON
            idle_connection_timeout=75,
        )
        self.http_server.add_sockets(self.sockets)
        await self.holder.runtime.start()

    async def reload(self, path: str) -> None:
        """Swap in the config at ``path``; a bad one is refused (raises ConfigError) and the old one stays."""
        config = load_config(path)
        old = self.holder.runtime
        new = Runtime(config, client=self.client, previous=old)
        await new.start()
        self.holder.runtime = new
        self.config = config
        await old.stop(successor=new)
        log.info("configuration reloaded from %s", path)

    async def shutdown(self) -> None:
        """Stop accepting, drain requests in flight within drain_seconds, stop background work."""
        self.holder.draining = True
        if self.http_server is not None:
            self.http_server.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.drain_seconds
        while self.holder.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.holder.in_flight:
            log.warning("drain time over with %d requests in flight", self.holder.in_flight)
        if self.http_server is not None:
            await self.http_server.close_all_connections()
        await self.holder.runtime.stop()
        self.client.close()


async def serve(config_path: str, config: GatewayConfig, ready: Any = None) -> None:
    """Run one gateway process until SIGTERM/SIGINT; SIGHUP reloads ``config_path``."""
    server = GatewayServer(config)
    await server.start()
    log.info("gateway listening on %s:%d", config.server.host, server.port)
    if ready is not None:
        ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        async def do_reload() -> None:
            try:
                await server.reload(config_path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running config:\n%s", exc)
        asyncio.ensure_future(do_reload())

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("shutting down: draining for up to %gs", config.server.drain_seconds)
    await server.shutdown()
