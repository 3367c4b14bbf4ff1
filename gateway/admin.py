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
  config stays;
* ``GET /-/stats`` — per route: requests, answers by status, 4xx/5xx, duration
  buckets, p50/p99 (:mod:`gateway.stats`, from the same metrics as ``/-/metrics``);
* ``GET /-/errors`` — this worker's last error answers (status >= 400), newest
  first (:mod:`gateway.recent`);
* ``GET /`` — the dashboard (:mod:`gateway.dashboard`), a static page that reads
  the endpoints above.

``admin.token``: when set, every endpoint above and any unknown path answer 401
(SPEC §4's JSON, ``WWW-Authenticate: Bearer``) unless the request carries exactly
one ``Authorization: Bearer <token>``; the token is compared in constant time.
The dashboard's three static files are the exception: they are the same bytes for
everyone and hold no data, and a browser cannot put a header on a page it
navigates to; the page asks for the token and sends it with each fetch.

Other errors (an unknown path, a wrong method, a bug) are SPEC §4's JSON from
:func:`~gateway.errors.render_error`, the main listener's renderer, with a request
id (the client's ``X-Request-Id`` when valid); a bug is logged with that id.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.web import Application, HTTPError, RequestHandler

from .config import ConfigError
from .dashboard import ASSETS, CONTENT_SECURITY_POLICY
from .errors import (
    BadRequest,
    GatewayError,
    InternalError,
    InvalidToken,
    MethodNotAllowed,
    MissingToken,
    NoRoute,
    render_error,
)
from .headers import request_id_from
from .metrics import CONTENT_TYPE
from .runtime import RuntimeHolder
from .stats import summary

__all__ = ["make_admin_app", "check_bearer"]

log = logging.getLogger("gateway")

Reload = Callable[[], Awaitable[None]]


class AdminHandler(RequestHandler):
    """JSON answers and JSON errors; no Tornado defaults."""

    def initialize(self, holder: RuntimeHolder, reload: Reload, token: bytes | None) -> None:
        self.holder = holder
        self.reload = reload
        self.token = token
        self.request_id = request_id_from(self.request.headers.get("X-Request-Id"))

    def prepare(self) -> None:
        if self.token is not None:
            refusal = check_bearer(self.request.headers.get_list("Authorization"), self.token)
            if refusal is not None:
                self.refuse(refusal)

    def refuse(self, error: GatewayError) -> None:
        """Answer ``error`` as SPEC §4's JSON and end the request (from prepare)."""
        self._refusal = error
        self.send_error(error.status)

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
        refusal: GatewayError | None = getattr(self, "_refusal", None)
        if refusal is not None and refusal.status == status_code:
            return refusal
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


class StatsHandler(AdminHandler):
    def get(self) -> None:
        names = [str(route["name"]) for route in self.holder.runtime.routes.describe()]
        body = summary(self.holder.metrics.families(), names)
        self.answer({"pid": os.getpid(), "time": round(time.time(), 3), **body})


class ErrorsHandler(AdminHandler):
    def get(self) -> None:
        self.answer({"pid": os.getpid(), "errors": self.holder.recent_errors.snapshot()})


class DashboardHandler(AdminHandler):
    """The dashboard's static files: public (see the module's docstring), strict CSP."""

    def initialize(self, holder: RuntimeHolder, reload: Reload, token: bytes | None,  # type: ignore[override]
                   asset: tuple[str, bytes]) -> None:
        super().initialize(holder, reload, None)
        self.asset = asset

    def get(self) -> None:
        content_type, body = self.asset
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(body)


class NotFoundHandler(AdminHandler):
    def prepare(self) -> None:
        super().prepare()  # with admin.token, a stranger learns no path: 401 before 404
        if not self._finished:
            self.send_error(404)


def check_bearer(values: list[str], token: bytes) -> GatewayError | None:
    """None when ``values`` (every ``Authorization`` header) is exactly one ``Bearer <token>``.

    Else the refusal: :class:`MissingToken` without a Bearer credential,
    :class:`InvalidToken` for a repeated header or another token. The comparison
    takes the same time wherever the tokens differ (``hmac.compare_digest``).
    """
    if not values:
        return MissingToken("the admin API needs Authorization: Bearer <admin.token>")
    if len(values) > 1:
        return InvalidToken("one Authorization header is expected")
    scheme, _, credential = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return MissingToken("the admin API needs Authorization: Bearer <admin.token>")
    given = credential.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, token):
        return InvalidToken("the admin token is not valid")
    return None


def exposed_without_token(host: str, token: str | None) -> bool:
    """Whether the admin listener would answer other machines with no ``admin.token``: a host that
    is not a loopback address or ``localhost`` (``0.0.0.0``, ``::`` and names all reach further)."""
    if token:
        return False
    if host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def make_admin_app(holder: RuntimeHolder, reload: Reload) -> Application:
    """The admin listener's application; ``reload()`` raises ConfigError for a refused config.

    ``admin.token`` is read here, once: like the rest of the admin section it changes on restart.
    """
    token = holder.runtime.config.admin.token
    kwargs = {"holder": holder, "reload": reload, "token": token.encode() if token else None}
    return Application(
        [
            (r"/-/metrics", MetricsHandler, kwargs),
            (r"/-/routes", RoutesHandler, kwargs),
            (r"/-/upstreams", UpstreamsHandler, kwargs),
            (r"/-/reload", ReloadHandler, kwargs),
            (r"/-/stats", StatsHandler, kwargs),
            (r"/-/errors", ErrorsHandler, kwargs),
            *((re.escape(path), DashboardHandler, {**kwargs, "asset": asset}) for path, asset in ASSETS.items()),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=kwargs,
        log_function=_log_admin,
    )


def _log_admin(handler: RequestHandler) -> None:
    """Admin requests stay out of the access log and the request metrics; debug level only."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("admin %s %s %d", handler.request.method, handler.request.path, handler.get_status())
