"""Running the gateway: one process, or a supervisor and N workers sharing the listeners.

``server.processes: 1`` runs :func:`gateway.server.serve` in this process.
``server.processes: N`` (0 = one per CPU core), after ``tornado.process.fork_processes``:
the supervisor binds the main and admin sockets, then forks N workers that
all accept on them (the kernel spreads connections). Unlike
``fork_processes`` it keeps its workers' pids, because it must reach them:

* ``SIGHUP`` to the supervisor is forwarded to every worker (each reloads);
  a worker that answered ``POST /-/reload`` sends the supervisor a ``SIGHUP``
  for the same effect;
* ``SIGTERM``/``SIGINT`` is forwarded as ``SIGTERM``; every worker drains and
  exits, and the supervisor exits 0 once all of them exited 0;
* a worker that dies otherwise is replaced (at most ``MAX_RESTARTS`` times).

Metrics: before anything imports ``prometheus_client``, the supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh temporary directory (unless the
operator set one), marks each dead worker's gauges dead, and removes the
directory it made when it exits. Signals are blocked while forking, so a
worker never runs the supervisor's handlers; :func:`~gateway.server.serve`
unblocks them once its own are installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine
from types import FrameType
from typing import Any

from tornado.process import cpu_count

from . import ioloop
from .config import ConfigError, GatewayConfig, ListenError
from .tables import MULTIPROC_ENV  # read by prometheus_client when first imported

__all__ = ["run", "Supervisor"]

log = logging.getLogger("gateway")

EXIT_LISTEN = 1  # a listener could not be opened (SPEC §2: 2 is kept for a config that is wrong)
MAX_RESTARTS = 100
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run(config_path: str, config: GatewayConfig) -> int:
    """Serve ``config`` until told to stop; returns the exit code.

    A listener that cannot be opened is one line on stderr and :data:`EXIT_LISTEN`.
    """
    count = config.server.processes or cpu_count()
    try:
        if count == 1:
            from .server import serve

            run_loop(serve(config_path, config))
            return 0
        return Supervisor(config_path, config, count).run()
    except ListenError as exc:
        print(exc, file=sys.stderr)
        return EXIT_LISTEN


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (measured: see README, Performance), else asyncio's loop,
    with :class:`~gateway.ioloop.GatewayIOLoop` as Tornado's IOLoop on it.

    ``GATEWAY_EVENT_LOOP=asyncio`` forces the standard loop.
    """
    if os.environ.get("GATEWAY_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed: serving on asyncio's own event loop")
        else:
            uvloop.run(_on_gateway_ioloop(main))
            return
    asyncio.run(_on_gateway_ioloop(main))


async def _on_gateway_ioloop(main: Coroutine[Any, Any, None]) -> None:
    ioloop.install()
    await main


class Supervisor:
    """Binds the listeners, forks ``count`` workers, forwards signals to them, reaps them."""

    def __init__(self, config_path: str, config: GatewayConfig, count: int) -> None:
        self.config_path = config_path
        self.config = config
        self.count = count
        self.workers: dict[int, int] = {}  # pid -> worker number
        self.stopping = False
        self.failed = False
        self.restarts = 0
        self.sockets: list[socket.socket] = []
        self.admin_sockets: list[socket.socket] = []

    def run(self) -> int:
        """The supervisor's life; in a forked worker this never returns (the worker exits)."""
        own_dir = not os.environ.get(MULTIPROC_ENV)
        if own_dir:
            os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="gateway-metrics-")
        metrics_dir = os.environ[MULTIPROC_ENV]
        try:
            from .server import bind_listeners  # imports prometheus_client: after the variable is set

            self.sockets, self.admin_sockets = bind_listeners(self.config)
            server = self.config.server
            log.info("gateway listening on %s:%d%s with %d workers", server.host,
                     self.sockets[0].getsockname()[1], " (https)" if server.tls else "", self.count)
            log.info("admin listening on %s:%d", self.config.admin.host, self.admin_sockets[0].getsockname()[1])
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            for number in range(self.count):
                self._fork(number)
            for signum in SIGNALS:
                signal.signal(signum, self._on_signal)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self._reap(metrics_dir)
        finally:
            for sock in (*self.sockets, *self.admin_sockets):
                sock.close()
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
                del os.environ[MULTIPROC_ENV]
        log.info("all workers stopped")
        return 1 if self.failed else 0

    def _fork(self, number: int) -> None:
        """Fork worker ``number``; the caller has blocked SIGNALS."""
        pid = os.fork()
        if pid == 0:
            self._work()  # never returns
        self.workers[pid] = number

    def _work(self) -> None:
        """In the forked worker: serve on the inherited sockets, then exit without unwinding into the supervisor."""
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)  # still blocked; serve() installs its own, then unblocks
        code = 0
        try:
            from .server import serve

            run_loop(serve(self.config_path, self.config, sockets=self.sockets,
                              admin_sockets=self.admin_sockets, supervisor_pid=os.getppid()))
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        os._exit(code)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            try:
                from .loader import load_config

                self.config = load_config(self.config_path)  # what a replaced worker will start with
            except ConfigError:
                pass  # every worker logs the problems when it refuses the file
            self._send(signal.SIGHUP)
            return
        if not self.stopping:
            log.info("stopping %d workers", len(self.workers))
        self.stopping = True
        self._send(signal.SIGTERM)

    def _send(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self, metrics_dir: str) -> None:
        from prometheus_client import multiprocess

        while self.workers:
            try:
                pid, status = os.wait()  # signal handlers run while waiting (PEP 475)
            except ChildProcessError:
                break
            number = self.workers.pop(pid, None)
            if number is None:
                continue
            multiprocess.mark_process_dead(pid, metrics_dir)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code != 0:
                    log.error("worker %d exited with %d", pid, code)
                    self.failed = True
                continue
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                log.error("worker %d exited with %d; too many restarts, stopping", pid, code)
                self.failed = self.stopping = True
                self._send(signal.SIGTERM)
                continue
            log.error("worker %d exited with %d; starting another", pid, code)
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            self._fork(number)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
