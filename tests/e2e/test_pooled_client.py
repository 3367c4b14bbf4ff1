"""The gateway's AsyncHTTPClient (gateway.upstream.client.PooledHTTPClient) on real loopback servers:
Tornado's request settings, the awaitable ``streaming_callback`` extension, the error tree, and
that every outgoing call of a gateway (proxy, JWKS, health checks) shares its pools."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler, stream_request_body

from gateway.errors import BadGateway, UpstreamConnectError, UpstreamTimeout
from gateway.upstream.client import PooledHTTPClient, ResponseInterrupted, failure_kind
from gateway.upstream.request import GatewayRequest, template
from tests.support.garbage import cyclic_garbage
from tests.support.raw import RawUpstream, body_of, exchange, parse

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
BIG = 8 * 1024 * 1024


@stream_request_body
class Echo(RequestHandler):
    """Answers with the request body it received and how it was framed."""

    def prepare(self) -> None:
        self.received: list[bytes] = []

    def data_received(self, chunk: bytes) -> None:
        self.received.append(chunk)

    def put(self) -> None:
        self.set_header("X-Framing", "chunked" if "Transfer-Encoding" in self.request.headers
                        else self.request.headers.get("Content-Length", "none"))
        self.finish(b"".join(self.received))

    def get(self) -> None:
        if self.get_argument("status", None):
            self.set_status(int(self.get_argument("status")))
        self.set_header("X-Seen-Agent", self.request.headers.get("User-Agent", ""))
        self.finish("hello")


class Big(RequestHandler):
    async def get(self) -> None:
        block = b"x" * (64 * 1024)
        for _ in range(BIG // len(block)):
            self.write(block)
            await self.flush()


class Slow(RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(2)
        self.finish("late")


def app() -> Application:
    return Application([("/echo", Echo), ("/big", Big), ("/slow", Slow)])


def client() -> PooledHTTPClient:
    instance = AsyncHTTPClient()
    assert isinstance(instance, PooledHTTPClient)
    return instance


async def test_async_http_client_is_the_pooled_one_with_proxy_defaults(start_gateway: Any) -> None:
    gateway = await start_gateway("upstreams: {}\nroutes: []\n")
    assert type(gateway.holder.client) is PooledHTTPClient
    assert gateway.holder.client is AsyncHTTPClient()
    assert gateway.holder.client.defaults["follow_redirects"] is False
    assert gateway.holder.client.defaults["decompress_response"] is False


async def test_header_callback_gets_tornado_lines_and_the_body_is_buffered(start_upstream: Any) -> None:
    upstream = start_upstream(app())
    lines: list[str] = []
    response = await client().fetch(f"{upstream.url}/echo", header_callback=lines.append, user_agent="probe/1")
    assert response.code == 200
    assert response.body == b"hello"
    assert response.headers["X-Seen-Agent"] == "probe/1"
    assert lines[0] == "HTTP/1.1 200 OK\r\n"
    assert "X-Seen-Agent: probe/1\r\n" in lines
    assert lines[-1] == "\r\n"


async def test_raise_error_keeps_its_tornado_meaning(start_upstream: Any) -> None:
    upstream = start_upstream(app())
    with pytest.raises(HTTPClientError) as caught:
        await client().fetch(f"{upstream.url}/echo?status=404")
    assert caught.value.code == 404
    response = await client().fetch(f"{upstream.url}/echo?status=503", raise_error=False)
    assert (response.code, response.body) == (503, b"hello")


@pytest.mark.parametrize("length", [None, 3 * 65536])
async def test_body_producer_streams_the_upload(start_upstream: Any, length: int | None) -> None:
    upstream = start_upstream(app())
    writes: list[int] = []

    async def produce(write: Any) -> None:
        for index in range(3):
            await write(bytes([65 + index]) * 65536)
            writes.append(index)

    headers = {"Content-Length": str(length)} if length else {}
    response = await client().fetch(f"{upstream.url}/echo", method="PUT", body_producer=produce, headers=headers)
    assert response.body == b"A" * 65536 + b"B" * 65536 + b"C" * 65536
    assert response.headers["X-Framing"] == ("chunked" if length is None else str(length))
    assert writes == [0, 1, 2]


async def test_awaitable_streaming_callback_pauses_the_upstream(start_upstream: Any) -> None:
    """While the callback's awaitable is pending, nothing more is read: the chunks delivered stay put."""
    upstream = start_upstream(app())
    gate = asyncio.Event()
    received: list[int] = []

    def on_chunk(chunk: bytes) -> Any:
        received.append(len(chunk))
        return None if gate.is_set() else asyncio.ensure_future(gate.wait())

    fetching = asyncio.ensure_future(client().fetch(f"{upstream.url}/big", streaming_callback=on_chunk))
    while not received:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert len(received) == 1  # paused: the upstream's bytes wait in the kernel's buffers, not here
    gate.set()
    response = await fetching
    assert response.code == 200
    assert sum(received) == BIG


