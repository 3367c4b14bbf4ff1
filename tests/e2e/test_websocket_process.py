"""WebSocket relaying in a real gateway process (issue 15): SIGTERM, reload, memory under a stalled reader.

The gateway runs as ``run.py serve`` (tests/support/gateway_process.py); the
upstreams are scripted Tornado WebSocket apps (tests/support/ws.py) on the
test's loop, the clients ``websockets``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.gateway_process import GatewayProcess
from tests.support.proc import status_kib
from tests.support.tokens import SECRET, bearer
from tests.support.wait import wait_for
from tests.support.ws import WsRecord, ws_app

MIB = 1024 * 1024


def config(url: str, *, drain: float = 5.0, route_extra: str = "") -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: {drain}}}
    admin: {{host: 127.0.0.1, port: 0}}
    logging: {{level: info, format: json}}
    auth:
      jwt: {{algorithms: [HS256], secret: {SECRET}}}
    upstreams:
      live: {{targets: ["{url}"]}}
    routes:
      - {{name: live, path: /live, upstream: live, websocket: true, auth: optional{route_extra}}}
    """


def client(gateway: GatewayProcess, **kwargs: Any) -> Any:
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", 10)
    return connect(f"ws://127.0.0.1:{gateway.port}/live", **kwargs)


@pytest.mark.timeout(seconds=40)
async def test_sigterm_closes_open_sockets_1001_after_the_drain_and_exits_0(start_upstream, gateway_process) -> None:
    record = WsRecord()
    upstream = start_upstream(ws_app(record))
    gateway = await gateway_process(config(upstream.url, drain=1.0))
    a = await client(gateway, additional_headers={"X-Request-Id": "ws-a", **bearer("alice")}).__aenter__()
    b = await client(gateway, additional_headers={"X-Request-Id": "ws-b"}).__aenter__()
    await a.send("before")
    assert await a.recv() == "before"
    gateway.signal(signal.SIGTERM)
    await gateway.wait_for_log("shutting down")
    await a.send("during the drain")  # open sockets keep working for drain_seconds
    assert await asyncio.wait_for(a.recv(), 5) == "during the drain"
    for ws in (a, b):
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (1001, "gateway shutting down")
    assert await gateway.wait(10) == 0
    await wait_for(lambda: len(record.closes) == 2, 10)
    assert record.closes == [(1001, "gateway shutting down")] * 2
    entry = await gateway.access_line("ws-a")
    assert (entry["status"], entry["route"], entry["method"], entry["path"]) == (101, "live", "GET", "/live")
    assert (entry["bytes_in"], entry["bytes_out"], entry["subject"]) == (22, 22, "alice")
    assert entry["duration_ms"] >= 1000.0
    assert (await gateway.access_line("ws-b"))["subject"] is None
    await gateway.wait_for_log(r"closing 2 WebSocket\(s\) still open \(1001\)")


@pytest.mark.timeout(seconds=40)
async def test_a_reload_keeps_open_sockets_on_the_config_they_started_with(start_upstream, gateway_process) -> None:
    old_record, new_record = WsRecord(), WsRecord()
    old = start_upstream(ws_app(old_record, welcome="old"))
    new = start_upstream(ws_app(new_record, welcome="new"))
    gateway = await gateway_process(config(old.url, route_extra=", websocket_max_message_bytes: 100"))
    async with client(gateway) as before:
        assert await before.recv() == "old"
        gateway.write_config(config(new.url, route_extra=", websocket_max_message_bytes: 10"))
        gateway.signal(signal.SIGHUP)
        await gateway.wait_for_log("configuration reloaded")
        async with client(gateway) as after:
            assert await after.recv() == "new"
            await before.send("x" * 50)  # over the new limit, within the old one
            assert await asyncio.wait_for(before.recv(), 5) == "x" * 50
            await after.send("x" * 50)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(after.recv(), 5)
            assert after.protocol.close_rcvd.code == 1009
    assert old_record.messages == ["x" * 50]
    assert new_record.messages == []


@pytest.mark.timeout(seconds=90)
async def test_100_mib_to_a_stalled_client_keeps_the_gateways_memory_bounded(start_upstream, gateway_process) -> None:
    record = WsRecord()
    upstream = start_upstream(ws_app(record))
    gateway = await gateway_process(config(upstream.url))
    async with client(gateway, max_queue=1, max_size=2 * MIB) as ws:
        await ws.send("warm")
        await ws.recv()
        baseline = status_kib(gateway.pid, "VmRSS")
        await ws.send(f"flood:100:{MIB}")  # the upstream writes 100 MiB, awaiting each write
        await asyncio.sleep(2.0)  # the client reads nothing meanwhile
        stalled = status_kib(gateway.pid, "VmRSS")
        assert (stalled - baseline) * 1024 < 16 * MIB, f"grew {(stalled - baseline) // 1024} MiB while stalled"
        got = 0
        while True:
            message = await asyncio.wait_for(ws.recv(), 30)
            if message == "flood done":
                break
            assert len(message) == MIB
            got += 1
        assert got == 100
        peak = status_kib(gateway.pid, "VmHWM")
        assert (peak - baseline) * 1024 < 32 * MIB, f"peaked {(peak - baseline) // 1024} MiB over the baseline"


@pytest.mark.timeout(seconds=90)
async def test_100_mib_to_a_stalled_upstream_pushes_back_on_the_client(start_upstream, gateway_process) -> None:
    record = WsRecord()
    upstream = start_upstream(ws_app(record, max_message_size=2 * MIB))
    gateway = await gateway_process(config(upstream.url))
    async with client(gateway) as ws:
        await ws.send("stall:2")
        baseline = status_kib(gateway.pid, "VmRSS")
        chunk = b"z" * MIB
        sent = 0

        async def send_all() -> None:
            nonlocal sent
            for _ in range(100):
                await ws.send(chunk)
                sent += 1

        async def read_echoes() -> None:  # the upstream echoes each message: take them, or it stops reading
            while True:
                await ws.recv()

        sending, reading = asyncio.ensure_future(send_all()), asyncio.ensure_future(read_echoes())
        await asyncio.sleep(1.5)
        assert sent < 40, f"{sent} MiB went out while the upstream read nothing"  # backpressure reached the client
        stalled = status_kib(gateway.pid, "VmRSS")
        assert (stalled - baseline) * 1024 < 16 * MIB
        await asyncio.wait_for(sending, 60)
        await wait_for(lambda: len(record.messages) == 101, 60)
        reading.cancel()
    assert all(m == chunk for m in record.messages[1:])
    assert (status_kib(gateway.pid, "VmHWM") - baseline) * 1024 < 32 * MIB
