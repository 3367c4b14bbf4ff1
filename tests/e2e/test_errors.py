"""Errors made by the gateway (SPEC §4): JSON with a request id, and the gateway keeps serving after each."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from gateway.demo import EchoHandler
from tests.support.raw import exchange

MAX_BODY = 1024


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.body_bytes = 0


def counting_app(counter: Counter) -> Application:
    class Counted(RequestHandler):
        SUPPORTED_METHODS = ("GET", "POST", "PUT")  # type: ignore[assignment]

        def prepare(self) -> None:
            counter.requests += 1
            counter.body_bytes += len(self.request.body)

        def get(self) -> None:
            self.finish("counted")

        post = put = get

    class Slow(RequestHandler):
        async def get(self) -> None:
            counter.requests += 1
            await asyncio.sleep(1.0)
            self.finish("too late")

    return Application([(r"/slow.*", Slow), (r".*", Counted)])


class JunkServer(TCPServer):
    """A raw TCP upstream: reads the request head, then writes ``payload`` (or resets) and closes."""

    def __init__(self, payload: bytes | None) -> None:
        super().__init__()
        self.payload = payload
        sock, self.port = bind_unused_port()
        self.add_sockets([sock])

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        try:
            await stream.read_until(b"\r\n\r\n")
            if self.payload is None:  # an abortive close: the peer sees a reset
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                await stream.write(self.payload)
        except StreamClosedError:
            pass
        stream.close()


def closed_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


@pytest.fixture
def junk_servers(io_loop) -> Iterator[Callable[[bytes | None], JunkServer]]:
    started: list[JunkServer] = []

    def start(payload: bytes | None) -> JunkServer:
        server = JunkServer(payload)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def config(ok_url: str, counted_url: str, garbage_port: int, reset_port: int) -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, max_body_bytes: {MAX_BODY}, drain_seconds: 0.5}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams:
      ok: {{targets: ["{ok_url}"]}}
      counted: {{targets: ["{counted_url}"]}}
      refused: {{targets: ["http://127.0.0.1:{closed_port()}"]}}
      garbage: {{targets: ["http://127.0.0.1:{garbage_port}"]}}
      reset: {{targets: ["http://127.0.0.1:{reset_port}"]}}
    routes:
      - {{name: ok, path: /ok, upstream: ok}}
      - {{name: readonly, path: /readonly, upstream: ok, methods: [GET]}}
      - {{name: counted, path: /counted, upstream: counted}}
      - {{name: slow, path: /slow, upstream: counted, timeout: 0.3}}
      - {{name: refused, path: /refused, upstream: refused}}
      - {{name: garbage, path: /garbage, upstream: garbage}}
      - {{name: reset, path: /reset, upstream: reset}}
    """


@pytest.fixture
def gateway(io_loop, start_upstream, start_gateway, junk_servers):  # type: ignore[no-untyped-def]
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    counter = Counter()
    counted = start_upstream(counting_app(counter))
    garbage = junk_servers(b"HELLO THERE\r\n\r\nthis is not http")
    reset = junk_servers(None)
    text = config(echo.url, counted.url, garbage.port, reset.port)
    gw = io_loop.run_sync(lambda: start_gateway(text))
    gw.counter = counter
    return gw


