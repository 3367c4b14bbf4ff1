"""The forward path (SPEC §4): pooled keep-alive, stale connections, methods, and bodies streamed both ways."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator

import pytest
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler, stream_request_body

from gateway.demo import EchoHandler

MiB = 1024 * 1024
BIG = 64 * MiB
BLOCK = 64 * 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def blocks(total: int) -> Iterator[bytes]:
    """``total`` bytes of deterministic, non-repeating-per-block content."""
    seed = hashlib.sha256(b"seed").digest() * (BLOCK // 32)
    for i in range(total // BLOCK):
        yield i.to_bytes(8, "big") + seed[8:]


def sha_of(total: int) -> str:
    digest = hashlib.sha256()
    for block in blocks(total):
        digest.update(block)
    return digest.hexdigest()


class Seen:
    """What the upstream observed."""

    def __init__(self) -> None:
        self.streams: list[object] = []  # kept, so identities are never reused
        self.requests: list[tuple[str, str]] = []
        self.uploads: list[dict[str, object]] = []

    @property
    def connections(self) -> int:
        return len({id(s) for s in self.streams})


def upstream_app(seen: Seen) -> Application:
    class Conn(RequestHandler):
        SUPPORTED_METHODS = METHODS  # type: ignore[assignment]

        def prepare(self) -> None:
            seen.streams.append(self.request.connection.stream)  # type: ignore[union-attr]
            seen.requests.append((self.request.method or "", self.request.path))

        def _answer(self) -> None:
            self.set_header("Content-Type", "text/plain")
            self.finish(f"{self.request.method} {self.request.path}")

        get = head = post = put = patch = delete = options = _answer

    class Redirect(RequestHandler):
        def get(self) -> None:
            self.redirect("/conn/elsewhere", status=302)

    class Gzipped(RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Encoding", "gzip")
            self.set_header("Content-Type", "application/json")
            self.finish(GZIPPED)

    @stream_request_body
    class Upload(RequestHandler):
        def prepare(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0

        def data_received(self, chunk: bytes) -> None:
            self.digest.update(chunk)
            self.size += len(chunk)

        def put(self) -> None:
            seen.uploads.append({
                "sha256": self.digest.hexdigest(), "size": self.size,
                "content_length": self.request.headers.get("Content-Length"),
                "transfer_encoding": self.request.headers.get("Transfer-Encoding"),
            })
            self.finish({"size": self.size})

        post = put

    class Download(RequestHandler):
        async def get(self, size: str) -> None:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", size)
            for block in blocks(int(size)):
                self.write(block)
                await self.flush()

    return Application([
        (r"/conn.*", Conn), (r"/redirect", Redirect), (r"/gzip", Gzipped), (r"/upload", Upload),
        (r"/download/(\d+)", Download), (r".*", EchoHandler),
    ])


GZIPPED = gzip.compress(json.dumps({"compressed": True, "pad": "x" * 1000}).encode(), mtime=0)


def gateway_yaml(url: str) -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, max_body_bytes: {2 * BIG}, drain_seconds: 0.5}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams:
      up: {{targets: ["{url}"]}}
    routes:
      - {{name: all, path: /, upstream: up}}
    """


async def test_sequential_requests_share_one_pooled_connection(start_upstream, start_gateway, http) -> None:
    seen = Seen()
    up = start_upstream(upstream_app(seen))
    gw = await start_gateway(gateway_yaml(up.url))
    for i in range(20):
        resp = await http(gw.url + f"/conn/{i}")
        assert (resp.code, resp.body) == (200, f"GET /conn/{i}".encode())
    assert len(seen.requests) == 20
    assert seen.connections == 1


async def test_stale_pooled_connection_after_upstream_restart(start_upstream, start_gateway, http) -> None:
    seen = Seen()
    up = start_upstream(upstream_app(seen))
    gw = await start_gateway(gateway_yaml(up.url))
    assert (await http(gw.url + "/conn/1")).code == 200
    await up.close()  # the pooled connection dies with it
    start_upstream(upstream_app(seen), port=up.port)
    resp = await http(gw.url + "/conn/2")
    assert (resp.code, resp.body) == (200, b"GET /conn/2")
    resp = await http(gw.url + "/conn/3", method="POST", body=b"once")
    assert (resp.code, resp.body) == (200, b"POST /conn/3")
    assert seen.requests == [("GET", "/conn/1"), ("GET", "/conn/2"), ("POST", "/conn/3")]


