"""gateway.recent: the bounded ring of the last error answers."""

from __future__ import annotations

from itertools import count

from gateway.recent import PATH_SHOWN, RecentErrors


def test_newest_first_bounded_and_the_path_cut() -> None:
    ticks = count(1000)
    ring = RecentErrors(size=3, clock=lambda: float(next(ticks)))
    for i in range(5):
        ring.record(500 + i, "api", "GET", f"/api/{i}", f"id{i}")
    ring.record(404, "", "BREW", "/" + "x" * 5000, "id5")
    assert ring.snapshot() == [
        {"ts": 1005.0, "status": 404, "route": "", "method": "BREW", "path": "/" + "x" * (PATH_SHOWN - 1),
         "request_id": "id5"},
        {"ts": 1004.0, "status": 504, "route": "api", "method": "GET", "path": "/api/4", "request_id": "id4"},
        {"ts": 1003.0, "status": 503, "route": "api", "method": "GET", "path": "/api/3", "request_id": "id3"},
    ]


def test_empty() -> None:
    assert RecentErrors().snapshot() == []
