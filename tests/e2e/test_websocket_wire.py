"""WebSocket relaying on the wire (SPEC §6, issue 15): Tornado upstreams for the details.

A real gateway relays between ``websockets`` clients and a scripted Tornado
upstream (tests/support/ws.py): handshakes refused as SPEC §4's JSON with the
upstream never seeing them, the header plan of a proxied request, messages of
both kinds, fragmentation, pings, close codes both ways, the limits (1009, idle
1001), an upstream that is down, refuses or drops, a client that goes away.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.tokens import SECRET, bearer
from tests.support.wait import wait_for
from tests.support.ws import WsRecord, ws_app


def ws_url(gw: Any, path: str) -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


def client(url: str, **kwargs: Any) -> Any:
    """A websockets client that sends no keepalive pings of its own (the idle tests count on silence)."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 5)
    return connect(url, **kwargs)


def config(url: str, route_extra: str = "", top: str = "") -> str:
    return f"""
    {top}
    upstreams:
      chat: {{targets: ["{url}"]}}
    routes:
      - {{name: live, path: /live, upstream: chat, websocket: true{route_extra}}}
      - {{name: plain, path: /plain, upstream: chat}}
    """


@pytest.fixture
def record() -> WsRecord:
    return WsRecord()


@pytest.fixture
def upstream(start_upstream, record):
    return start_upstream(ws_app(record))


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Wait for the connection to close; the code and reason the client received."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)


async def test_text_and_binary_round_trip(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live/room?x=1&y=%20")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
    await wait_for(lambda: record.closes)
    assert record.messages == ["hello", b"\x00\x01\xff"]
    assert record.paths == ["/live/room?x=1&y=%20"]
    assert record.closes == [(1000, None)]  # a close with no reason, as the client sent it


async def test_upstream_handshake_carries_the_request_header_plan(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url, ", auth: required", top=f"""
    auth:
      jwt: {{secret: "{SECRET}", claims_to_headers: {{sub: X-User-Id}}}}
    """))
    spoofed = {"X-User-Id": "mallory", "X_User_Id": "mallory", "X-Forwarded-For": "6.6.6.6", "X-Request-Id": "rid-1",
               "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", **bearer("alice")}
    async with client(ws_url(gw, "/live"), additional_headers=spoofed, subprotocols=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        assert ws.response.headers["X-Request-Id"] == "rid-1"
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # no compression on either leg
    seen = record.handshakes[0]
    assert seen["X-User-Id"] == ["alice"]
    assert "X_User_Id" not in seen
    assert seen["X-Forwarded-For"] == ["127.0.0.1"]
    assert seen["X-Forwarded-Proto"] == ["http"]
    assert seen["X-Request-Id"] == ["rid-1"]
    assert seen["Traceparent"] == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
    assert seen["Authorization"][0].startswith("Bearer ")
    assert seen["Upgrade"] == ["websocket"]
    assert "Sec-Websocket-Extensions" not in seen  # the client's offer stays on the client's leg
    assert len(seen["Sec-Websocket-Key"]) == 1


@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, "missing_token"),
    ({"Authorization": "Bearer nope"}, 401, "invalid_token"),
])
async def test_refused_handshake_is_json_and_never_reaches_the_upstream(
        upstream, record, start_gateway, headers, status, code) -> None:
    gw = await start_gateway(config(upstream.url, ", auth: required", top=f"""
    auth:
      jwt: {{secret: "{SECRET}"}}
    """))
    with pytest.raises(InvalidStatus) as refused:
        async with client(ws_url(gw, "/live"), additional_headers=headers):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.body)
    assert body["error"] == code and body["status"] == status
    assert record.opened == 0 and record.handshakes == []


async def test_scopes_and_rate_limit_apply_to_the_handshake(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url, ", scopes: [chat], rate_limit: {requests: 2, window_seconds: 60, key: ip}",
                                    top=f"""
    auth:
      jwt: {{secret: "{SECRET}"}}
    """))
    with pytest.raises(InvalidStatus) as refused:
        async with client(ws_url(gw, "/live"), additional_headers=bearer("alice", scopes="other")):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"] == "insufficient_scope"
    for remaining in ("1", "0"):  # the refused one came before the rate limit, which counts handshakes
        async with client(ws_url(gw, "/live"), additional_headers=bearer("alice", scopes="chat")) as ws:
            assert ws.response.headers["RateLimit-Remaining"] == remaining
    with pytest.raises(InvalidStatus) as limited:
        async with client(ws_url(gw, "/live"), additional_headers=bearer("alice", scopes="chat")):
            pass
    assert limited.value.response.status_code == 429
    assert json.loads(limited.value.response.body)["error"] == "rate_limited"
    assert "Retry-After" in limited.value.response.headers
    assert record.opened == 2


