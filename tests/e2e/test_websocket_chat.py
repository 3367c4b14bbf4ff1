"""The issue's chat app through the gateway (issue 15): a FastAPI (uvicorn) backend, ``websockets`` clients.

The backend (tests/support/ws.py) is the shape the gateway was first asked to
front: ``/ws?room_name=...&user_id=...``, JSON frames ``{"action": "sendMessage",
...}`` broadcast to the room as ``{"messages": [...]}``, Bearer auth at the gateway.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.tokens import SECRET, bearer
from tests.support.wait import wait_for
from tests.support.ws import ChatServer, start_chat_upstream


@pytest.fixture
def chat():
    server = start_chat_upstream()
    yield server
    server.stop()


def chat_yaml(url: str) -> str:
    return f"""
    auth:
      jwt: {{secret: "{SECRET}", claims_to_headers: {{sub: X-User-Id}}}}
    upstreams:
      chat: {{targets: ["{url}"]}}
    routes:
      - {{name: chat-ws, path: /chat, upstream: chat, strip_prefix: true, websocket: true}}
      - {{name: chat-api, path: /api, upstream: chat, strip_prefix: true, auth: none}}
    """


def client(gw: Any, path: str, user: str = "alice", **kwargs: Any) -> Any:
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("max_size", 2 * 1024 * 1024)
    kwargs.setdefault("additional_headers", bearer(user))
    return connect(f"ws://127.0.0.1:{gw.port}{path}", **kwargs)


async def recv_json(ws: Any) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_round_trip_with_identity_seen_upstream(chat: ChatServer, start_gateway) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    async with client(gw, "/chat/ws?room_name=lobby&user_id=u1", additional_headers={
            **bearer("alice"), "X-User-Id": "mallory", "X-Request-Id": "chat-1"}) as ws:
        assert await recv_json(ws) == {"joined": "u1", "x_user_id": "alice", "x_request_id": "chat-1"}
        await ws.send(json.dumps({"action": "sendMessage", "user_name": "alice", "content": "hi",
                                  "room_name": "lobby"}))
        assert await recv_json(ws) == {"messages": [{"user_name": "alice", "content": "hi", "room_name": "lobby"}]}


async def test_401_without_a_token(chat: ChatServer, start_gateway) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{gw.port}/chat/ws?room_name=lobby&user_id=u1", proxy=None):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"] == "missing_token"
    assert refused.value.response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


async def test_broadcast_between_two_clients(chat: ChatServer, start_gateway) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    async with client(gw, "/chat/ws?room_name=r&user_id=a", "alice") as a, \
            client(gw, "/chat/ws?room_name=r&user_id=b", "bob") as b:
        await recv_json(a)
        await recv_json(b)
        await b.send(json.dumps({"action": "sendMessage", "user_name": "bob", "content": "yo", "room_name": "r"}))
        expected = {"messages": [{"user_name": "bob", "content": "yo", "room_name": "r"}]}
        assert await recv_json(a) == expected
        assert await recv_json(b) == expected


async def test_a_1_mib_binary_frame_and_300_small_frames_in_order(chat: ChatServer, start_gateway) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    async with client(gw, "/chat/echo") as ws:
        big = bytes(range(256)) * 4096  # 1 MiB, the default websocket_max_message_bytes
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 10) == big
        for i in range(300):
            await ws.send(f"m{i}")
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(300)]
        assert got == [f"m{i}" for i in range(300)]


async def test_close_code_passthrough(chat: ChatServer, start_gateway) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    async with client(gw, "/chat/ws?room_name=r&user_id=a") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"action": "ban"}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4001, "banned")


async def test_50_sockets_while_plain_http_is_served(chat: ChatServer, start_gateway, http) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    sockets = [await client(gw, f"/chat/ws?room_name=big&user_id=u{i}", f"user{i}").__aenter__() for i in range(50)]
    try:
        for ws in sockets:
            await recv_json(ws)
        assert len(gw.holder.websockets) == 50
        answers = await asyncio.gather(*(http(gw.url + "/api/health") for _ in range(20)))
        assert [a.code for a in answers] == [200] * 20
        await sockets[0].send(json.dumps({"action": "sendMessage", "user_name": "u0", "content": "all",
                                          "room_name": "big"}))
        for ws in sockets:
            assert (await recv_json(ws))["messages"][0]["content"] == "all"
    finally:
        for ws in sockets:
            await ws.close()
    await wait_for(lambda: not gw.holder.websockets, 10)
    assert 'gateway_websocket_connections{route="chat-ws"} 0.0' in gw.metrics.exposition().decode()


async def test_churn(chat: ChatServer, start_gateway) -> None:
    gw = await start_gateway(chat_yaml(chat.url))
    for i in range(30):
        async with client(gw, f"/chat/ws?room_name=churn&user_id=u{i}") as ws:
            assert (await recv_json(ws))["joined"] == f"u{i}"
    await wait_for(lambda: not gw.holder.websockets, 10)
    text = gw.metrics.exposition().decode()
    assert 'gateway_requests_total{method="GET",route="chat-ws",status="101"} 30.0' in text
    assert 'gateway_websocket_messages_total{direction="to_client",route="chat-ws"} 30.0' in text