class DropsSecondRequest(TCPServer):
    """Answers the first request on each connection, then closes it on reading the second, unanswered:
    the race of an upstream closing an idle keep-alive connection as the gateway reuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[bytes] = []
        sock, self.port = bind_unused_port()
        self.add_sockets([sock])

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        try:
            head = await stream.read_until(b"\r\n\r\n")
            self.heads.append(head.split(b"\r\n", 1)[0])
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if length:
                await stream.read_bytes(length[0])
            await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            head = await stream.read_until(b"\r\n\r\n")
            self.heads.append(head.split(b"\r\n", 1)[0])
        except StreamClosedError:
            pass
        stream.close()


@pytest.fixture
def dropping_upstream(io_loop) -> Iterator[DropsSecondRequest]:  # type: ignore[no-untyped-def]
    server = DropsSecondRequest()
    yield server
    server.stop()


async def test_reused_connection_closed_without_answer_retries_get_once(dropping_upstream, start_gateway,
                                                                        http) -> None:
    gw = await start_gateway(gateway_yaml(f"http://127.0.0.1:{dropping_upstream.port}"))
    assert (await http(gw.url + "/a")).body == b"ok"
    resp = await http(gw.url + "/b")
    assert (resp.code, resp.body) == (200, b"ok")
    assert dropping_upstream.heads == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"GET /b HTTP/1.1"]


async def test_reused_connection_closed_without_answer_never_sends_post_twice(dropping_upstream, start_gateway,
                                                                              http) -> None:
    gw = await start_gateway(gateway_yaml(f"http://127.0.0.1:{dropping_upstream.port}"))
    assert (await http(gw.url + "/a")).body == b"ok"
    resp = await http(gw.url + "/b", method="POST", body=b"pay once")
    assert resp.code == 502
    assert json.loads(resp.body)["error"] == "bad_gateway"
    assert dropping_upstream.heads == [b"GET /a HTTP/1.1", b"POST /b HTTP/1.1"]
    assert (await http(gw.url + "/c")).body == b"ok"  # and the gateway goes on


async def test_redirects_are_passed_through(start_upstream, start_gateway, http) -> None:
    seen = Seen()
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(seen)).url))
    resp = await http(gw.url + "/redirect")
    assert resp.code == 302
    assert resp.headers["Location"] == "/conn/elsewhere"
    assert seen.requests == []


async def test_encoded_bodies_are_not_decoded(start_upstream, start_gateway, http) -> None:
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(Seen())).url))
    resp = await http(gw.url + "/gzip", headers={"Accept-Encoding": "gzip"})
    assert resp.code == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Content-Length"] == str(len(GZIPPED))
    assert resp.body == GZIPPED


@pytest.mark.parametrize("method", METHODS)
async def test_every_method_is_forwarded(start_upstream, start_gateway, http, method: str) -> None:
    seen = Seen()
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(seen)).url))
    body = b"payload" if method in ("POST", "PUT", "PATCH") else None
    resp = await http(gw.url + "/conn/m?x=1", method=method, body=body)
    assert resp.code == 200
    assert seen.requests == [(method, "/conn/m")]
    if method == "HEAD":
        assert resp.body == b""
    else:
        assert resp.body == f"{method} /conn/m".encode()


async def test_head_has_no_body(start_upstream, start_gateway) -> None:
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(Seen())).url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"HEAD /conn/h HTTP/1.1\r\nHost: gw\r\n\r\nGET /conn/g HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 200 ")  # the next answer follows the HEAD's headers at once
    assert rest.endswith(b"\r\n\r\nGET /conn/g")


@pytest.mark.timeout(seconds=60)
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_large_streamed_upload_arrives_intact(start_upstream, start_gateway, http, framing: str) -> None:
    seen = Seen()
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(seen)).url))

    async def produce(write: Callable[[bytes], object]) -> None:
        for block in blocks(BIG):
            await write(block)  # type: ignore[misc]

    headers = {"Content-Length": str(BIG)} if framing == "content-length" else {}
    resp = await http(gw.url + "/upload", method="PUT", body_producer=produce, headers=headers,
                      request_timeout=60)
    assert resp.code == 200, resp.body
    upload = seen.uploads[0]
    assert (upload["size"], upload["sha256"]) == (BIG, sha_of(BIG))
    if framing == "content-length":
        assert (upload["content_length"], upload["transfer_encoding"]) == (str(BIG), None)
    else:
        assert (upload["content_length"], upload["transfer_encoding"]) == (None, "chunked")


@pytest.mark.timeout(seconds=60)
async def test_large_download_arrives_intact(start_upstream, start_gateway, http) -> None:
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(Seen())).url))
    digest = hashlib.sha256()
    size = 0

    def receive(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)

    resp = await http(gw.url + f"/download/{BIG}", streaming_callback=receive, request_timeout=60)
    assert resp.code == 200
    assert resp.headers["Content-Length"] == str(BIG)
    assert (size, digest.hexdigest()) == (BIG, sha_of(BIG))


@pytest.mark.timeout(seconds=30)
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_client_leaving_mid_upload_ends_the_exchange(start_upstream, start_gateway, http, framing: str) -> None:
    seen = Seen()
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(seen)).url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    framing_header = b"Transfer-Encoding: chunked" if framing == "chunked" else f"Content-Length: {BIG}".encode()
    writer.write(b"PUT /upload HTTP/1.1\r\nHost: gw\r\n" + framing_header + b"\r\n\r\n")
    for block in list(blocks(4 * MiB)):
        writer.write(b"%x\r\n%s\r\n" % (len(block), block) if framing == "chunked" else block)
        await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    for _ in range(100):
        await asyncio.sleep(0.02)
        pending = [t for t in asyncio.all_tasks()
                   if t.get_coro().__qualname__.startswith("ProxyHandler.")]
        if not pending and gw.holder.in_flight == 0:
            break
    assert pending == [] and gw.holder.in_flight == 0
    assert seen.uploads == []  # a body cut short is never completed upstream
    assert (await http(gw.url + "/conn/after")).code == 200