@pytest.mark.parametrize("origin, allowed", [("https://app.example", True), ("https://evil.example", False),
                                             (None, True)])
async def test_origin_is_checked_against_the_routes_cors(upstream, record, start_gateway, origin, allowed) -> None:
    gw = await start_gateway(config(upstream.url, ", cors: {allow_origins: [\"https://app.example\"]}"))
    if allowed:
        async with client(ws_url(gw, "/live"), origin=origin) as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"
            if origin:
                assert ws.response.headers["Access-Control-Allow-Origin"] == origin
        return
    with pytest.raises(InvalidStatus) as refused:
        async with client(ws_url(gw, "/live"), origin=origin):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"] == "origin_not_allowed"
    assert record.opened == 0


async def test_an_upgrade_on_a_route_without_websocket_is_never_relayed(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    with pytest.raises(InvalidStatus) as refused:
        async with client(ws_url(gw, "/plain")):
            pass
    # the upstream got a plain GET (Upgrade dropped as hop-by-hop) and said so itself
    assert refused.value.response.status_code == 400
    assert b"Upgrade" in refused.value.response.body
    assert record.opened == 0


def raw_handshake(**overrides: str | None) -> dict[str, str]:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version": "13"}
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


@pytest.mark.parametrize("overrides, status, code", [
    ({"Sec_WebSocket_Key": None}, 400, "bad_request"),
    ({"Sec_WebSocket_Key": "short"}, 400, "bad_request"),
    ({"Connection": "keep-alive"}, 400, "bad_request"),
    ({"Sec_WebSocket_Version": "8"}, 426, "upgrade_required"),
    ({"Sec_WebSocket_Version": None}, 426, "upgrade_required"),
])
async def test_malformed_handshakes(upstream, record, start_gateway, http, overrides, status, code) -> None:
    gw = await start_gateway(config(upstream.url))
    resp = await http(gw.url + "/live", headers=raw_handshake(**overrides))
    assert resp.code == status
    assert json.loads(resp.body)["error"] == code
    if status == 426:
        assert resp.headers["Sec-WebSocket-Version"] == "13"
    assert record.opened == 0


async def test_a_handshake_with_a_body_or_another_method_is_refused(upstream, record, start_gateway, http) -> None:
    gw = await start_gateway(config(upstream.url))
    resp = await http(gw.url + "/live", method="POST", body=b"x", headers=raw_handshake())
    assert resp.code == 400
    resp = await http(gw.url + "/live", method="GET", body=b"abc", allow_nonstandard_methods=True,
                      headers=raw_handshake())
    assert resp.code == 400
    assert record.opened == 0


async def test_subprotocol_is_negotiated_by_the_upstream(start_upstream, record, start_gateway) -> None:
    upstream = start_upstream(ws_app(record, subprotocol="chat.v2"))
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
    assert record.handshakes[0]["Sec-Websocket-Protocol"] == ["chat.v1, chat.v2"]


async def test_upstream_welcome_sent_with_its_101_is_not_lost(start_upstream, record, start_gateway) -> None:
    upstream = start_upstream(ws_app(record, welcome="welcome"))
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "welcome"


async def test_fragmented_message_arrives_whole(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented"
        await ws.send([b"\x01", b"\x02\x03"])
        assert await ws.recv() == b"\x01\x02\x03"
    assert record.messages == ["fragmented", b"\x01\x02\x03"]


async def test_pings_are_answered_and_passed_on(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        pong = await ws.ping(b"hb")
        await asyncio.wait_for(pong, 5)
        await ws.send("ping:xy")  # the upstream pings the client
        await wait_for(lambda: record.pings == [b"hb"] and record.pongs == [b"xy"])


@pytest.mark.parametrize("code, reason", [(4001, "banned"), (1000, "bye"), (1011, "oops")])
async def test_upstream_close_code_and_reason_reach_the_client(upstream, start_gateway, code, reason) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        await ws.send(f"close:{code}:{reason}")
        assert await closed_with(ws) == (code, reason)


async def test_messages_sent_just_before_a_close_arrive_before_it(upstream, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        await ws.send("last:one,two,three")
        assert [await ws.recv() for _ in range(3)] == ["one", "two", "three"]
        assert await closed_with(ws) == (4003, "done")


async def test_client_close_code_and_reason_reach_the_upstream(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        await ws.send("x")
        await ws.recv()
        await ws.close(4002, "leaving")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4002
    await wait_for(lambda: record.closes)
    assert record.closes == [(4002, "leaving")]


async def test_a_message_over_the_limit_closes_1009(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url, ", websocket_max_message_bytes: 1024"))
    async with client(ws_url(gw, "/live")) as ws:  # from the client
        await ws.send(b"a" * 1024)
        assert await ws.recv() == b"a" * 1024
        await ws.send(b"a" * 1025)
        assert (await closed_with(ws))[0] == 1009
    await wait_for(lambda: record.closes)
    assert record.closes[0][0] == 1009
    async with client(ws_url(gw, "/live")) as ws:  # from the upstream
        await ws.send("big:1025")
        assert (await closed_with(ws))[0] == 1009
    await wait_for(lambda: len(record.closes) == 2)
    assert record.closes[1][0] == 1009


async def test_an_idle_socket_is_closed_1001(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url, ", websocket_idle_seconds: 0.4"))
    async with client(ws_url(gw, "/live")) as ws:
        for _ in range(3):  # activity keeps it open past the idle time
            await asyncio.sleep(0.2)
            await ws.send("still here")
            await ws.recv()
        started = time.monotonic()
        assert await closed_with(ws) == (1001, "idle timeout")
        assert 0.3 < time.monotonic() - started < 2.0
    await wait_for(lambda: record.closes)
    assert record.closes == [(1001, "idle timeout")]


async def test_upstream_down_is_502_json(start_gateway) -> None:
    from tornado.testing import bind_unused_port

    sock, port = bind_unused_port()
    sock.close()
    gw = await start_gateway(config(f"http://127.0.0.1:{port}"))
    with pytest.raises(InvalidStatus) as refused:
        async with client(ws_url(gw, "/live")):
            pass
    assert refused.value.response.status_code == 502
    assert json.loads(refused.value.response.body)["error"] == "bad_gateway"
    assert str(port).encode() not in refused.value.response.body


class Refusing(RequestHandler):
    def get(self) -> None:
        self.set_status(403)
        self.set_header("X-Why", "no")
        self.finish({"reason": "not in this room"})


async def test_upstream_refusal_is_relayed(start_upstream, start_gateway) -> None:
    upstream = start_upstream(Application([(r".*", Refusing)]))
    gw = await start_gateway(config(upstream.url))
    with pytest.raises(InvalidStatus) as refused:
        async with client(ws_url(gw, "/live")):
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert response.headers["X-Why"] == "no"
    assert json.loads(response.body) == {"reason": "not in this room"}


async def test_upstream_that_drops_mid_stream_closes_the_client_1014(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        await ws.send("drop")
        assert await closed_with(ws) == (1014, "upstream connection lost")


async def test_client_that_goes_away_closes_the_upstream_1001(upstream, record, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    ws = await client(ws_url(gw, "/live"))
    await ws.send("x")
    await ws.recv()
    ws.transport.abort()
    await wait_for(lambda: record.closes)
    assert record.closes == [(1001, "client went away")]
    await wait_for(lambda: not gw.holder.websockets)


async def test_metrics_and_access_log(upstream, start_gateway) -> None:
    gw = await start_gateway(config(upstream.url))
    async with client(ws_url(gw, "/live")) as ws:
        await wait_for(lambda: gw.holder.websockets)
        text = gw.metrics.exposition().decode()
        assert 'gateway_websocket_connections{route="live"} 1.0' in text
        assert gw.holder.in_flight == 0  # an open socket is not a request in flight
        for i in range(3):
            await ws.send(f"m{i}")
            await ws.recv()
    await wait_for(lambda: not gw.holder.websockets)
    text = gw.metrics.exposition().decode()
    assert 'gateway_websocket_connections{route="live"} 0.0' in text
    assert 'gateway_websocket_messages_total{direction="to_upstream",route="live"} 3.0' in text
    assert 'gateway_websocket_messages_total{direction="to_client",route="live"} 3.0' in text
    assert 'gateway_requests_total{method="GET",route="live",status="101"} 1.0' in text


class SlowHandshake(WebSocketHandler):
    async def prepare(self) -> None:
        await asyncio.sleep(0.5)

    def on_message(self, message: str | bytes) -> None:
        pass


async def test_a_client_gone_during_the_upstream_handshake_leaves_nothing_open(start_upstream, start_gateway) -> None:
    upstream = start_upstream(Application([(r".*", SlowHandshake)]))
    gw = await start_gateway(config(upstream.url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in raw_handshake().items())
    writer.write(f"GET /live HTTP/1.1\r\nHost: gw\r\n{head}\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await wait_for(lambda: gw.holder.in_flight == 0)
    await asyncio.sleep(0.8)  # the upstream's 101 arrives after the client left: given up at once
    assert not gw.holder.websockets
    text = gw.metrics.exposition().decode()
    assert 'gateway_requests_total{method="GET",route="live",status="499"} 1.0' in text
    assert 'gateway_websocket_connections{route="live"}' not in text or \
        'gateway_websocket_connections{route="live"} 0.0' in text
