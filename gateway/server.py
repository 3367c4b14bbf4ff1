"""Listeners, reload, signals and the ordered shutdown of one process.

:class:`GatewayServer` owns one process's listeners (main and admin), its
:class:`~gateway.runtime.RuntimeHolder`, metrics and access log.

Reload (``SIGHUP``, ``POST /-/reload``): the file is loaded and a new
:class:`~gateway.runtime.Runtime` built and started (which validates keys and TLS
files too); only then is it swapped in, in one assignment. Requests in flight
keep the runtime they were admitted with; pools of unchanged upstreams carry
over with their health, breakers and connections. A bad file raises
:class:`~gateway.config.ConfigError`, is logged, and the running config stays.
``server`` and ``admin`` (addresses, TLS, processes) only change on restart.

Shutdown (``SIGTERM``, ``SIGINT``) in steps: stop accepting, let requests in
flight finish within ``drain_seconds``, close the connections left, stop health
checks and key refresh, close pooled upstream connections.

Several processes (``server.processes``) are run by :mod:`gateway.process`,
which binds the sockets and forks; each worker runs :func:`serve` on them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable

from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .accesslog import AccessLog
from .admin import exposed_without_token, make_admin_app
from .config import ConfigError, GatewayConfig, ListenError
from .headwait import CLIENT_IDLE_SECONDS, HeadDeadline
from .http.app import GatewayApplication
from .http.wsrelay import close_websockets
from .loader import load_config
from .logs import configure_logging
from .malformed import GatewayHTTPServer
from .metrics import Metrics
from .runtime import Runtime, RuntimeHolder
from .upstream import client as upstream_client
from .upstream.target import Target

__all__ = ["GatewayServer", "serve", "bind_listeners", "bind_listener"]

log = logging.getLogger("gateway")

MAX_HEADER_BYTES_READ = 256 * 1024  # larger than SPEC's limits, so the gateway can answer 414/431 itself
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind_listeners(config: GatewayConfig) -> tuple[list[socket.socket], list[socket.socket]]:
    """Bind the main and admin sockets (before forking, so every worker shares them).

    Raises ConfigError first when the listener's certificate cannot be loaded, and
    ListenError when an address cannot be bound.
    """
    _server_ssl(config)
    main = bind_listener("server", config.server.host, config.server.port)
    try:
        admin = bind_listener("admin", config.admin.host, config.admin.port)
    except ListenError:
        for sock in main:
            sock.close()
        raise
    return main, admin


def bind_listener(section: str, host: str, port: int) -> list[socket.socket]:
    """The sockets for ``host``:``port``. Raises :class:`ListenError` naming ``section`` and
    the address when they cannot be bound (the port is taken, a privileged port, an unknown host)."""
    try:
        return bind_sockets(port, host)
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        raise ListenError(f"{section}: cannot listen on {shown}:{port}: {exc.strerror or exc}") from None


def _port(sockets: list[socket.socket]) -> int:
    return int(sockets[0].getsockname()[1]) if sockets else 0


class GatewayServer:
    """One process of the gateway: its runtime, listeners, reload and shutdown.

    ``config_path`` is the file a reload reads (default: the file ``config``
    came from). ``sockets``/``admin_sockets`` are already bound ones (workers);
    without them :meth:`start` binds its own.
    """

    head_wait_seconds = CLIENT_IDLE_SECONDS  # how long a client connection may wait for a request head

    def __init__(
        self,
        config: GatewayConfig,
        *,
        config_path: str | None = None,
        sockets: list[socket.socket] | None = None,
        admin_sockets: list[socket.socket] | None = None,
        on_reloaded: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path or config.source
        upstream_client.install()  # every AsyncHTTPClient() of this process is the pooled one
        self.metrics = Metrics()
        self.holder = RuntimeHolder(
            self._build(config), metrics=self.metrics,
            access_log=AccessLog() if config.logging.access_log else None)
        self.sockets: list[socket.socket] = sockets or []
        self.admin_sockets: list[socket.socket] = admin_sockets or []
        self.http_server: HTTPServer | None = None
        self.admin_server: HTTPServer | None = None
        self.head_deadline: HeadDeadline | None = None
        self._on_reloaded = on_reloaded
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Future[None]] = set()  # replaced runtimes closing their stores

    @property
    def port(self) -> int:
        return _port(self.sockets)

    @property
    def admin_port(self) -> int:
        return _port(self.admin_sockets)

    def bind(self) -> None:
        """Bind the listeners not handed in. Raises ListenError (nothing left bound) when one cannot be."""
        main, admin = self.config.server, self.config.admin
        bound: list[socket.socket] = []
        if not self.sockets:
            self.sockets = bound = bind_listener("server", main.host, main.port)
        if not self.admin_sockets:
            try:
                self.admin_sockets = bind_listener("admin", admin.host, admin.port)
            except ListenError:
                for sock in bound:
                    sock.close()
                if bound:
                    self.sockets = []
                raise

    async def start(self) -> None:
        """Serve on the bound sockets and start background work."""
        self.bind()
        self.holder.client = AsyncHTTPClient()  # this loop's one client: the proxy's, aggregation's, JWKS', health's
        self.http_server = GatewayHTTPServer(  # answers Tornado's own 400s as JSON
            GatewayApplication(self.holder), refusals=self.holder,
            ssl_options=_server_ssl(self.config),
            max_header_size=MAX_HEADER_BYTES_READ,
            max_body_size=1 << 62,  # ProxyHandler answers 413 itself, as JSON
        )
        self.head_deadline = HeadDeadline(self.http_server, self.head_wait_seconds)  # idle and slow heads
        self.head_deadline.start()
        self.http_server.add_sockets(self.sockets)
        self.admin_server = HTTPServer(make_admin_app(self.holder, self.reload_from_admin))
        admin = self.config.admin
        if exposed_without_token(admin.host, admin.token):
            log.warning("the admin listener on %s:%d answers reloads and metrics to anyone who reaches it: "
                        "set admin.token, or bind admin.host to a loopback address", admin.host, self.admin_port)
        self.admin_server.add_sockets(self.admin_sockets)
        await self.holder.runtime.start()
        self._report_targets(self.holder.runtime)

    async def reload(self, path: str | None = None) -> None:
        """Swap in the config at ``path`` (default: ``config_path``).

        Raises ConfigError (logged) for a config that cannot be served; the running one stays.
        """
        path = path or self.config_path
        async with self._reload_lock:
            old = self.holder.runtime
            try:
                config = load_config(path)
                new = self._build(config, previous=old)
                await new.start()
            except ConfigError as exc:
                log.error("reload of %s refused, the running config stays:\n%s", path, exc)
                raise
            self.holder.runtime = new
            previous_config, self.config = self.config, config
            if _restart_only(config) != _restart_only(previous_config):
                log.warning("listener addresses, TLS, processes or the admin section changed: "
                            "that takes effect on restart")
            if config.logging != previous_config.logging:
                self._apply_logging(config)
            await old.stop_work(successor=new)
            self._forget_removed_targets(old, new)
            self._report_targets(new)
            log.info("configuration reloaded from %s", path)
            retiring = asyncio.ensure_future(self._retire(old, new))
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    async def retired(self) -> None:
        """Wait until every runtime a reload replaced has closed its stores."""
        while self._retiring:
            await asyncio.gather(*self._retiring)

    async def _retire(self, old: Runtime, new: Runtime) -> None:
        """The replaced runtime's last work, in the background: its stores are closed once the requests it
        admitted are over (within the old drain_seconds), then the heap is frozen again without it."""
        try:
            await old.close_stores(successor=new, grace_seconds=old.config.server.drain_seconds)
        except Exception:
            log.warning("closing the replaced configuration's stores failed", exc_info=True)
        del old, new  # this frame held the last references: the old runtime is garbage from here on
        if gc.get_freeze_count():
            freeze_heap()  # let the old runtime be collected, and freeze the new one

    async def reload_from_admin(self) -> None:
        """``POST /-/reload``: reload here, then have the supervisor (if any) reload every worker."""
        await self.reload()
        if self._on_reloaded is not None:
            self._on_reloaded()

    async def shutdown(self) -> None:
        """Stop accepting, drain requests in flight within drain_seconds, stop background work."""
        self.holder.draining = True
        if self.head_deadline is not None:
            self.head_deadline.stop()
        for server in (self.http_server, self.admin_server):
            if server is not None:
                server.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.drain_seconds
        while (self.holder.in_flight > 0 or self.holder.websockets) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.holder.in_flight:
            # The gateway cuts these, not their clients: their access-log lines read 503.
            log.warning("drain time (server.drain_seconds: %gs) ran out with %d request(s) in flight: "
                        "the gateway is closing their connections, unanswered", self.config.server.drain_seconds,
                        self.holder.in_flight)
        self.holder.cutting = True
        await close_websockets(self.holder)  # SPEC §6: close 1001, once drain_seconds is over
        for server in (self.http_server, self.admin_server):
            if server is not None:
                await server.close_all_connections()
        await self.retired()
        await self.holder.runtime.stop()
        if isinstance(self.holder.client, upstream_client.PooledHTTPClient):
            # its idle upstream connections; the client itself is the loop's shared one, not ours to close
            self.holder.client.close_idle()
        if self.holder.access_log is not None:
            self.holder.access_log.flush()

    # --- internals ---

    def _build(self, config: GatewayConfig, previous: Runtime | None = None) -> Runtime:
        try:
            return Runtime(config, previous=previous,
                           on_target_change=self._target_changed, on_jwks_refresh=self.metrics.jwks_refreshed,
                           on_rate_limit_degraded=self.metrics.rate_limit_degraded, metrics=self.metrics)
        except (OSError, ssl.SSLError, ValueError) as exc:  # unreadable key or certificate files
            raise ConfigError([f"{config.source or 'config'}: {exc}"]) from exc

    def _target_changed(self, upstream: str, target: Target) -> None:
        self.metrics.target_state(upstream, target.url, target.healthy, target.circuit == "open")
        log.info("upstream %s target %s: healthy=%s circuit=%s", upstream, target.url, target.healthy, target.circuit)

    def _report_targets(self, runtime: Runtime) -> None:
        for name, pool in runtime.pools.items():
            for target in pool.targets:
                self.metrics.target_state(name, target.url, target.healthy, target.circuit == "open")

    def _forget_removed_targets(self, old: Runtime, new: Runtime) -> None:
        kept = {(name, t.url) for name, pool in new.pools.items() for t in pool.targets}
        for name, pool in old.pools.items():
            for target in pool.targets:
                if (name, target.url) not in kept:
                    self.metrics.forget_target(name, target.url)

    def _apply_logging(self, config: GatewayConfig) -> None:
        configure_logging(config)
        if self.holder.access_log is not None:
            self.holder.access_log.flush()
        self.holder.access_log = (self.holder.access_log or AccessLog()) if config.logging.access_log else None


# Net new container objects between two young collections (CPython's default: 700).
YOUNG_GC_THRESHOLD = 20_000


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's sight (``gc.freeze``),
    and collect the young generation every YOUNG_GC_THRESHOLD net new objects, not 700.

    What startup or a reload builds (modules, config, compiled plans, pools) lives as
    long as the process; without this every full collection walks all of it, and those
    pauses were the gateway's p99 at load (README, Performance). Garbage, such as the
    runtime a reload replaced, is collected first, so nothing dead is frozen.

    A request leaves no reference cycle (its objects go by reference counting), so a young
    collection finds only the objects of the requests in flight: at 50 connections that
    is more than 700 at any time, and CPython walked them about every 50 requests for
    nothing (~3 % of the CPU per request; README, Performance). What cyclic garbage there
    is (an exception's traceback) waits at most 20,000 objects, a few MiB, for the collector.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD)


def _restart_only(config: GatewayConfig) -> tuple[object, ...]:
    server = config.server
    return server.host, server.port, server.processes, server.tls, config.admin


def _server_ssl(config: GatewayConfig) -> ssl.SSLContext | None:
    """The main listener's TLS context; ConfigError for certificate or key files that cannot be used."""
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"server.tls: cannot load {tls.certfile} / {tls.keyfile}: {exc}"]) from exc
    return context


