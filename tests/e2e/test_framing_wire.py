"""A client's framing and Host, end to end on raw sockets (SPEC §4, "Framing and hostile input").

Malformed requests are refused on their headers with the JSON 400, nothing of
them reaches the upstream, and however many come they never count against it:
the upstream here has a circuit breaker that three failures would open.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support.raw import AccessLines, RawUpstream, exchange, parse
from tests.support.tokens import SECRET
from tests.support.wait import wait_for

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def gateway_for(start_gateway: Any, upstream: RawUpstream) -> Any:
    """A host-bound ``auth: required`` route and a catch-all ``auth: none`` one, both to ``upstream``,
    whose breaker opens after three failures."""
    return await start_gateway(f"""
    auth: {{jwt: {{algorithms: [HS256], secret: {SECRET}}}}}
    upstreams:
      app:
        targets: ["{upstream.url}"]
        retry: {{attempts: 1}}
        circuit_breaker: {{failure_threshold: 3, open_seconds: 60}}
    routes:
      - {{name: private, path: /, host: api.example.com, upstream: app, auth: required}}
      - {{name: public, path: /, upstream: app, auth: none}}
    """)


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body


CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"
# Each is refused on its headers: (id, request head lines after the request line, body).
MALFORMED = [
    ("te-xchunked", "Transfer-Encoding: xchunked\n", CHUNKED_BODY),
    ("te-chunked-identity", "Transfer-Encoding: chunked, identity\n", CHUNKED_BODY),
    ("te-twice", "Transfer-Encoding: chunked\nTransfer-Encoding: chunked\n", CHUNKED_BODY),
    ("te-and-cl", "Transfer-Encoding: chunked\nContent-Length: 5\n", CHUNKED_BODY),
    ("cl-negative", "Content-Length: -1\n", b"hello"),
    ("cl-plus", "Content-Length: +5\n", b"hello"),
    ("cl-repeated", "Content-Length: 5\nContent-Length: 5\n", b"hello"),
    ("cl-comma-list", "Content-Length: 5, 5\n", b"hello"),
    ("cl-not-a-number", "Content-Length: five\n", b"hello"),
]


def malformed(case: tuple[str, str, bytes], host: str = "other.example") -> bytes:
    name, lines, body = case
    return request(f"POST /x HTTP/1.1\nHost: {host}\nX-Request-Id: {name}\n{lines}", body)


def assert_refused_json(raw: bytes, request_id: str, status: int = 400, code: str = "bad_request") -> dict[str, Any]:
    """One JSON error answer with Connection: close, and nothing after it (no bare 400 of Tornado's)."""
    got, headers, rest = parse(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-request-id"] == request_id
    assert len(rest) == int(headers["content-length"]), raw  # the connection closed right after this answer
    error: dict[str, Any] = json.loads(rest)
    assert (error["error"], error["status"], error["request_id"]) == (code, status, request_id)
    return error


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
async def test_malformed_framing_is_a_json_400_and_never_reaches_the_upstream(
        raw_upstream: Any, start_gateway: Any, case: tuple[str, str, bytes]) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    assert_refused_json(await exchange(gw.port, malformed(case)), case[0])
    assert upstream.connections == 0
    assert [(e["request_id"], e["status"], e["upstream"]) for e in log.entries()] == [(case[0], 400, None)]
    assert gw.holder.in_flight == 0


async def test_many_malformed_requests_never_open_the_breaker(raw_upstream: Any, start_gateway: Any) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    for _ in range(3):
        for case in MALFORMED:
            assert_refused_json(await exchange(gw.port, malformed(case)), case[0])
    # A body whose framing breaks after good headers: Tornado refuses it (its own bare 400).
    broken = request("POST /x HTTP/1.1\nHost: other.example\nX-Request-Id: bad-chunk\n"
                     "Transfer-Encoding: chunked\n", b"zz\r\nhello\r\n0\r\n\r\n")
    for _ in range(5):
        assert (await exchange(gw.port, broken)).startswith(b"HTTP/1.1 400 ")
    honest = await exchange(gw.port, request(
        "POST /x HTTP/1.1\nHost: other.example\nX-Request-Id: honest\nContent-Length: 5\nConnection: close\n",
        b"hello"))
    assert parse(honest)[0] == 200
    assert upstream.connections == 1
    assert [head.split(b"\r\n")[0] for head in upstream.heads] == [b"POST /x HTTP/1.1"]
    assert b"X-Request-Id: honest" in upstream.heads[0]
    statuses = {(e["request_id"], e["status"]) for e in log.entries()}
    assert statuses == {(c[0], 400) for c in MALFORMED} | {("bad-chunk", 400), ("honest", 200)}
    assert len(log.entries()) == 3 * len(MALFORMED) + 5 + 1
    target = gw.holder.runtime.pools["app"].targets[0]
    assert (target.circuit, target.breaker.consecutive_failures) == ("closed", 0)


async def test_an_http10_request_with_transfer_encoding_is_refused(raw_upstream: Any, start_gateway: Any) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    raw = await exchange(gw.port, request(
        "POST /x HTTP/1.0\nHost: other.example\nX-Request-Id: te10\nTransfer-Encoding: chunked\n", CHUNKED_BODY))
    got, headers, rest = parse(raw)
    assert got == 400
    assert json.loads(rest)["error"] == "bad_request"
    assert upstream.connections == 0


# --- Host ---

HOST_REFUSED = [
    ("two-hosts", "GET /x HTTP/1.1\nHost: api.example.com\nHost: other.example\n"),
    ("two-hosts-reversed", "GET /x HTTP/1.1\nHost: other.example\nHost: api.example.com\n"),
    ("hosts-in-one-line", "GET /x HTTP/1.1\nHost: other.example, api.example.com\n"),
    ("no-host-http11", "GET /x HTTP/1.1\n"),
]


@pytest.mark.parametrize("name, head", HOST_REFUSED, ids=[c[0] for c in HOST_REFUSED])
async def test_ambiguous_or_missing_host_is_a_json_400(raw_upstream: Any, start_gateway: Any,
                                                       name: str, head: str) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    raw = await exchange(gw.port, request(f"{head}X-Request-Id: {name}\n"))
    assert_refused_json(raw, name)
    assert upstream.connections == 0
    assert [(e["request_id"], e["status"]) for e in log.entries()] == [(name, 400)]


@pytest.mark.parametrize("host", ["api.example.com.", "api.example.com.:8080", "API.Example.COM.", "api.example.com"])
async def test_a_trailing_dot_names_the_same_host(raw_upstream: Any, start_gateway: Any, host: str) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    raw = await exchange(gw.port, request(f"GET /x HTTP/1.1\nHost: {host}\nX-Request-Id: dot\nConnection: close\n"))
    status, headers, rest = parse(raw)
    assert (status, json.loads(rest)["error"]) == (401, "missing_token")  # the host-bound route's auth
    assert upstream.connections == 0


async def test_http10_without_host_is_allowed(raw_upstream: Any, start_gateway: Any) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    raw = await exchange(gw.port, request("GET /x HTTP/1.0\nX-Request-Id: old\n"))
    assert parse(raw)[0] == 200
    assert upstream.connections == 1


async def test_a_refusal_on_the_headers_answers_before_the_body_arrives(raw_upstream: Any, start_gateway: Any) -> None:
    """The 400 does not wait for a body that Tornado would read (and then refuse itself)."""
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request("POST /x HTTP/1.1\nHost: other.example\nX-Request-Id: early\n"
                         "Transfer-Encoding: chunked, identity\n"))
    try:
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert_refused_json(raw, "early")


# --- a body that breaks after the upstream exchange began ---

async def streamed_then(port: int, upstream: RawUpstream, request_id: str, ending: bytes | None) -> bytes:
    """A chunked upload whose first chunk reaches the upstream; then ``ending`` (None: the client leaves)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        seen = len(upstream.heads)
        writer.write(request(f"POST /x HTTP/1.1\nHost: other.example\nX-Request-Id: {request_id}\n"
                             "Transfer-Encoding: chunked\n", b"5\r\nhello\r\n"))
        await wait_for(lambda: len(upstream.heads) > seen)
        if ending is None:
            return b""
        writer.write(ending)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


JSON_400 = b"json 400"  # Tornado refuses the body; gateway.malformed makes its answer SPEC §4's JSON


@pytest.mark.parametrize("ending, answer", [
    (b"zz\r\nhello\r\n0\r\n\r\n", JSON_400),
    (b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n", JSON_400),
    (b"0" * 70 + b"5\r\nhello\r\n0\r\n\r\n", b""),  # a chunk-size line over Tornado's 64 bytes: closed
    (None, b""),
], ids=["bad-chunk-size", "chunk-not-terminated", "chunk-size-line-too-long", "client-leaves"])
async def test_a_body_broken_midway_is_the_clients_fault(raw_upstream: Any, start_gateway: Any,
                                                         ending: bytes | None, answer: bytes) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    for n in range(4):
        raw = await streamed_then(gw.port, upstream, f"mid-{n}", ending)
        if answer is JSON_400:
            status, headers, body = parse(raw)
            assert (status, headers["connection"]) == (400, "close")
            assert json.loads(body) == {"error": "bad_request", "message": "malformed request", "status": 400,
                                        "request_id": f"mid-{n}"}
        else:
            assert raw == answer
        await wait_for(lambda: upstream.open == 0)  # the upstream exchange was aborted, its connection closed
    await wait_for(lambda: gw.holder.in_flight == 0)
    assert upstream.requests == []  # no upload was ever completed upstream
    honest = await exchange(gw.port, request(
        "GET /x HTTP/1.1\nHost: other.example\nX-Request-Id: honest\nConnection: close\n"))
    assert parse(honest)[0] == 200
    status = 499 if ending is None else 400
    assert [(e["request_id"], e["status"]) for e in log.entries()] == [
        *((f"mid-{n}", status) for n in range(4)), ("honest", 200)]
    target = gw.holder.runtime.pools["app"].targets[0]
    assert (target.circuit, target.breaker.consecutive_failures, target.in_flight) == ("closed", 0, 0)


@pytest.mark.parametrize("ending", [b"zz\r\nhello\r\n0\r\n\r\n", None], ids=["bad-chunk-size", "client-leaves"])
async def test_a_clients_fault_is_no_verdict_on_the_upstream(raw_upstream: Any, start_gateway: Any,
                                                              ending: bytes | None) -> None:
    """Between two real upstream failures, a client's broken or abandoned upload neither adds to the
    breaker's count nor resets it (it used to count as a success, wiping the failures)."""
    upstream = raw_upstream(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    gw = await gateway_for(start_gateway, upstream)
    target = gw.holder.runtime.pools["app"].targets[0]

    async def honest(n: int) -> int:
        return parse(await exchange(gw.port, request(
            f"GET /x HTTP/1.1\nHost: other.example\nX-Request-Id: honest-{n}\nConnection: close\n")))[0]

    assert [await honest(0), await honest(1)] == [502, 502]
    assert target.breaker.consecutive_failures == 2
    await streamed_then(gw.port, upstream, "client-fault", ending)
    await wait_for(lambda: gw.holder.in_flight == 0 and target.in_flight == 0)
    assert (target.circuit, target.breaker.consecutive_failures) == ("closed", 2)
    assert await honest(2) == 502  # the third real failure in a row opens the circuit
    assert target.circuit == "open"
