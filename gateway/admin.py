"""The admin listener (SPEC §5): metrics, the route table, upstream state and reload.

Served on ``admin.host``/``admin.port`` (loopback by default), apart from client
traffic. Every answer is JSON except ``/-/metrics`` (Prometheus text format).

* ``GET /-/metrics`` — every metric of :mod:`gateway.metrics`;
* ``GET /-/routes`` — the route table in matching order;
* ``GET /-/upstreams`` — per upstream: balance and, per target, url, weight,
  health, circuit state and requests in flight (this worker's view, named by
  ``pid``);
* ``POST /-/reload`` — re-read the config file: ``200 {"status": "reloaded"}``,
  or ``400 {"error": "invalid_config", "problems": [...]}`` and the running
  config stays.

Other errors (an unknown path, a wrong method, a bug) are SPEC §4's JSON from
:func:`~gateway.errors.render_error`, the main listener's renderer, with a request
id (the client's ``X-Request-Id`` when valid); a bug is logged with that id.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.web import Application, HTTPError, RequestHandler

from .config import ConfigError
from .errors import BadRequest, GatewayError, InternalError, MethodNotAllowed, NoRoute, render_error
from .headers import request_id_from
from .metrics import CONTENT_TYPE
from .runtime import RuntimeHolder

__all__ = ["make_admin_app"]

log = logging.getLogger("gateway")

Reload = Callable[[], Awaitable[None]]


class AdminHandler(RequestHandler):
    """JSON answers and JSON errors; no Tornado defaults."""

    def initialize(self, holder: RuntimeHolder, reload: Reload) -> None:
        self.holder = holder
        self.reload = reload
        self.request_id = request_id_from(self.request.headers.get("X-Request-Id"))

    def set_default_headers(self) -> None:
        # Tornado's clear() sets ``Server: TornadoServer/<version>``: the admin port names no software.
        self.clear_header("Server")

    def answer(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body, indent=2) + "\n")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = self._error(status_code)
        self.set_status(error.status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Request-Id", self.request_id)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.finish(render_error(error, self.request_id))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """A bug is logged with the request id its 500 answer shows; refusals (HTTPError) are not."""
        if typ is not None and not issubclass(typ, HTTPError):
            log.error("request_id=%s admin %s %s: internal error", self.request_id, self.request.method,
                      self.request.path, exc_info=(typ, value, tb))

    def _error(self, status_code: int) -> GatewayError:
        if status_code == 404:
            return NoRoute()
        if status_code == 405:
            return MethodNotAllowed([m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
                                     if getattr(type(self), m.lower()) is not RequestHandler._unimplemented_method])
        if 400 <= status_code < 500:
            return BadRequest()
        return InternalError()


class MetricsHandler(AdminHandler):
    def get(self) -> None:
        metrics = self.holder.metrics
        for name, pool in self.holder.runtime.pools.items():  # a breaker's open -> half-open is lazy: refresh
            for target in pool.targets:
                metrics.target_state(name, target.url, target.healthy, target.circuit == "open")
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(metrics.exposition())


class RoutesHandler(AdminHandler):
    def get(self) -> None:
        self.answer({"routes": self.holder.runtime.routes.describe()})


class UpstreamsHandler(AdminHandler):
    def get(self) -> None:
        self.answer({
            "pid": os.getpid(),
            "upstreams": {
                name: {"balance": pool.config.balance, "ready": pool.ready(), "targets": pool.snapshot()}
                for name, pool in self.holder.runtime.pools.items()
            },
        })


class ReloadHandler(AdminHandler):
    async def post(self) -> None:
        try:
            await self.reload()
        except ConfigError as exc:
            self.answer({"error": "invalid_config", "message": "the new configuration was refused; the running one stays",
                         "status": 400, "problems": exc.problems}, 400)
            return
        self.answer({"status": "reloaded", "source": self.holder.runtime.config.source})


class NotFoundHandler(AdminHandler):
    def prepare(self) -> None:
        self.send_error(404)


def make_admin_app(holder: RuntimeHolder, reload: Reload) -> Application:
    """The admin listener's application; ``reload()`` raises ConfigError for a refused config."""
    kwargs = {"holder": holder, "reload": reload}
    return Application(
        [
            (r"/-/metrics", MetricsHandler, kwargs),
            (r"/-/routes", RoutesHandler, kwargs),
            (r"/-/upstreams", UpstreamsHandler, kwargs),
            (r"/-/reload", ReloadHandler, kwargs),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=kwargs,
        log_function=_log_admin,
    )


def _log_admin(handler: RequestHandler) -> None:
    """Admin requests stay out of the access log and the request metrics; debug level only."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("admin %s %s %d", handler.request.method, handler.request.path, handler.get_status())
