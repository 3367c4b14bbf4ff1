"""The access log: one JSON object per line on stdout for each request (SPEC §5).

Keys, always all of them and in this order: ``ts`` (UTC, ISO 8601 with
milliseconds), ``request_id``, ``client`` (the address after trusted-proxy
rules), ``method``, ``path`` (without the query string, which may carry
credentials), ``route``, ``upstream``, ``target``, ``status``, ``bytes_in``,
``bytes_out``, ``duration_ms``, ``subject`` (the token's ``sub``). Unknown
values are ``null``. No header is ever logged, so no token, secret or cookie is.

Lines are batched: they go out in one ``os.write`` of at most ``PIPE_BUF``
(4 KiB on Linux) whole lines, so lines from several worker processes sharing
stdout never interleave (such a pipe write is atomic), at most
``FLUSH_SECONDS`` after they were logged, and at shutdown (:meth:`flush`). A
syscall per request was the largest single cost of the access log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import IO

__all__ = ["AccessLog", "FIELDS", "UtcTimestamp"]

log = logging.getLogger("gateway")

FIELDS = ("ts", "request_id", "client", "method", "path", "route", "upstream", "target", "status",
          "bytes_in", "bytes_out", "duration_ms", "subject")

_quote = encode_basestring_ascii


def _text(value: str | None) -> str:
    """A JSON string (ASCII, escaped), or null."""
    return "null" if value is None else _quote(value)


class UtcTimestamp:
    """``2026-12-02T05:39:41.123Z`` (ISO 8601, UTC, milliseconds) for a ``time.time()`` value.

    The part up to the second is formatted once per second: ``strftime`` per log line
    was a measurable part of the access log's cost. Used by the operational JSON log too.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


BATCH_BYTES = 4096  # PIPE_BUF: a write up to this size is atomic on a pipe shared by workers
FLUSH_SECONDS = 0.05


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
        self.timestamp = UtcTimestamp()
        self._failed = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

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
        ts = self.timestamp(time.time() if now is None else now)
        # Written out by hand rather than through json.dumps (a third of the access log's cost):
        # free text is quoted by json's own C escaper, numbers are ints and a float.
        line = (f'{{"ts":"{ts}","request_id":{_text(request_id)},"client":{_text(client)},'
                f'"method":{_text(method)},"path":{_text(path)},"route":{_text(route or None)},'
                f'"upstream":{_text(upstream)},"target":{_text(target)},"status":{int(status)},'
                f'"bytes_in":{int(bytes_in)},"bytes_out":{int(bytes_out)},'
                f'"duration_ms":{round(duration_seconds * 1000.0, 3)!r},"subject":{_text(subject)}}}\n')
        data = line.encode()
        if self._pending_bytes + len(data) > BATCH_BYTES:
            self.flush()
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop running (a tool, a test): write at once
                self.flush()

    def flush(self) -> None:
        """Write out the lines waiting in the batch. A failing stdout is reported once, never raised."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            if self._fd is not None:
                os.write(self._fd, data)
            else:
                self._stream.write(data.decode())
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.error("access log: cannot write to stdout (%s); dropping lines", exc)