def assert_error(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.code == status, resp.body
    assert resp.headers["Content-Type"] == "application/json"
    body = json.loads(resp.body)
    assert set(body) == {"error", "message", "status", "request_id"}
    assert (body["error"], body["status"]) == (code, status)
    assert body["message"] and "Traceback" not in body["message"]
    assert len(body["request_id"]) == 32
    assert resp.headers["X-Request-Id"] == body["request_id"]
    return body


async def still_serving(gw, http) -> None:  # type: ignore[no-untyped-def]
    resp = await http(gw.url + "/ok/after")
    assert resp.code == 200
    assert json.loads(resp.body)["path"] == "/ok/after"


class RawResponse:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.code = int(lines[0].split(" ")[1])
        self.headers = dict(line.split(": ", 1) for line in lines[1:])


async def test_no_route_is_404(gateway, http) -> None:
    assert_error(await http(gateway.url + "/nothing/here"), 404, "no_route")
    await still_serving(gateway, http)


async def test_client_request_id_is_used_in_the_error(gateway, http) -> None:
    resp = await http(gateway.url + "/nothing", headers={"X-Request-Id": "client-id-1"})
    assert resp.code == 404
    assert json.loads(resp.body)["request_id"] == "client-id-1"
    assert resp.headers["X-Request-Id"] == "client-id-1"


async def test_wrong_method_is_405_with_allow(gateway, http) -> None:
    resp = await http(gateway.url + "/readonly", method="DELETE")
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET, HEAD"
    await still_serving(gateway, http)


@pytest.mark.parametrize("route", ["refused", "garbage", "reset"])
async def test_upstream_refused_garbage_or_reset_is_502(gateway, http, route: str) -> None:
    body = assert_error(await http(gateway.url + f"/{route}/x"), 502, "bad_gateway")
    assert "127.0.0.1" not in body["message"]  # SPEC §4: the address is for the log only (test_error_bodies)
    await still_serving(gateway, http)


@pytest.mark.timeout(seconds=30)
async def test_slow_upstream_is_504(gateway, http) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await http(gateway.url + "/slow")
    assert_error(resp, 504, "upstream_timeout")
    assert 0.25 < loop.time() - started < 0.9
    await still_serving(gateway, http)
    await asyncio.sleep(0.8)  # let the slow handler finish before its server is closed


async def test_declared_body_over_limit_is_413_and_upstream_sees_nothing(gateway, http) -> None:
    resp = await http(gateway.url + "/counted/x", method="POST", body=b"x" * (MAX_BODY + 1))
    body = assert_error(resp, 413, "body_too_large")
    assert str(MAX_BODY) in body["message"]
    assert gateway.counter.requests == 0
    resp = await http(gateway.url + "/counted/x", method="POST", body=b"x" * MAX_BODY)
    assert (resp.code, resp.body) == (200, b"counted")
    assert (gateway.counter.requests, gateway.counter.body_bytes) == (1, MAX_BODY)
    await still_serving(gateway, http)


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_chunked_body_over_limit_is_413(gateway, http, method: str) -> None:
    async def produce(write) -> None:  # type: ignore[no-untyped-def]
        for _ in range(4):
            await write(b"y" * 400)

    resp = await http(gateway.url + "/counted/x", method=method, body_producer=produce)
    assert_error(resp, 413, "body_too_large")
    assert gateway.counter.body_bytes == 0  # whatever reached the upstream, no complete body did
    await still_serving(gateway, http)


async def test_request_line_over_8k_is_414(gateway, http) -> None:
    assert_error(await http(gateway.url + "/ok/" + "a" * (8 * 1024)), 414, "uri_too_long")
    assert_error(await http(gateway.url + "/ok?q=" + "a" * (8 * 1024)), 414, "uri_too_long")
    resp = await http(gateway.url + "/ok/" + "a" * (7 * 1024))
    assert resp.code == 200
    await still_serving(gateway, http)


async def test_headers_over_64k_are_431(gateway, http) -> None:
    headers = {f"X-Filler-{i}": "h" * 1000 for i in range(70)}
    assert_error(await http(gateway.url + "/ok", headers=headers), 431, "headers_too_large")
    headers = {f"X-Filler-{i}": "h" * 1000 for i in range(50)}
    assert (await http(gateway.url + "/ok", headers=headers)).code == 200
    await still_serving(gateway, http)


@pytest.mark.parametrize("path", [
    "/ok/a%2F..%2Fb",
    "/ok/%00",
    "/ok/%ff",
])
async def test_malformed_path_is_400(gateway, http, path: str) -> None:
    assert_error(await http(gateway.url + path), 400, "bad_request")
    await still_serving(gateway, http)


async def test_malformed_raw_request_is_400_json(gateway, http) -> None:
    data = await exchange(gateway.port, b"GET ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    resp = RawResponse(data)
    assert resp.code == 400
    assert resp.headers["Content-Type"] == "application/json"
    assert json.loads(resp.body)["error"] == "bad_request"
    await still_serving(gateway, http)


async def test_raw_nul_in_request_line_is_refused(gateway, http) -> None:
    # Tornado's HTTP/1 parser refuses a raw NUL itself (a bare "400 Bad Request" with no body) before
    # any handler runs, so this one 400 is not JSON; an encoded %00 reaches the router (JSON, above).
    data = await exchange(gateway.port, b"GET /ok/a\x00b HTTP/1.1\r\nHost: gw\r\n\r\n")  # it closes after a 400
    assert data.startswith(b"HTTP/1.1 400 ")
    await still_serving(gateway, http)


async def test_dot_segments_cannot_escape_a_route(gateway, http) -> None:
    resp = await http(gateway.url + "/ok/%2e%2e/counted/x")
    assert (resp.code, resp.body) == (200, b"counted")  # normalised to /counted/x, a route it names
    assert_error(await http(gateway.url + "/ok/../../etc/passwd"), 404, "no_route")


async def test_gateway_bug_is_500_logged_with_request_id(gateway, http, monkeypatch, caplog, expect_errors) -> None:
    expect_errors("gateway", r"^request_id=bug-42 internal error$")
    # The bug: the runtime's route table raises a plain exception while matching.
    runtime = gateway.holder.runtime

    def broken_match(method: str, host: str, path: str) -> None:
        raise RuntimeError("simulated gateway bug")

    monkeypatch.setattr(runtime.routes, "match", broken_match)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        resp = await http(gateway.url + "/ok/x", headers={"X-Request-Id": "bug-42"})
    body = json.loads(resp.body)
    assert resp.code == 500
    assert body == {"error": "internal_error", "message": "internal error", "status": 500, "request_id": "bug-42"}
    assert b"simulated" not in resp.body and b"Traceback" not in resp.body
    logged = [r for r in caplog.records if "bug-42" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], RuntimeError)
    monkeypatch.undo()
    await still_serving(gateway, http)


async def read_answer(reader: asyncio.StreamReader) -> RawResponse:
    resp = RawResponse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
    resp.body = await asyncio.wait_for(reader.readexactly(int(resp.headers.get("Content-Length", "0"))), 5)
    return resp


async def test_a_refusal_keeps_the_connection_for_the_next_request(gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /nothing/here HTTP/1.1\r\nHost: gw\r\n\r\n")
    refused = await read_answer(reader)
    assert refused.code == 404 and "Connection" not in refused.headers
    writer.write(b"GET /ok/again HTTP/1.1\r\nHost: gw\r\n\r\n")
    answered = await read_answer(reader)
    assert answered.code == 200 and json.loads(answered.body)["path"] == "/ok/again"
    writer.close()


async def test_a_refusal_before_the_body_is_read_says_connection_close(gateway, http) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"POST /nothing/here HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\n")  # the body follows later
    refused = await read_answer(reader)
    assert (refused.code, refused.headers["Connection"]) == (404, "close")
    writer.write(b"hello")
    try:  # and it is closed, as announced: EOF, or a reset when "hello" reached a socket already closed
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        pass
    writer.close()
    await still_serving(gateway, http)
