"""How long a client connection may wait for its next request head: one timer per listener.

Tornado bounds that wait per request (``HTTPServer(idle_connection_timeout=...)`` becomes
the connection's ``header_timeout``): every head read is wrapped in ``gen.with_timeout``, a
timer and a chained future per request, about 4 % of the gateway's instructions per proxied
request (callgrind, README Performance). :class:`HeadDeadline` keeps the same bound with one
periodic sweep over the listener's connections instead: a connection seen waiting for the
same head (the same pending read) for ``seconds`` is closed, as Tornado's timeout closes it.
That covers a keep-alive connection left idle and a client that sends its head too slowly
(slowloris) alike; a connection is closed between ``seconds`` and ``seconds + interval``
after its wait began (:func:`expired`: the sweep that falls ``seconds`` after the one that
first saw the wait closes it, however late the loop ran either sweep).

It reads Tornado's private state: ``HTTPServer._connections``, ``HTTP1ServerConnection.stream``
and ``IOStream._read_future`` / ``_read_regex`` (a pending ``read_until_regex`` is a head
being awaited: Tornado reads nothing else that way). Verified on Tornado 6.4-6.6 (setup.cfg);
pinned by tests/unit/test_http_private.py and tests/e2e/test_head_deadline.py.
"""

from __future__ import annotations

from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

__all__ = ["HeadDeadline", "CLIENT_IDLE_SECONDS", "expired"]

CLIENT_IDLE_SECONDS = 75.0  # nginx's keepalive_timeout default, the bound Tornado had here before


class HeadDeadline:
    """Closes ``server``'s connections that have waited ``seconds`` for a request head."""

    def __init__(self, server: HTTPServer, seconds: float = CLIENT_IDLE_SECONDS) -> None:
        server.conn_params.header_timeout = None  # no per-request timer: this sweep bounds the wait
        self._server = server
        self.seconds = seconds
        self._waiting: dict[Any, tuple[Any, float]] = {}  # connection -> (its pending head read, seen since)
        self.interval = max(seconds / 8, 0.05)
        self._timer = PeriodicCallback(self.sweep, self.interval * 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._waiting = {}

    def sweep(self) -> None:
        """Close every connection whose wait for its head began ``seconds`` ago or more."""
        now = IOLoop.current().time()
        previous, waiting = self._waiting, {}
        for connection in list(self._server._connections):  # type: ignore[attr-defined]
            stream = connection.stream
            read = stream._read_future
            if read is None or stream._read_regex is None:
                continue  # answering, or reading a body: not waiting for a head
            seen = previous.get(connection)
            since = seen[1] if seen is not None and seen[0] is read else now
            if expired(now, since, self.seconds, self.interval):
                stream.close()
            else:
                waiting[connection] = (read, since)
        self._waiting = waiting


def expired(now: float, since: float, seconds: float, interval: float) -> bool:
    """Whether a wait first seen by the sweep at ``since`` is over at the sweep at ``now``.

    Sweeps fall on a grid ``interval`` apart, each run as late as the loop lets it: comparing
    ``now - since`` with ``seconds`` exactly missed the sweep that falls ``seconds`` later
    whenever it ran a little less late than the first one, and closed the wait one interval
    further on, past ``seconds + interval`` after it began (`make soak`: 64 slow-header
    clients, 90 s long, all still open at the end in some runs). Half an interval of slack
    keeps that sweep, and can never take the one before it (``seconds - interval`` after)."""
    return now - since >= seconds - interval / 2
