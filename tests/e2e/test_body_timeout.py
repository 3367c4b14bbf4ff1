"""``server.body_timeout_seconds``: a request body that sends nothing for that long is a 408, end to end
on raw sockets, buffered and streamed, and never counts against the upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.raw import AccessLines, RawUpstream, body_of, parse
from tests.support.wait import wait_for

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TIMEOUT = 0.3


async def gateway_for(start_gateway: Any, upstream: RawUpstream) -> Any:
    return await start_gateway(f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: 0.5, body_timeout_seconds: {TIMEOUT}}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams:
      app:
        targets: ["{upstream.url}"]
        retry: {{attempts: 1}}
        circuit_breaker: {{failure_threshold: 1, open_seconds: 60}}
    routes:
      - {{name: app, path: /, upstream: app}}
    """)


def head(request_id: str, framing: str) -> bytes:
    return (f"POST /x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {request_id}\r\n{framing}\r\n\r\n").encode()


async def stalled(port: int, data: bytes, after: Callable[[], Any] | None = None) -> tuple[bytes, float]:
    """Send ``data`` and then nothing; what comes back until the gateway closes, and how long that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    try:
        writer.write(data)
        if after is not None:
            await after()
        started = loop.time()
        raw = await asyncio.wait_for(reader.read(), 5)
        return raw, loop.time() - started
    finally:
        writer.close()


def assert_408(raw: bytes, request_id: str) -> None:
    status, headers, rest = parse(raw)
    assert status == 408
    assert headers["connection"] == "close"
    assert len(rest) == int(headers["content-length"])
    assert json.loads(rest) == {"error": "request_timeout", "message": f"the request body sent nothing for {TIMEOUT:g}s",
                                "status": 408, "request_id": request_id}


def assert_upstream_untouched(gw: Any) -> None:
    target = gw.holder.runtime.pools["app"].targets[0]
    assert (target.circuit, target.breaker.consecutive_failures, target.in_flight) == ("closed", 0, 0)


@pytest.mark.parametrize("framing, sent", [
    ("Content-Length: 10", b""),
    ("Content-Length: 10", b"abc"),
    ("Transfer-Encoding: chunked", b""),
], ids=["buffered-nothing-sent", "buffered-part-sent", "chunked-nothing-sent"])
async def test_a_stalled_body_is_a_408_and_never_reaches_the_upstream(
        raw_upstream: Any, start_gateway: Any, framing: str, sent: bytes) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    raw, waited = await stalled(gw.port, head("stall", framing) + sent)
    assert_408(raw, "stall")
    assert waited < TIMEOUT + 1.0
    assert upstream.connections == 0
    await wait_for(lambda: gw.holder.in_flight == 0)
    assert [(e["request_id"], e["status"], e["bytes_in"]) for e in log.entries()] == [("stall", 408, len(sent))]


async def test_a_stalled_streamed_upload_releases_its_upstream_connection(raw_upstream: Any, start_gateway: Any) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    log = AccessLines(gw)
    for n in range(3):  # the breaker would open after one failure
        heads = len(upstream.heads) + 1
        raw, _ = await stalled(gw.port, head(f"stream-{n}", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n",
                               after=lambda: wait_for(lambda: len(upstream.heads) == heads))  # noqa: B023 (awaited now)
        assert_408(raw, f"stream-{n}")
        await wait_for(lambda: upstream.open == 0)  # the gateway closed the upstream connection
    assert upstream.requests == []  # no upload was completed upstream
    await wait_for(lambda: gw.holder.in_flight == 0)
    assert [(e["request_id"], e["status"]) for e in log.entries()] == [(f"stream-{n}", 408) for n in range(3)]
    assert_upstream_untouched(gw)


@pytest.mark.parametrize("framing, pieces", [
    ("Content-Length: 8", [bytes([byte]) for byte in b"abcdefgh"]),
    ("Transfer-Encoding: chunked", [b"1\r\n%c\r\n" % byte for byte in b"abcdefg"] + [b"1\r\nh\r\n0\r\n\r\n"]),
], ids=["buffered", "streamed"])
async def test_a_body_that_keeps_sending_within_the_timeout_goes_through(
        raw_upstream: Any, start_gateway: Any, framing: str, pieces: list[bytes]) -> None:
    upstream = raw_upstream()
    gw = await gateway_for(start_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(head("slow", framing + "\r\nConnection: close"))
        for piece in pieces:  # 8 x 0.1 s: the whole upload takes longer than the timeout, each gap a third of it
            await asyncio.sleep(TIMEOUT / 3)
            writer.write(piece)
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert parse(raw)[0] == 200
    assert len(upstream.requests) == 1
    assert body_of(upstream.requests[0]) == b"abcdefgh"
    assert_upstream_untouched(gw)


async def test_an_upstream_slow_to_take_the_body_is_not_the_clients_stall(raw_upstream: Any, start_gateway: Any) -> None:
    """A client whose upload waits on the upstream (backpressure) is not timed out: that wait is the gateway's."""
    upstream = raw_upstream(read_delay=TIMEOUT * 4)
    gw = await gateway_for(start_gateway, upstream)
    piece = b"x" * (1024 * 1024)
    chunk = b"%x\r\n%b\r\n" % (len(piece), piece)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(head("pressed", "Transfer-Encoding: chunked\r\nConnection: close") + chunk * 8 + b"0\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert parse(raw)[0] == 200
    assert body_of(upstream.requests[0]) == piece * 8
    assert_upstream_untouched(gw)