async def serve(
    config_path: str,
    config: GatewayConfig,
    ready: Callable[[GatewayServer], None] | None = None,
    *,
    sockets: list[socket.socket] | None = None,
    admin_sockets: list[socket.socket] | None = None,
    supervisor_pid: int | None = None,
) -> None:
    """Run one gateway process until SIGTERM/SIGINT; SIGHUP reloads ``config_path``.

    A worker under a supervisor gets its bound sockets and the supervisor's pid:
    a ``POST /-/reload`` it answers is passed on to the supervisor (``SIGHUP``)
    so that every worker reloads.
    """
    notify = (lambda: os.kill(supervisor_pid, signal.SIGHUP)) if supervisor_pid else None
    server = GatewayServer(config, config_path=config_path, sockets=sockets, admin_sockets=admin_sockets,
                           on_reloaded=notify)
    await server.start()
    freeze_heap()
    if supervisor_pid is None:
        log.info("gateway listening on %s:%d%s", config.server.host, server.port, " (https)" if config.server.tls else "")
        log.info("admin listening on %s:%d", config.admin.host, server.admin_port)
    else:
        log.info("worker %d serving", os.getpid())
    if ready is not None:
        ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        async def do_reload() -> None:
            try:
                await server.reload()
            except ConfigError:
                pass  # logged by reload(); the running config stays
        asyncio.ensure_future(do_reload())

    for signum in SHUTDOWN_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    # A worker is forked with these blocked (see gateway.process): let them in now that they are handled.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*SHUTDOWN_SIGNALS, signal.SIGHUP))
    await stop.wait()
    log.info("shutting down: draining for up to %gs", server.config.server.drain_seconds)
    await server.shutdown()
    for signum in (*SHUTDOWN_SIGNALS, signal.SIGHUP):
        loop.remove_signal_handler(signum)
    log.info("stopped")
