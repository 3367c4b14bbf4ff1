"""The main listener as RequestHandlers (gateway.http): Tornado's own errors as SPEC §4 JSON, the
answer on the wire is the upstream's (nothing of Tornado's defaults added), and a request leaves no
cyclic garbage. Read off the wire with raw sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.iostream import IOStream
from tornado.web import Application, RequestHandler

from gateway.tables import PROXIED_METHODS
from tests.support.garbage import cyclic_garbage
from tests.support.raw import exchange, parse

ROUTES = """
upstreams:
  up: {{targets: ["{url}"]}}
routes:
  - {{name: echo, path: /echo, upstream: up}}
"""


class Echo(RequestHandler):
    def get(self) -> None:
        self.set_header("X-Upstream", "yes")
        self.write(b"hello")  # Tornado adds Server, Date, Content-Type and (a GET) an Etag


def upstream_app() -> Application:
    return Application([("/echo", Echo)])


async def keep_alive(port: int, requests: list[bytes]) -> list[tuple[int, dict[str, str], bytes]]:
    """Send each request on one connection, reading each answer (Content-Length framed) in turn."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status, headers, _ = parse(head)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            answers.append((status, headers, body))
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


@pytest.mark.parametrize("wire, allow", [
    (b"POST /-/health HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n", "GET"),
    (b"DELETE /-/ready HTTP/1.1\r\nHost: gw\r\n\r\n", "GET"),
    (b"BREW /echo HTTP/1.1\r\nHost: gw\r\n\r\n", ", ".join(PROXIED_METHODS)),
])
async def test_tornados_own_405_is_json_and_keeps_the_connection(start_upstream: Any, start_gateway: Any,
                                                                 wire: bytes, allow: str) -> None:
    gw = await start_gateway(ROUTES.format(url=start_upstream(upstream_app()).url))
    refused, after = await keep_alive(gw.port, [wire, b"GET /-/health HTTP/1.1\r\nHost: gw\r\n\r\n"])
    status, headers, body = refused
    assert status == 405
    assert headers["content-type"] == "application/json"
    assert headers["allow"] == allow
    assert json.loads(body)["error"] == "method_not_allowed"
    assert json.loads(body)["request_id"] == headers["x-request-id"]
    assert after[0] == 200 and after[2] == b'{"status":"ok"}'


async def test_a_relayed_answer_is_the_upstreams(start_upstream: Any, start_gateway: Any) -> None:
    upstream = start_upstream(upstream_app())
    gw = await start_gateway(ROUTES.format(url=upstream.url))
    wire = b"GET /echo HTTP/1.1\r\nHost: gw\r\nX-Request-Id: rid-1\r\n\r\n"
    direct_status, direct, _ = parse(await exchange(upstream.port, wire.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")))
    [(status, relayed, body)] = await keep_alive(gw.port, [wire])
    assert (direct_status, status, body) == (200, 200, b"hello")
    # The upstream's fields, and only X-Request-Id added: no Server, Date, Content-Type or Etag of Tornado's.
    assert set(relayed) == (set(direct) - {"connection"}) | {"x-request-id"}
    assert relayed["server"] == direct["server"] and relayed["etag"] == direct["etag"]
    assert relayed["x-request-id"] == "rid-1"


@pytest.mark.parametrize("wire, status", [
    (b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n", 404),
    (b"GET /-/health HTTP/1.1\r\nHost: gw\r\n\r\n", 200),
])
async def test_a_gateway_answer_has_no_tornado_defaults(start_gateway: Any, wire: bytes, status: int) -> None:
    gw = await start_gateway("upstreams: {}\nroutes: []\n")
    [(got, headers, _)] = await keep_alive(gw.port, [wire])
    assert got == status
    assert set(headers) == {"content-type", "content-length", "x-request-id"} | (
        {"cache-control"} if status >= 400 else set())


async def test_keep_alive_requests_leave_no_cyclic_garbage(start_upstream: Any, start_gateway: Any) -> None:
    """Each request's objects (handler, HTTPServerRequest, upstream request, futures) are freed by
    reference counting: the collector finds nothing at all, of the gateway's or of Tornado's."""
    gw = await start_gateway(ROUTES.format(url=start_upstream(upstream_app()).url))
    wire = b"GET /echo HTTP/1.1\r\nHost: gw\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

    async def one() -> None:
        writer.write(wire)
        _, headers, _ = parse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        assert await reader.readexactly(int(headers["content-length"])) == b"hello"

    try:
        for _ in range(3):
            await one()  # warm-up: the upstream's pooled connection, lazily built objects

        async def twenty() -> None:
            for _ in range(20):
                await one()

        _, garbage = await cyclic_garbage(twenty)
    finally:
        writer.close()
        await writer.wait_closed()
    assert garbage == []


@pytest.mark.parametrize("wire, writes", [
    (b"GET /echo HTTP/1.1\r\nHost: gw\r\n\r\n", 1),  # head and body in one write; finishing adds none
    (b"GET /nowhere HTTP/1.1\r\nHost: gw\r\n\r\n", 1),  # the gateway's own answer (404 JSON)
])
async def test_an_answer_takes_one_write_to_the_client(start_upstream: Any, start_gateway: Any,
                                                        monkeypatch: pytest.MonkeyPatch, wire: bytes, writes: int) -> None:
    """Tornado's finish() flushes an empty chunk through the IOStream after the last body chunk went
    out (ResponseWriter.finish skips it): counted on the client connections' stream writes."""
    gw = await start_gateway(ROUTES.format(url=start_upstream(upstream_app()).url))
    await keep_alive(gw.port, [wire])  # warm-up: the upstream's pooled connection
    counted: list[bytes] = []
    real_write = IOStream.write

    def counting_write(stream: IOStream, data: Any) -> Any:
        if stream.socket is not None and stream.socket.getsockname()[1] == gw.port:
            counted.append(bytes(data))
        return real_write(stream, data)

    monkeypatch.setattr(IOStream, "write", counting_write)
    (status, _, body), = await keep_alive(gw.port, [wire])
    assert status in (200, 404)
    assert len(counted) == writes
    assert counted[0].endswith(body)
