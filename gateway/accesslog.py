"""The access log: one JSON object per line on stdout for each request (SPEC §5).

Keys, always all of them and in this order: ``ts`` (UTC, ISO 8601 with
milliseconds), ``request_id``, ``client`` (the address after trusted-proxy
rules), ``method``, ``path`` (without the query string, which may carry
credentials), ``route``, ``upstream``, ``target``, ``status``, ``bytes_in``,
``bytes_out``, ``duration_ms``, ``subject`` (the token's ``sub``). Unknown
values are ``null``. No header is ever logged, so no token, secret or cookie is.

Each line is one ``os.write`` on the file descriptor: lines from several worker
processes sharing stdout never interleave (a pipe write up to ``PIPE_BUF``,
4 KiB on Linux, is atomic), and nothing waits in a buffer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO

__all__ = ["AccessLog", "FIELDS"]

log = logging.getLogger("gateway")

FIELDS = ("ts", "request_id", "client", "method", "path", "route", "upstream", "target", "status",
          "bytes_in", "bytes_out", "duration_ms", "subject")

_encode = json.JSONEncoder(separators=(",", ":")).encode


class AccessLog:
    """Writes access-log lines to ``stream`` (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        stream = stream if stream is not None else sys.stdout
        self._stream = stream
        try:
            stream.flush()
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.StringIO and friends: no descriptor
            self._fd = None
        self._second = -1
        self._prefix = ""
        self._failed = False

    def write(
        self,
        *,
        request_id: str,
        client: str,
        method: str,
        path: str,
        route: str | None,
        upstream: str | None,
        target: str | None,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_seconds: float,
        subject: str | None,
        now: float | None = None,
    ) -> None:
        """Write one line. A failing stdout is reported once and the line dropped, never raised."""
        line = _encode({
            "ts": self.timestamp(time.time() if now is None else now),
            "request_id": request_id,
            "client": client,
            "method": method,
            "path": path,
            "route": route or None,
            "upstream": upstream,
            "target": target,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(duration_seconds * 1000.0, 3),
            "subject": subject,
        }) + "\n"
        try:
            if self._fd is not None:
                os.write(self._fd, line.encode())
            else:
                self._stream.write(line)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.error("access log: cannot write to stdout (%s); dropping lines", exc)

    def timestamp(self, now: float) -> str:
        """``2024-05-01T12:00:00.123Z``; the part up to the second is formatted once per second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"
