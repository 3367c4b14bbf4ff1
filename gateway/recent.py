"""The last error answers of one process, for the admin API's ``/-/errors`` and the dashboard.

A bounded ring (a ``deque`` with ``maxlen``): recording is one tuple appended at the
request's end, only for answers with status >= 400, so a route that answers well pays
one integer comparison. Nothing is formatted until someone asks. The path is kept
without its query string (Tornado's ``request.path``), so no query parameter, token or
cookie reaches the ring.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RecentErrors", "RECENT_ERRORS"]

RECENT_ERRORS = 100  # answers kept per process
PATH_SHOWN = 200  # characters of a path kept; a client may send 8 KiB of it


class RecentErrors:
    """The last ``size`` answers with status >= 400, newest last; the clock is injectable."""

    def __init__(self, size: int = RECENT_ERRORS, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[tuple[float, int, str, str, str, str]] = deque(maxlen=size)
        self._clock = clock

    def record(self, status: int, route: str, method: str, path: str, request_id: str) -> None:
        """One error answer (called by the request's report, after its status is known)."""
        self._ring.append((self._clock(), status, route, method, path[:PATH_SHOWN], request_id))

    def snapshot(self) -> list[dict[str, object]]:
        """Newest first, as the admin API shows them."""
        return [
            {"ts": round(ts, 3), "status": status, "route": route, "method": method, "path": path,
             "request_id": request_id}
            for ts, status, route, method, path, request_id in reversed(self._ring)
        ]
