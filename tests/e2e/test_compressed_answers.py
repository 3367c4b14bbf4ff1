"""Compression end to end (SPEC §8): a real gateway between a real Tornado upstream and a client that
reads the raw bytes; what the client decodes must be exactly what the upstream sent."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any
from urllib.parse import urlencode

import brotli
import pytest
from tornado.iostream import StreamClosedError
from tornado.web import Application, RequestHandler

from tests.conftest import Fetch
from tests.support.raw import AccessLines, body_of, exchange, parse


def records(count: int) -> bytes:
    """A JSON array of ``count`` records: about 60 bytes each, compressible like real JSON."""
    return json.dumps([{"id": i, "name": f"item {i}", "tags": ["alpha", "beta"], "price": i * 1.25}
                       for i in range(count)]).encode()


SMALL = records(10)  # under 1 KiB
LARGE = records(4000)  # about 250 KiB
PART1, PART2 = b"data: " + b"first " * 100 + b"\n\n", b"data: " + b"second " * 100 + b"\n\n"


class Upstream:
    """What the upstream sent and saw."""

    def __init__(self) -> None:
        self.release = asyncio.Event()  # /stream sends its second part once this is set
        self.accept_encodings: list[str | None] = []
        self.left: asyncio.Future[int] = asyncio.get_running_loop().create_future()  # /endless: bytes written


def upstream_app(seen: Upstream) -> Application:
    class Json(RequestHandler):
        def get(self) -> None:
            seen.accept_encodings.append(self.request.headers.get("Accept-Encoding"))
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(records(int(self.get_argument("count", "4000"))))

        head = get

    class Chunked(RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            for i in range(int(self.get_argument("n", "50"))):
                self.write(records(40) + b"%d\n" % i)
                await self.flush()  # no Content-Length: chunked
            self.finish()

    class Stream(RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Type", "text/event-stream")
            self.write(PART1)
            await self.flush()
            await seen.release.wait()
            self.finish(PART2)

    class Head(RequestHandler):
        """An answer whose head says what the route asks: ?status=&h=Name:Value (repeatable)."""

        def get(self) -> None:
            self.set_status(int(self.get_argument("status", "200")))
            self.clear_header("Content-Type")  # Tornado's default: only what the test names
            for field in self.get_arguments("h"):
                name, _, value = field.partition(":")
                self.set_header(name, value)
            if self.get_status() in (204, 304):
                self.finish()
                return
            self.finish(LARGE)

    class Empty(RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            await self.flush()  # the head alone, chunked; then the end
            self.finish()

    class Endless(RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            written = 0
            try:
                for i in range(4096):  # bounded: 4096 x 64 KiB
                    self.write(b"%08d" % i + b"line of text " * 5041)
                    written += 65541
                    await self.flush()
            except StreamClosedError:
                seen.left.set_result(written)
                return
            seen.left.set_result(-1)

    return Application([("/json", Json), ("/chunked", Chunked), ("/stream", Stream), ("/head", Head),
                        ("/empty", Empty), ("/endless", Endless)])


def gateway_yaml(url: str) -> str:
    return f"""
        compression: {{min_bytes: 1024, types: [application/json, "text/*"]}}
        upstreams:
          up: {{targets: ["{url}"]}}
        routes:
          - {{name: compressed, path: /on, upstream: up, strip_prefix: true}}
          - {{name: plain, path: /off, upstream: up, strip_prefix: true, compression: false}}
          - {{name: gz, path: /gz, upstream: up, strip_prefix: true, compression: {{encodings: [gzip], min_bytes: 0}}}}
          - name: agg
            path: /agg
            aggregate: [{{name: a, upstream: up, path: "/json?count=200"}}, {{name: b, upstream: up, path: /json}}]
        """


async def env(start_upstream: Any, start_gateway: Any) -> tuple[Any, Upstream]:
    """A gateway (gateway_yaml) in front of upstream_app."""
    seen = Upstream()
    gw = await start_gateway(gateway_yaml(start_upstream(upstream_app(seen)).url))
    return gw, seen


def decode(coding: str | None, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    assert coding is None
    return data


class Decoder:
    """A client's streaming decoder: bytes in as they arrive, what they decode to so far."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = zlib.decompressobj(31) if coding == "gzip" else None
        self._br = brotli.Decompressor() if coding == "br" else None
        self.out = b""
        self.received = 0

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._gzip is not None:
            self.out += self._gzip.decompress(data)
            return
        assert self._br is not None
        self.out += self._br.process(data)
        while more := self._br.process(b""):
            self.out += more


