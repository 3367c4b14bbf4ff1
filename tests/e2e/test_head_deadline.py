"""How long a client connection may wait for a request head (gateway.headwait): an idle keep-alive
connection and a head sent too slowly are closed after the bound; a request being answered, or
whose body is being read, is not. Raw sockets, a real gateway and upstream on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tornado.web import Application, RequestHandler

from gateway.server import GatewayServer
from tests.support.raw import parse

WAIT = 0.5  # the bound under test (75 s in production)

ROUTES = """
upstreams:
  up: {{targets: ["{url}"]}}
routes:
  - {{name: all, path: /, upstream: up}}
"""


class Slow(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(3 * WAIT)
        self.write(b"late")

    def post(self) -> None:
        self.write(str(len(self.request.body)).encode())


@pytest.fixture
def gateway(start_upstream: Any, start_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(GatewayServer, "head_wait_seconds", WAIT)

    async def start() -> GatewayServer:
        return await start_gateway(ROUTES.format(url=start_upstream(Application([("/.*", Slow)])).url))
    return start


async def closed_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from ``started`` until the gateway closed the connection; fails on any byte.

    A close shows as EOF, or as a reset when the client's kernel still had a byte of ours in flight
    (the slowloris test writes until it notices): both mean the gateway hung up."""
    try:
        data = await asyncio.wait_for(reader.read(1), 10 * WAIT)
    except ConnectionResetError:
        data = b""
    assert data == b""
    return time.monotonic() - started


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, headers, _ = parse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * WAIT))
    return status, await reader.readexactly(int(headers["content-length"]))


async def test_an_idle_connection_is_closed_after_the_bound(gateway: Any) -> None:
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        took = await closed_after(reader, time.monotonic())
    finally:
        writer.close()
    assert WAIT <= took < WAIT + WAIT / 8 + 0.5


async def test_a_head_trickled_in_is_closed_after_the_bound(gateway: Any) -> None:
    """Slowloris: each byte arrives in time, the head never does; the bound runs from the first byte."""
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    started = time.monotonic()
    try:
        for byte in b"GET / HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200:
            writer.write(bytes([byte]))
            await asyncio.sleep(WAIT / 10)
            if reader.at_eof() or writer.is_closing() or time.monotonic() - started > 4 * WAIT:
                break
            try:
                await writer.drain()
            except ConnectionError:
                break
        took = await closed_after(reader, started)
    finally:
        writer.close()
    assert WAIT <= took < WAIT + WAIT / 8 + 0.5


async def test_an_answer_slower_than_the_bound_is_not_cut_and_the_wait_restarts(gateway: Any) -> None:
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert await answer(reader) == (200, b"late")  # 3 x the bound upstream: the head came in time
        writer.write(b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc")
        assert await answer(reader) == (200, b"3")  # the same connection serves on
        took = await closed_after(reader, time.monotonic())  # and is idle from its last answer
    finally:
        writer.close()
    assert WAIT <= took < WAIT + WAIT / 8 + 0.5


async def test_a_body_read_slowly_is_the_body_timeout_s_not_the_head_bound(gateway: Any) -> None:
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":
            await asyncio.sleep(WAIT)
            writer.write(bytes([byte]))
        assert await answer(reader) == (200, b"4")
    finally:
        writer.close()


async def test_many_idle_connections_go_and_busy_ones_stay(gateway: Any) -> None:
    gw = await gateway()
    started = time.monotonic()  # before the first idle connection opens: none may close sooner than the bound after it
    idle = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(20)]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        times = await asyncio.gather(*(closed_after(r, started) for r, _ in idle))
        assert all(WAIT <= took < WAIT + WAIT / 8 + 0.5 for took in times)
        assert await answer(reader) == (200, b"late")
    finally:
        for _, w in [*idle, (reader, writer)]:
            w.close()