async def test_failures_are_the_gateway_error_tree(start_upstream: Any) -> None:
    sock, closed_port = bind_unused_port()
    sock.close()
    with pytest.raises(UpstreamConnectError) as refused:
        await client().fetch(f"http://127.0.0.1:{closed_port}/")
    assert failure_kind(refused.value) == ("connect", True)
    assert "Connection refused" in refused.value.detail

    upstream = start_upstream(app())
    with pytest.raises(UpstreamTimeout) as slow:
        await client().fetch(f"{upstream.url}/slow", request_timeout=0.2)
    assert failure_kind(slow.value) == ("timeout", False)

    garbage = RawUpstream(b"HTTP/1.1 2000 What\r\n\r\n")
    try:
        with pytest.raises(BadGateway) as malformed:
            await client().fetch(garbage.url)
        assert failure_kind(malformed.value) == ("reset", False)
        assert "malformed HTTP" in malformed.value.detail
    finally:
        garbage.stop()


async def test_gateway_request_answers_any_status_through_its_callbacks() -> None:
    upstream = RawUpstream(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy")
    try:
        answers: list[Any] = []
        request = template(connect_timeout=1, request_timeout=1, ssl_context=None, max_idle=4).derive()
        request.method, request.url = "DELETE", f"{upstream.url}/thing?x=1"
        request.fields = [("X-One", "1"), ("X-One", "2")]
        request.fields_callback = lambda status, reason, fields: answers.append((status, reason, fields))
        request.streaming_callback = answers.append
        response = await client().fetch(request)
        assert (response.code, response.reason, response.error) == (503, "Busy", None)
        assert answers == [(503, "Busy", [("Retry-After", "1"), ("Content-Length", "4")]), b"busy"]
        assert upstream.heads == [f"DELETE /thing?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\n"
                                  "X-One: 1\r\nX-One: 2\r\n\r\n".encode()]
        assert request.headers.get_list("X-One") == ["1", "2"]
    finally:
        upstream.stop()


async def test_an_aborted_gateway_request_is_never_sent() -> None:
    upstream = RawUpstream(OK)
    try:
        request = GatewayRequest(f"{upstream.url}/", method="GET")
        request.fields_callback, request.streaming_callback = (lambda *a: None), (lambda c: None)
        request.abort()
        with pytest.raises(ResponseInterrupted) as caught:
            await client().fetch(request)
        assert caught.value.upstream_fault is False
        await asyncio.sleep(0.05)
        assert upstream.heads == []
    finally:
        upstream.stop()


def jwks_and_health_yaml(raw: RawUpstream, health: bool) -> str:
    check = ", health_check: {path: /health, interval_seconds: 60, timeout_seconds: 1}" if health else ""
    return f"""
    auth:
      jwt: {{algorithms: [RS256], jwks_url: "{raw.url}/jwks"}}
    upstreams:
      up: {{targets: ["{raw.url}"]{check}}}
    routes:
      - {{name: open, path: /open, upstream: up, auth: none}}
    """


@pytest.mark.parametrize("health", [False, True], ids=["jwks", "jwks+health"])
async def test_jwks_health_checks_and_proxy_share_kept_alive_connections(start_gateway: Any, health: bool) -> None:
    """One upstream serves the JWKS document, the health check and the proxied requests: after the
    start-up calls, the proxied requests reuse their kept-alive connection (no new one each)."""
    raw = RawUpstream(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"keys":[]}')
    try:
        gateway = await start_gateway(jwks_and_health_yaml(raw, health))
        while len(raw.requests) < (2 if health else 1):
            await asyncio.sleep(0.01)
        opened = raw.connections
        assert opened <= len(raw.requests)
        for _ in range(3):
            answer = await exchange(gateway.port, b"GET /open HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            assert parse(answer)[0] == 200
        assert raw.connections == opened
        assert [head.split(b" ")[1] for head in raw.heads][-3:] == [b"/open"] * 3
        assert {head.split(b" ")[1] for head in raw.heads[:-3]} == ({b"/jwks", b"/health"} if health else {b"/jwks"})
        assert body_of(raw.requests[-1]) == b""
    finally:
        raw.stop()


async def test_a_proxied_request_leaves_no_reference_cycle(start_gateway: Any, start_upstream: Any) -> None:
    """The request's objects are freed by reference counting when it ends: the collector finds
    none of the gateway's own objects (ProxyHandler, GatewayRequest, ResponseReader, tasks)."""
    upstream = start_upstream(app())
    gateway = await start_gateway(f"""
    upstreams:
      up: {{targets: ["{upstream.url}"]}}
    routes:
      - {{name: echo, path: /echo, upstream: up}}
    """)
    request = b"PUT /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    assert parse(await exchange(gateway.port, request))[0] == 200  # warm-up

    async def five() -> None:
        for _ in range(5):
            status, _, body = parse(await exchange(gateway.port, request))
            assert (status, body) == (200, b"hello")

    _, garbage = await cyclic_garbage(five)
    ours = [name for name in garbage if name.startswith("gateway.")]
    assert ours == []


async def test_a_generic_request_keeps_its_own_headers_object(start_upstream: Any) -> None:
    upstream = start_upstream(app())
    request = HTTPRequest(f"{upstream.url}/echo", headers={"User-Agent": "mine"})
    response = await client().fetch(request)
    assert response.headers["X-Seen-Agent"] == "mine"
    assert response.request is request