async def until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


# --- the bytes ---

@pytest.mark.parametrize("coding", ["gzip", "br"])
@pytest.mark.parametrize("path, expected", [
    ("/on/json", LARGE),
    ("/on/json?count=1000", records(1000)),
    ("/on/chunked?n=50", b"".join(records(40) + b"%d\n" % i for i in range(50))),
])
async def test_the_client_decodes_exactly_what_the_upstream_sent(start_upstream: Any, start_gateway: Any, http: Fetch, coding: str, path: str,
                                                                 expected: bytes) -> None:
    gw, seen = await env(start_upstream, start_gateway)
    resp = await http(gw.url + path, headers={"Accept-Encoding": f"{coding}, deflate"})
    assert resp.code == 200
    assert resp.headers["Content-Encoding"] == coding
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert "Content-Length" not in resp.headers and resp.headers["Transfer-Encoding"] == "chunked"
    assert len(resp.body) < len(expected) / 4
    assert decode(coding, resp.body) == expected
    assert seen.accept_encodings[-1:] in ([], [f"{coding}, deflate"])  # passed upstream as sent


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_a_streamed_answer_stays_streamed(start_upstream: Any, start_gateway: Any, http: Fetch, coding: str) -> None:
    """Each upstream chunk is flushed through the encoder: the client decodes the first part while the
    upstream still holds the second."""
    gw, seen = await env(start_upstream, start_gateway)
    decoder = Decoder(coding)
    answer = http(gw.url + "/on/stream", headers={"Accept-Encoding": coding}, streaming_callback=decoder.feed)
    await until(lambda: decoder.out == PART1)
    assert not seen.release.is_set() and not answer.done()
    seen.release.set()
    resp = await answer
    assert resp.code == 200 and resp.headers["Content-Encoding"] == coding
    assert decoder.out == PART1 + PART2


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_an_empty_answer_of_unknown_length_is_a_valid_empty_stream(start_upstream: Any, start_gateway: Any, http: Fetch, coding: str) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(gw.url + "/on/empty", headers={"Accept-Encoding": coding})
    assert resp.code == 200 and resp.headers["Content-Encoding"] == coding
    assert decode(coding, resp.body) == b""


