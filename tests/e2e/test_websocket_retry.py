"""A WebSocket handshake is a GET like any other (SPEC §6): SPEC §4's retries apply to it. After a
refused connection, a timeout or an ``on_statuses`` answer, it is tried on another target, within
the pool's ``attempts``; the upstream's own refusal is relayed when no try is left. Real gateways,
Tornado upstreams and ``websockets`` clients on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.ws import HANDSHAKE, WsRecord, ws_app


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    sock, port = bind_unused_port()
    sock.close()
    return f"http://127.0.0.1:{port}"


class Unavailable(RequestHandler):
    def initialize(self, retry_after: str = "0") -> None:
        self.retry_after = retry_after

    def get(self, *args: str) -> None:
        self.set_status(503)
        self.set_header("Retry-After", self.retry_after)
        self.finish(b"not now")


def config(targets: list[str], retry: str) -> str:
    listed = ", ".join(f'"{url}"' for url in targets)
    return f"""
    upstreams:
      chat: {{targets: [{listed}], balance: round_robin, retry: {retry}}}
    routes:
      - {{name: live, path: /live, upstream: chat, auth: none, websocket: true}}
    """


async def echo_once(port: int) -> str:
    async with connect(f"ws://127.0.0.1:{port}/live", proxy=None, open_timeout=5, ping_interval=None) as ws:
        await ws.send("hello")
        return str(await asyncio.wait_for(ws.recv(), 5))


def retries_counted(gw: Any) -> float:
    for line in gw.metrics.exposition().decode().splitlines():
        if line.startswith('gateway_retries_total{upstream="chat"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_refused_connection_is_tried_on_another_target(start_upstream: Any, start_gateway: Any) -> None:
    record = WsRecord()
    live = start_upstream(ws_app(record))
    gw = await start_gateway(config([closed_port_url(), live.url], "{attempts: 2, backoff_seconds: 0.01}"))
    for _ in range(4):  # round robin: every other handshake picks the dead target first
        assert await echo_once(gw.port) == "hello"
    assert record.opened == 4
    assert retries_counted(gw) >= 1


async def test_an_on_statuses_answer_is_tried_on_another_target(start_upstream: Any, start_gateway: Any) -> None:
    record = WsRecord()
    live = start_upstream(ws_app(record))
    busy = start_upstream(Application([(r"/(.*)", Unavailable)]))
    gw = await start_gateway(config([busy.url, live.url], "{attempts: 2, backoff_seconds: 0.01}"))
    for _ in range(4):
        assert await echo_once(gw.port) == "hello"
    assert record.opened == 4


async def test_the_last_refusal_is_relayed_when_no_try_is_left(start_upstream: Any, start_gateway: Any) -> None:
    one, two = (start_upstream(Application([(r"/(.*)", Unavailable)])) for _ in range(2))
    gw = await start_gateway(config([one.url, two.url], "{attempts: 2, backoff_seconds: 0.01}"))
    with pytest.raises(InvalidStatus) as refused:
        await echo_once(gw.port)
    assert (refused.value.response.status_code, refused.value.response.body) == (503, b"not now")
    assert retries_counted(gw) == 1  # one retry: attempts is 2


async def test_a_refusal_kept_for_a_retry_is_relayed_when_no_target_is_left(start_upstream: Any,
                                                                            start_gateway: Any) -> None:
    busy = start_upstream(Application([(r"/(.*)", Unavailable)]))
    gw = await start_gateway(f"""
    upstreams:
      chat: {{targets: ["{busy.url}"], retry: {{attempts: 3, backoff_seconds: 0.01}},
              circuit_breaker: {{failure_threshold: 1, open_seconds: 30}}}}
    routes:
      - {{name: live, path: /live, upstream: chat, auth: none, websocket: true}}
    """)
    with pytest.raises(InvalidStatus) as refused:  # its 503 opened the only target's circuit
        await echo_once(gw.port)
    assert (refused.value.response.status_code, refused.value.response.body) == (503, b"not now")
    assert retries_counted(gw) == 1  # a retry was granted, but no target was left to take it


async def test_without_retries_a_dead_target_is_a_502(start_gateway: Any) -> None:
    gw = await start_gateway(config([closed_port_url()], "{attempts: 1}"))
    with pytest.raises(InvalidStatus) as refused:
        await echo_once(gw.port)
    assert refused.value.response.status_code == 502
    assert json.loads(refused.value.response.body)["error"] == "bad_gateway"
    assert retries_counted(gw) == 0


async def test_when_every_try_is_refused_the_error_is_the_last_failure(start_gateway: Any) -> None:
    gw = await start_gateway(config([closed_port_url(), closed_port_url()], "{attempts: 3, backoff_seconds: 0.01}"))
    with pytest.raises(InvalidStatus) as refused:
        await echo_once(gw.port)
    assert refused.value.response.status_code == 502
    assert retries_counted(gw) == 2


async def test_a_client_gone_during_the_backoff_costs_nothing(start_upstream: Any, start_gateway: Any) -> None:
    busy = start_upstream(Application([(r"/(.*)", Unavailable, {"retry_after": "1"})]))
    gw = await start_gateway(config([busy.url], "{attempts: 2, max_backoff_seconds: 2}"))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /live HTTP/1.1\r\n" + HANDSHAKE + b"\r\n")
    await writer.drain()
    with pytest.raises(asyncio.TimeoutError):  # the target answered 503, Retry-After: 1; the retry waits it out
        await asyncio.wait_for(reader.read(1), 0.3)
    writer.close()
    await asyncio.sleep(1.2)  # the retry is not made: the client is gone
    assert gw.holder.in_flight == 0
    assert [line for line in gw.metrics.exposition().decode().splitlines()
            if line.startswith("gateway_upstream_duration_seconds_count")] == [
        f'gateway_upstream_duration_seconds_count{{target="{busy.url}",upstream="chat"}} 1.0']
