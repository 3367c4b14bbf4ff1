"""The main listener's own endpoints: ``/-/health`` (the process is alive) and ``/-/ready``
(config loaded, every upstream has a healthy target, not draining).

Each is a handler of its own (:class:`HealthHandler`, :class:`ReadyHandler`), answering
in ``prepare()`` before any body byte is read; another method than GET is Tornado's own
405, rendered as SPEC §4's JSON by :class:`~gateway.http.response.ResponseWriter`.
"""

from __future__ import annotations

from tornado import httputil
from tornado.web import stream_request_body

from ..errors import NoHealthyUpstream
from .response import ResponseWriter

__all__ = ["HealthHandler", "ReadyHandler", "ENDPOINTS"]


@stream_request_body
class HealthHandler(ResponseWriter):
    """``GET /-/health``: 200 ``{"status":"ok"}`` while the process serves."""

    SUPPORTED_METHODS = ("GET",)  # type: ignore[assignment]
    route_label = "/-/health"

    def prepare(self) -> None:
        if self.begin():
            self.answer()

    def get(self) -> None:
        """Runs once the (empty) body is read: the answer was made in prepare()."""

    def answer(self) -> None:
        self.respond(200, _json_headers(), b'{"status":"ok"}')


@stream_request_body
class ReadyHandler(HealthHandler):
    """``GET /-/ready``: 200 ``{"status":"ready"}``, or 503 ``no_healthy_upstream`` while draining or
    while an upstream has no healthy target."""

    route_label = "/-/ready"

    def answer(self) -> None:
        holder = self.holder
        if holder.draining or not holder.runtime.ready():
            self.fail(NoHealthyUpstream(
                "not ready: " + ("draining" if holder.draining else "an upstream has no healthy target")))
            return
        self.respond(200, _json_headers(), b'{"status":"ready"}')


ENDPOINTS: dict[str, type[HealthHandler]] = {"/-/health": HealthHandler, "/-/ready": ReadyHandler}


def _json_headers() -> httputil.HTTPHeaders:
    out = httputil.HTTPHeaders()
    out["Content-Type"] = "application/json"
    return out