async def test_the_access_log_counts_the_bytes_sent(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    lines = AccessLines(gw)
    resp = await http(gw.url + "/on/json", headers={"Accept-Encoding": "gzip", "X-Request-Id": "gz-1"})
    assert lines.by_id()["gz-1"][0]["bytes_out"] == len(resp.body) < len(LARGE) / 4


# --- the head ---

def head_url(gw: Any, status: int = 200, **fields: str) -> str:
    """/on/head answering ``status`` with these fields (``Content_Type``: ``Content-Type``)."""
    query = [("status", str(status))] + [("h", f"{name.replace('_', '-')}:{value}") for name, value in fields.items()]
    return f"{gw.url}/on/head?" + urlencode(query)


async def test_etag_weakened_vary_merged_ranges_no_longer_offered(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(head_url(gw, Content_Type="application/json", ETag='"v7"', Vary="Origin",
                               Accept_Ranges="bytes", Set_Cookie="a=1"), headers={"Accept-Encoding": "gzip"})
    assert resp.code == 200
    assert resp.headers["Etag"] == 'W/"v7"'
    assert resp.headers["Vary"] == "Origin, Accept-Encoding"
    assert "Accept-Ranges" not in resp.headers
    assert resp.headers["Set-Cookie"] == "a=1"
    assert gzip.decompress(resp.body) == LARGE


@pytest.mark.parametrize("case, status, fields, accept, vary", [
    ("client asks for nothing", 200, {"Content_Type": "application/json"}, None, "Accept-Encoding"),
    ("client refuses both", 200, {"Content_Type": "application/json"}, "gzip;q=0, br;q=0", "Accept-Encoding"),
    ("client takes only identity", 200, {"Content_Type": "application/json"}, "identity;q=0", "Accept-Encoding"),
    ("client prefers identity", 200, {"Content_Type": "application/json"}, "gzip;q=0.1, identity",
     "Accept-Encoding"),
    ("client speaks only codings the gateway does not make", 200, {"Content_Type": "text/html"}, "zstd, deflate",
     "Accept-Encoding"),
    ("a type not listed", 200, {"Content_Type": "image/png"}, "gzip", None),
    ("no type", 200, {}, "gzip", None),
    ("already encoded", 200, {"Content_Type": "application/json", "Content_Encoding": "gzip"}, "br", None),
    ("no-transform", 200, {"Content_Type": "application/json", "Cache_Control": "private, no-transform"}, "br",
     None),
    ("a range", 206, {"Content_Type": "application/json", "Content_Range": "bytes 0-9/99999"}, "br", None),
])
async def test_answers_left_as_they_are(start_upstream: Any, start_gateway: Any, http: Fetch, case: str, status: int, fields: dict[str, str],
                                        accept: str | None, vary: str | None) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    headers = {"Accept-Encoding": accept} if accept else {}
    resp = await http(head_url(gw, status=status, **fields), headers=headers)
    assert resp.code == status
    assert resp.headers.get("Content-Encoding") == fields.get("Content_Encoding")
    assert resp.headers.get("Vary") == vary
    assert resp.headers["Content-Length"] == str(len(LARGE)) and resp.body == LARGE


async def test_a_declared_length_below_min_bytes_is_not_compressed(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(gw.url + "/on/json?count=10", headers={"Accept-Encoding": "gzip, br"})
    assert (resp.code, resp.headers.get("Content-Encoding"), resp.headers.get("Vary")) == (200, None, None)
    assert resp.headers["Content-Length"] == str(len(SMALL)) and resp.body == SMALL
    own = await http(gw.url + "/gz/json?count=10", headers={"Accept-Encoding": "gzip, br"})  # min_bytes: 0
    assert own.headers["Content-Encoding"] == "gzip" and gzip.decompress(own.body) == SMALL


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_are_left_alone(start_upstream: Any, start_gateway: Any, http: Fetch, status: int) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(head_url(gw, status=status, Content_Type="application/json", ETag='"v1"'),
                      headers={"Accept-Encoding": "gzip"})
    assert resp.code == status and resp.body == b""
    assert "Content-Encoding" not in resp.headers and "Vary" not in resp.headers
    assert resp.headers["Etag"] == '"v1"'


async def test_head_gets_vary_and_the_identity_length(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    raw = await exchange(gw.port, b"HEAD /on/json HTTP/1.1\r\nHost: gw\r\nAccept-Encoding: gzip\r\n"
                                  b"Connection: close\r\n\r\n")
    status, headers, rest = parse(raw)
    assert (status, rest) == (200, b"")
    assert headers["content-length"] == str(len(LARGE)) and headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in headers


async def test_a_route_with_compression_false_is_untouched(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(gw.url + "/off/json", headers={"Accept-Encoding": "gzip, br"})
    assert resp.code == 200 and resp.body == LARGE
    assert "Content-Encoding" not in resp.headers and "Vary" not in resp.headers
    assert resp.headers["Content-Length"] == str(len(LARGE))


# --- answers the gateway makes ---

@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_an_aggregate_answer_is_compressed_whole(start_upstream: Any, start_gateway: Any, http: Fetch, coding: str) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(gw.url + "/agg", headers={"Accept-Encoding": coding})
    assert resp.code == 200 and resp.headers["Content-Encoding"] == coding
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert resp.headers["Content-Length"] == str(len(resp.body))  # known: sent with its length
    assert json.loads(decode(coding, resp.body)) == {"a": json.loads(records(200)), "b": json.loads(LARGE)}
    head = await http(gw.url + "/agg", method="HEAD", headers={"Accept-Encoding": coding})
    assert head.code == 200 and "Content-Encoding" not in head.headers and head.headers["Vary"] == "Accept-Encoding"


async def test_error_bodies_are_never_compressed(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(gw.url + "/nowhere", headers={"Accept-Encoding": "gzip, br"})
    assert resp.code == 404 and "Content-Encoding" not in resp.headers and "Vary" not in resp.headers
    assert json.loads(resp.body)["error"] == "no_route"


async def test_an_upstream_error_answer_is_compressed_like_any_other(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    resp = await http(head_url(gw, status=503, Content_Type="application/json"), headers={"Accept-Encoding": "br"})
    assert resp.code == 503 and resp.headers["Content-Encoding"] == "br"
    assert brotli.decompress(resp.body) == LARGE


# --- hostile clients ---

async def test_a_huge_accept_encoding_is_negotiated(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    value = ", ".join(["zstd;q=0.9"] * 5000 + ["gzip;q=0.2", "br;q=0.1"])
    assert len(value) > 60_000
    resp = await http(gw.url + "/on/json", headers={"Accept-Encoding": value})
    assert resp.code == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(resp.body) == LARGE


@pytest.mark.parametrize("lines, coding", [
    ((b"br;q=0", b"gzip"), "gzip"),  # repeated lines are one list
    ((b"gzip", b"gzip;q=0"), None),  # the refusal stands
    ((b"gzip;q=0.1", b"br;q=0.9"), "br"),
    ((b"br;q=banana", b"gzip;q=2"), None),  # garbage weights: the entries say nothing
    ((b"br;q=0.5;q=1", b""), "br"),
    ((b"\xff\xfe gzip", b"br;q=0.001"), "br"),  # not UTF-8
])
async def test_repeated_and_garbage_accept_encoding(start_upstream: Any, start_gateway: Any, lines: tuple[bytes, ...], coding: str | None) -> None:
    gw, _ = await env(start_upstream, start_gateway)
    head = b"GET /on/json HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
    head += b"".join(b"Accept-Encoding: " + line + b"\r\n" for line in lines)
    status, headers, _ = parse(raw := await exchange(gw.port, head + b"\r\n"))
    assert status == 200 and headers.get("content-encoding") == coding
    assert decode(coding, body_of(raw)) == LARGE


async def test_a_client_that_leaves_mid_download_aborts_the_upstream_exchange(start_upstream: Any, start_gateway: Any, http: Fetch) -> None:
    gw, seen = await env(start_upstream, start_gateway)
    lines = AccessLines(gw)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /on/endless HTTP/1.1\r\nHost: gw\r\nAccept-Encoding: br\r\nX-Request-Id: gone-1\r\n\r\n")
    answer_head = await reader.readuntil(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: br\r\n" in answer_head
    await reader.readexactly(1000)
    writer.transport.abort()
    written = await asyncio.wait_for(seen.left, 10)
    assert 0 < written < 4096 * 65541  # the upstream stopped early: its connection was closed
    await until(lambda: gw.holder.in_flight == 0 and not [
        t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("ProxyHandler.")])
    entry = lines.by_id()["gone-1"][0]
    assert entry["status"] == 200 and entry["bytes_out"] > 0
    after = await http(gw.url + "/on/json", headers={"Accept-Encoding": "gzip"})  # still serving
    assert after.code == 200 and gzip.decompress(after.body) == LARGE



async def test_an_http_1_0_client_gets_a_close_delimited_compressed_answer(start_upstream: Any,
                                                                          start_gateway: Any) -> None:
    """HTTP/1.0 has no chunked framing: the compressed answer (of unknown length) ends with the connection."""
    gw, _ = await env(start_upstream, start_gateway)
    raw = await exchange(gw.port, b"GET /on/json HTTP/1.0\r\nHost: gw\r\nAccept-Encoding: gzip\r\n\r\n")
    status, headers, body = parse(raw)
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert gzip.decompress(body) == LARGE
