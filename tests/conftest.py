"""Shared test harness: real upstream Tornado apps and real gateways on loopback ephemeral ports.

``io_loop`` (replacing pytest-tornasync's) is the gateway's own IOLoop kind, with
parked readers (:mod:`gateway.ioloop`), on a fresh asyncio loop per test, so every
test runs the servers on it. ``start_upstream(app)`` serves a Tornado Application on 127.0.0.1:<free port>;
``start_gateway(yaml)`` builds a :class:`~gateway.server.GatewayServer` from
YAML (a ``server`` section on a free port is added when the YAML has none) and
starts it on the test's IOLoop; ``http`` is a plain ``SimpleAsyncHTTPClient`` (not the
gateway's, so a test's client never shares its code or connections) that never raises on
4xx/5xx. Everything is stopped at teardown.

The gateway's pooled client is what ``AsyncHTTPClient()`` builds in this process, for every
test alike (:func:`gateway.upstream.client.install`, as a gateway's start does): which test
starts the first gateway changes nothing for the others.

Every test fails on an ERROR log record it did not declare (``error_records``,
autouse; declare with the ``expect_errors`` fixture or marker: tests/support/logs.py).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.platform.asyncio import AsyncIOLoop
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.testing import bind_unused_port
from tornado.web import Application

from gateway.ioloop import ParkedReaders
from gateway.loader import parse_config
from gateway.server import GatewayServer
from gateway.upstream import client as upstream_client
from tests.support.gateway_process import GatewayProcess
from tests.support.logs import ErrorRecords

upstream_client.install()

DEFAULT_SERVER = "server: {host: 127.0.0.1, port: 0, drain_seconds: 0.5}\nadmin: {host: 127.0.0.1, port: 0}\n"


class ParkedReadersLoop(ParkedReaders, AsyncIOLoop):
    """:class:`~gateway.ioloop.GatewayIOLoop`'s behaviour on a new asyncio loop of its own."""


@pytest.fixture
def io_loop() -> Any:
    loop = ParkedReadersLoop(make_current=False)
    asyncio.set_event_loop(loop.asyncio_loop)  # where IOLoop.current() finds it outside a coroutine
    yield loop
    loop.close(all_fds=True)
    asyncio.set_event_loop(None)


class Upstream:
    """A real HTTP server on loopback in front of a Tornado Application."""

    def __init__(self, app: Application, port: int | None = None) -> None:
        self.app = app
        if port is None:
            sock, port = bind_unused_port()
            sockets = [sock]
        else:
            from tornado.netutil import bind_sockets

            sockets = bind_sockets(port, "127.0.0.1")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = HTTPServer(app)
        self.server.add_sockets(sockets)

    def stop(self) -> None:
        self.server.stop()

    async def close(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()


@pytest.fixture
def start_upstream(io_loop: Any) -> Any:
    started: list[Upstream] = []

    def start(app: Application, port: int | None = None) -> Upstream:
        upstream = Upstream(app, port)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        io_loop.run_sync(upstream.close)


@pytest.fixture
def start_gateway(io_loop: Any) -> Any:
    servers: list[GatewayServer] = []

    async def start(yaml_text: str, environ: dict[str, str] | None = None) -> GatewayServer:
        text = textwrap.dedent(yaml_text)
        if "server:" not in text:
            text = DEFAULT_SERVER + text
        config = parse_config(text, environ=environ or {})
        server = GatewayServer(config)
        await server.start()
        server.url = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
        servers.append(server)
        return server

    yield start
    for server in servers:
        io_loop.run_sync(server.shutdown)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Any]:
    """``await gateway_process(yaml_text)``: a gateway in a process of its own (``run.py serve``), on
    the config written to ``tmp_path``; killed at the end if still running."""
    started: list[GatewayProcess] = []

    async def start(yaml_text: str) -> GatewayProcess:
        process = GatewayProcess(tmp_path / "gateway.yaml")
        process.write_config(yaml_text)
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def http(io_loop: Any) -> Any:
    client = SimpleAsyncHTTPClient(force_instance=True)

    def fetch(url: str, **kwargs: Any) -> Awaitable[HTTPResponse]:
        kwargs.setdefault("raise_error", False)
        kwargs.setdefault("follow_redirects", False)
        kwargs.setdefault("decompress_response", False)
        kwargs.setdefault("request_timeout", 10)
        if kwargs.get("body") is None and kwargs.get("method") in ("POST", "PUT", "PATCH"):
            kwargs["allow_nonstandard_methods"] = True
        return client.fetch(url, **kwargs)

    yield fetch
    client.close()


Fetch = Callable[..., Awaitable[HTTPResponse]]


@pytest.fixture(autouse=True)
def error_records(request: pytest.FixtureRequest) -> Iterator[ErrorRecords]:
    """Fails the test on an ERROR log record it did not declare (tests/support/logs.py).

    Set up before, and torn down after, every other fixture of the test, so errors
    logged while gateways and upstreams stop count too.
    """
    records = ErrorRecords()
    for marker in request.node.iter_markers("expect_errors"):
        records.expect(*marker.args, **marker.kwargs)
    records.attach()
    try:
        yield records
    finally:
        records.detach()
    problems = records.problems()
    if problems:
        pytest.fail("error log records:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def expect_errors(error_records: ErrorRecords) -> Callable[..., None]:
    """``expect_errors(logger, pattern, required=True)``: declare an ERROR record this test causes."""
    return error_records.expect


@pytest.fixture
def raw_upstream(io_loop: Any) -> Any:
    """``raw_upstream(answer=OK_ANSWER, close=False, read_delay=0.0)``: a
    :class:`~tests.support.raw.RawUpstream` on loopback, stopped at teardown."""
    from tests.support.raw import OK_ANSWER, RawUpstream

    started: list[RawUpstream] = []

    def start(answer: bytes = OK_ANSWER, close: bool = False, read_delay: float = 0.0) -> RawUpstream:
        server = RawUpstream(answer, close, read_delay)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
