"""An upstream that breaks after sending its head, end to end with raw TCP upstreams.

Every way a request ends writes exactly one access-log line and counts it, and
the in-flight gauge returns to 0 (else a graceful shutdown waits its whole
``drain_seconds``). Before any byte went to the client the answer is still SPEC
§4's 502; after, the client's answer is cut short and logged with the status
it was given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Fetch
from tests.support.raw import AccessLines, RawUpstream, exchange, parse


async def gateway_for(start_gateway: Any, upstream: RawUpstream) -> Any:
    return await start_gateway(f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: 5}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams:
      raw: {{targets: ["{upstream.url}"], retry: {{attempts: 1}}}}
    routes:
      - {{name: raw, path: /, upstream: raw}}
    """)


async def in_flight_gauge(http: Fetch, gw: Any) -> float:
    response = await http(f"http://127.0.0.1:{gw.admin_port}/-/metrics")
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            if sample.name == "gateway_in_flight_requests":
                return float(sample.value)
    raise AssertionError("no gateway_in_flight_requests")


def get(request_id: str, close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET /x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {request_id}\r\n{connection}\r\n".encode()


async def assert_settled(http: Fetch, gw: Any, log: AccessLines, expected: list[tuple[str, int]]) -> None:
    """One access-log line per request with the status the client got, nothing in flight,
    and a graceful shutdown that does not wait."""
    for _ in range(100):  # the client may see the close a moment before the gateway counted it
        if gw.holder.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert [(e["request_id"], e["status"]) for e in log.entries()] == expected
    assert await in_flight_gauge(http, gw) == 0
    started = time.monotonic()
    await gw.shutdown()
    assert time.monotonic() - started < 1.0  # drain_seconds is 5


BROKEN_BEFORE_ANY_BODY = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", id="head-then-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                 id="head-then-garbage-chunk"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked-head-then-close"),
]


@pytest.mark.parametrize("answer", BROKEN_BEFORE_ANY_BODY)
async def test_a_head_without_its_body_is_a_502_logged_and_counted(
        raw_upstream: Any, start_gateway: Any, http: Fetch, caplog: Any, answer: bytes) -> None:
    upstream = raw_upstream(answer, close=True)
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    for n in range(3):
        status, headers, rest = parse(await exchange(gw.port, get(f"broken-{n}")))
        assert status == 502
        error = json.loads(rest)
        assert (error["error"], error["request_id"]) == ("bad_gateway", f"broken-{n}")
        assert error["message"] == "the upstream broke off its answer"
    await assert_settled(http, gw, log, [(f"broken-{n}", 502) for n in range(3)])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_cut_short_closes_the_client_connection_logged_with_its_status(
        raw_upstream: Any, start_gateway: Any, http: Fetch, caplog: Any) -> None:
    upstream = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", close=True)
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    for n in range(3):
        status, headers, rest = parse(await exchange(gw.port, get(f"cut-{n}")))
        assert (status, headers["content-length"], rest) == (200, "100", b"partial")  # then closed
    await assert_settled(http, gw, log, [(f"cut-{n}", 200) for n in range(3)])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("answer, status", [
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 204),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n", 304),
], ids=["204", "304"])
async def test_a_bodiless_answer_with_content_length_is_relayed_without_a_body(
        raw_upstream: Any, start_gateway: Any, http: Fetch, caplog: Any, answer: bytes, status: int) -> None:
    upstream = raw_upstream(answer)
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        for n in range(2):  # the second on the same connection: the first left no stray body bytes
            writer.write(get(f"empty-{n}", close=False))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            got, headers, rest = parse(head)
            assert (got, rest) == (status, b"")
            assert headers.get("content-length") == (None if status == 204 else "5")
        writer.write(get("last"))
        assert parse(await asyncio.wait_for(reader.read(), 5))[0] == status  # and nothing after the head
    finally:
        writer.close()
    await assert_settled(http, gw, log, [("empty-0", status), ("empty-1", status), ("last", status)])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
