"""The operational log: where it goes and how each record is written.

:func:`configure_logging` sends the root logger's records to stderr, as text
(``asctime level logger: message``) or as one JSON object per line
(:class:`JsonFormatter`), at ``logging.level``; it is called at start and on
every reload. The access log is apart (:mod:`gateway.accesslog`, on stdout), so
Tornado's own ``tornado.access`` logger is not propagated to it.

It lives in a module of its own so that the command line, the demo and the
server can all reach it without importing one another.
"""

from __future__ import annotations

import json
import logging
import sys

from .accesslog import UtcTimestamp
from .config import GatewayConfig

__all__ = ["configure_logging", "JsonFormatter", "TEXT_FORMAT"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(config: GatewayConfig) -> None:
    """Operational logs go to stderr, replacing the root logger's handlers (the access log is configured apart)."""
    handler = logging.StreamHandler(sys.stderr)
    if config.logging.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.logging.level.upper())
    logging.getLogger("tornado.access").propagate = False


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` as in the access log (ISO 8601, UTC, ``Z``), ``level``,
    ``logger``, ``message``, and ``exception`` when the record carries one."""

    def __init__(self) -> None:
        super().__init__()
        self._timestamp = UtcTimestamp()

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self._timestamp(record.created), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
