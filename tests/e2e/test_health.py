"""Active health checks against real Tornado upstreams on loopback ephemeral ports."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from gateway.config import HealthCheckConfig, Origin, TargetConfig, UpstreamConfig
from gateway.upstream.client import PooledHTTPClient
from gateway.upstream.pool import UpstreamPool
from gateway.upstream.target import Target
from tests.support.wait import wait_for

INTERVAL = 0.05


class Upstream:
    """A real upstream whose /health answers ``status`` (switchable) and counts the answers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.answers: list[int] = []
        upstream = self

        class Health(RequestHandler):
            def get(self) -> None:
                upstream.answers.append(upstream.status)
                self.set_status(upstream.status)
                if upstream.status in (301, 302):
                    self.set_header("Location", "/elsewhere")
                self.finish("ok" if upstream.status < 400 else "down")

        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(Application([("/health", Health)]))
        self.server.add_sockets([self.socket])

    async def close(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()


def target(port: int) -> TargetConfig:
    return TargetConfig(url=f"http://127.0.0.1:{port}", origin=Origin("http", "127.0.0.1", port))


def stopped_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    sock, port = bind_unused_port()
    sock.close()
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def health_pool(
    ports: list[int], changes: list[tuple[int, bool, int]], answers: Callable[[], int], **check: float
) -> UpstreamPool:
    config = UpstreamConfig(
        name="orders",
        targets=tuple(target(port) for port in ports),
        health_check=HealthCheckConfig(
            path="/health",
            interval_seconds=INTERVAL,
            timeout_seconds=check.get("timeout_seconds", 0.5),
            healthy_threshold=int(check.get("healthy_threshold", 2)),
            unhealthy_threshold=int(check.get("unhealthy_threshold", 3)),
        ),
    )

    def on_change(t: Target) -> None:  # note how many answers the switchable upstream had given
        changes.append((t.origin.port, t.healthy, answers()))

    return UpstreamPool(config, on_state_change=on_change)


async def test_target_goes_out_after_unhealthy_threshold_and_back_after_healthy_threshold() -> None:
    steady, flappy = Upstream(200), Upstream(200)
    down = stopped_port()
    changes: list[tuple[int, bool, int]] = []
    pool = health_pool([steady.port, flappy.port, down], changes, lambda: len(flappy.answers))
    t_steady, t_flappy, t_down = pool.targets
    try:
        started = time.monotonic()
        await pool.start()
        assert time.monotonic() - started < INTERVAL  # start() never waits for a check
        assert [t.healthy for t in pool.targets] == [True, True, True]  # targets start healthy

        await wait_for(lambda: not t_down.healthy, 3.0)  # refused 3 times in a row
        assert changes[0][:2] == (down, False)
        assert [t.healthy for t in pool.targets] == [True, True, False]
        assert {pool.pick().url for _ in range(20)} == {t_steady.url, t_flappy.url}

        await wait_for(lambda: len(flappy.answers) >= 5, 3.0)
        assert flappy.answers == [200] * len(flappy.answers)
        flappy.status = 503
        switched = len(flappy.answers)
        await wait_for(lambda: not t_flappy.healthy, 3.0)
        assert changes[1] == (flappy.port, False, switched + 3)  # exactly unhealthy_threshold 503s
        assert {pool.pick().url for _ in range(20)} == {t_steady.url}
        assert pool.ready() is True

        flappy.status = 200
        switched = len(flappy.answers)
        await wait_for(lambda: t_flappy.healthy, 3.0)
        assert changes[2] == (flappy.port, True, switched + 2)  # exactly healthy_threshold 200s
        assert {pool.pick().url for _ in range(20)} == {t_steady.url, t_flappy.url}
        assert len(changes) == 3
        assert t_steady.healthy is True and steady.answers == [200] * len(steady.answers)
        assert pool.snapshot()[2] == {
            "url": f"http://127.0.0.1:{down}",
            "weight": 1,
            "healthy": False,
            "circuit": "closed",
            "in_flight": 0,
        }
    finally:
        await pool.stop()
        await steady.close()
        await flappy.close()


async def test_stop_leaves_nothing_running() -> None:
    upstream = Upstream(200)
    pool = health_pool([upstream.port], [], lambda: 0)
    client = AsyncHTTPClient()
    assert isinstance(client, PooledHTTPClient)
    opened = client.pool.opened
    try:
        await pool.start()
        await pool.start()  # a second start is a no-op
        await wait_for(lambda: len(upstream.answers) >= 2, 3.0)
        await pool.stop()
        await pool.stop()  # and so is a second stop
        polls = len(upstream.answers)
        await asyncio.sleep(INTERVAL * 4)
        assert len(upstream.answers) == polls
        # Every probe went over one kept-alive connection of the loop's pooled client, which
        # keeps it idle after the checker stopped; closing the idle ones leaves nothing running.
        assert client.pool.opened == opened + 1
        client.close_idle()
        await asyncio.sleep(INTERVAL)
        assert asyncio.all_tasks() == {asyncio.current_task()}
    finally:
        await upstream.close()


async def test_redirect_is_healthy_and_not_followed() -> None:
    upstream = Upstream(302)
    pool = health_pool([upstream.port], [], lambda: 0, unhealthy_threshold=1)
    try:
        await pool.start()
        await wait_for(lambda: len(upstream.answers) >= 3, 3.0)
        assert pool.targets[0].healthy is True
        assert upstream.answers == [302] * len(upstream.answers)  # /elsewhere never asked for
    finally:
        await pool.stop()
        await upstream.close()


@pytest.mark.parametrize("status", [404, 500, 503])
async def test_other_statuses_are_failures(status: int) -> None:
    upstream = Upstream(status)
    changes: list[tuple[int, bool, int]] = []
    pool = health_pool([upstream.port], changes, lambda: len(upstream.answers), unhealthy_threshold=2)
    try:
        await pool.start()
        await wait_for(lambda: not pool.targets[0].healthy, 3.0)
        assert changes == [(upstream.port, False, 2)]
        assert pool.ready() is False
    finally:
        await pool.stop()
        await upstream.close()


async def test_a_silent_target_times_out_and_goes_out(silent_port: int) -> None:
    changes: list[tuple[int, bool, int]] = []
    pool = health_pool([silent_port], changes, lambda: 0, timeout_seconds=0.1, unhealthy_threshold=2)
    try:
        started = time.monotonic()
        await pool.start()
        await wait_for(lambda: not pool.targets[0].healthy, 3.0)
        assert time.monotonic() - started >= 0.2  # two timed-out checks of 0.1 s
        assert changes == [(silent_port, False, 0)]
    finally:
        started = time.monotonic()
        await pool.stop()
        assert time.monotonic() - started < 0.5  # waits for the check in flight at most (0.1 s), with room for a stall
