"""No answer names the software (issue 13, finding 13): the admin listener and the main listener's own errors.

Read off the wire with raw sockets, so no client library adds or hides a header.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tornado.web import Application

from gateway.demo import EchoHandler

ROUTES = """
upstreams:
  echo: {{targets: ["{url}"]}}
routes:
  - {{name: echo, path: /echo, upstream: echo, methods: [GET]}}
"""


async def raw_head(port: int, request: bytes) -> list[bytes]:
    """The status line and header lines of the answer to ``request``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    return head.rstrip(b"\r\n").split(b"\r\n")


def header_names(lines: list[bytes]) -> set[bytes]:
    return {line.partition(b":")[0].strip().lower() for line in lines[1:]}


@pytest.mark.parametrize("request_line, status", [
    (b"GET /-/routes HTTP/1.1", b"200"),
    (b"GET /-/upstreams HTTP/1.1", b"200"),
    (b"GET /-/metrics HTTP/1.1", b"200"),
    (b"GET /nowhere HTTP/1.1", b"404"),
    (b"DELETE /-/routes HTTP/1.1", b"405"),
])
async def test_admin_answers_carry_no_server_header(start_upstream: Any, start_gateway: Any, request_line: bytes,
                                                    status: bytes) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    gw = await start_gateway(ROUTES.format(url=echo.url))
    lines = await raw_head(gw.admin_port, request_line + b"\r\nHost: admin\r\nConnection: close\r\n\r\n")
    assert lines[0].split(b" ")[1] == status
    assert b"server" not in header_names(lines)


@pytest.mark.parametrize("wire, status", [
    (b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n", b"404"),
    (b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"GET /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", b"414"),
    (b"GET /echo HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
])
async def test_the_main_listeners_own_errors_carry_no_server_header(start_upstream: Any, start_gateway: Any,
                                                                    wire: bytes, status: bytes) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    gw = await start_gateway(ROUTES.format(url=echo.url))
    lines = await raw_head(gw.port, wire)
    assert lines[0].split(b" ")[1] == status
    assert b"server" not in header_names(lines)
