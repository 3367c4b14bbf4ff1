"""The upstream client on the wire: how each HTTP/1.1 response framing is read, and what is refused.

A raw TCP upstream answers with exact bytes, so each case is what a real server
could send; the gateway must relay what is valid and answer SPEC §4's 502 for
what is not, and keep serving either way.
"""

from __future__ import annotations

import json

import pytest
from tornado.simple_httpclient import HTTPStreamClosedError

from tests.support.raw import RawUpstream


async def gateway_for(start_gateway, upstream: RawUpstream):  # type: ignore[no-untyped-def]
    return await start_gateway(f"""
    upstreams:
      raw: {{targets: ["http://127.0.0.1:{upstream.port}"], retry: {{attempts: 1}}}}
    routes:
      - {{name: raw, path: /, upstream: raw}}
    """)


VALID = [
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                 b"hello", id="interim-100-then-200"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n", b"hello", id="chunked-ext-trailers"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", b"hello", id="equal-duplicate-length"),
    pytest.param(b"HTTP/1.0 200 OK\r\n\r\nhello until close", b"hello until close", id="close-delimited"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", b"", id="204"),
]


@pytest.mark.parametrize(("answer", "body"), VALID)
async def test_valid_framings_are_relayed(raw_upstream, start_gateway, http, answer: bytes, body: bytes) -> None:
    upstream = raw_upstream(answer, close=b"HTTP/1.0" in answer)
    gw = await gateway_for(start_gateway, upstream)
    for _ in range(2):  # the second goes over a pooled connection, or a fresh one after a close
        response = await http(f"{gw.url}/x")
        assert response.code in (200, 204)
        assert response.body == body


async def test_folded_header_is_joined(raw_upstream, start_gateway, http) -> None:
    upstream = raw_upstream(b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n  two\r\nContent-Length: 2\r\n\r\nok")
    gw = await gateway_for(start_gateway, upstream)
    response = await http(f"{gw.url}/x")
    assert response.code == 200
    assert response.headers["X-Folded"] == "one two"


async def test_keep_alive_answers_reuse_one_connection(raw_upstream, start_gateway, http) -> None:
    upstream = raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    gw = await gateway_for(start_gateway, upstream)
    for _ in range(5):
        assert (await http(f"{gw.url}/x")).body == b"ok"
    assert upstream.connections == 1


INVALID = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 id="length-and-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", id="unequal-lengths"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
    pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="bad-status"),
    pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", id="bad-header-line"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", id="head-over-64k"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", id="switching-protocols"),
]


@pytest.mark.parametrize("answer", INVALID)
async def test_malformed_answers_are_502_json(raw_upstream, start_gateway, http, answer: bytes) -> None:
    upstream = raw_upstream(answer, close=True)
    gw = await gateway_for(start_gateway, upstream)
    response = await http(f"{gw.url}/x")
    assert response.code == 502
    assert json.loads(response.body)["error"] == "bad_gateway"
    assert (await http(f"{gw.url}/-/health")).code == 200  # still serving


async def test_bad_chunk_after_headers_cuts_the_answer_and_keeps_serving(raw_upstream, start_gateway, http) -> None:
    # A first chunk, so the answer has started (a bad first chunk is a 502: tests/e2e/test_upstream_breaks.py).
    upstream = raw_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\nzz\r\nhello\r\n0\r\n\r\n",
                        close=True)
    gw = await gateway_for(start_gateway, upstream)
    try:
        response = await http(f"{gw.url}/x")
    except HTTPStreamClosedError:
        pass  # the answer had started: it is cut, never completed as if whole
    else:
        raise AssertionError(f"a broken chunked answer was completed as {response.code}")
    assert (await http(f"{gw.url}/-/health")).code == 200


async def test_empty_post_is_sent_with_zero_length(raw_upstream, start_gateway, http) -> None:
    upstream = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    gw = await gateway_for(start_gateway, upstream)
    assert (await http(f"{gw.url}/x", method="POST", body=b"")).code == 200
    head = upstream.requests[0].lower()
    assert b"content-length: 0\r\n" in head
    assert b"transfer-encoding" not in head
