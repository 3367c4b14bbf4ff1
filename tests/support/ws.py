"""WebSocket upstreams for the tests: a Tornado one for the wire details, a FastAPI chat in uvicorn.

:class:`WsUpstream` is a Tornado ``WebSocketHandler`` app (serve it with
``start_upstream(ws_app(...))``) that records what it saw: the handshake's headers,
messages (kind and payload), pings, close code and reason. What it does with a
message is scripted by its text: ``close:CODE:REASON`` closes, ``last:A,B`` sends A and B then closes 4003 at once, ``ping:DATA`` pings
the client, ``drop`` drops the connection, ``stall:SECONDS`` reads nothing for that long, ``flood:N:SIZE`` sends N binary messages of SIZE bytes (awaiting each
write), ``big:SIZE`` sends one; anything else is echoed back as it came.

:func:`start_chat_upstream` runs :data:`CHAT_APP` (the issue's chat backend: a room
broadcast over ``/ws?room_name=&user_id=``; ``/echo`` echoes) under uvicorn in a thread, on an
ephemeral loopback port; the returned object's ``stop()`` ends it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect  # module level: FastAPI reads the annotations
from tornado.web import Application
from tornado.websocket import WebSocketHandler

__all__ = ["WsRecord", "ws_app", "start_chat_upstream", "ChatServer", "HANDSHAKE"]

# A client's opening handshake fields for raw sockets, the request line and the blank line aside.
HANDSHAKE = (b"Host: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n")


class WsRecord:
    """What a :func:`ws_app` upstream saw, over every connection it took."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, list[str]]] = []
        self.paths: list[str] = []
        self.messages: list[str | bytes] = []
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        self.closes: list[tuple[int | None, str | None]] = []
        self.opened = 0
        self.closed = asyncio.Event()


class _Scripted(WebSocketHandler):
    def initialize(self, record: WsRecord, subprotocol: str | None, welcome: str | None) -> None:
        self.record = record
        self.subprotocol = subprotocol
        self.welcome = welcome

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.subprotocol if self.subprotocol in subprotocols else None

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str) -> None:
        record = self.record
        record.opened += 1
        record.paths.append(self.request.uri or "")
        record.handshakes.append({name: self.request.headers.get_list(name) for name in self.request.headers})
        if self.welcome is not None:
            self.write_message(self.welcome)

    async def on_message(self, message: str | bytes) -> None:
        self.record.messages.append(message)
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            self.close(int(code), reason)
        elif isinstance(message, str) and message.startswith("last:"):  # messages, then the close at once
            for word in message[5:].split(","):
                self.write_message(word)
            self.close(4003, "done")
        elif isinstance(message, str) and message.startswith("ping:"):
            self.ping(message[5:].encode())
        elif isinstance(message, str) and message.startswith("flood:"):
            _, count, size = message.split(":")
            chunk = b"x" * int(size)
            for _ in range(int(count)):
                await self.write_message(chunk, binary=True)
            await self.write_message("flood done")
        elif isinstance(message, str) and message.startswith("stall:"):  # reads nothing more for a while
            await asyncio.sleep(float(message[6:]))
        elif message == "drop":  # the connection just goes, no close frame
            self.ws_connection.stream.close()  # type: ignore[union-attr]
        elif isinstance(message, str) and message.startswith("big:"):
            await self.write_message(b"y" * int(message[4:]), binary=True)
        else:
            await self.write_message(message, binary=isinstance(message, bytes))

    def on_ping(self, data: bytes) -> None:
        self.record.pings.append(data)

    def on_pong(self, data: bytes) -> None:
        self.record.pongs.append(data)

    def on_close(self) -> None:
        self.record.closes.append((self.close_code, self.close_reason))
        self.record.closed.set()


def ws_app(record: WsRecord, *, subprotocol: str | None = None, welcome: str | None = None,
           max_message_size: int = 200 * 1024 * 1024) -> Application:
    """A Tornado app serving :class:`_Scripted` on every path, recording into ``record``."""
    return Application([(r".*", _Scripted, {"record": record, "subprotocol": subprotocol, "welcome": welcome})],
                       websocket_max_message_size=max_message_size)


# --- the FastAPI chat backend of the issue ---

def _chat_app() -> Any:
    app = FastAPI()
    rooms: dict[str, set[WebSocket]] = {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def chat(websocket: WebSocket, room_name: str, user_id: str) -> None:
        await websocket.accept()
        members = rooms.setdefault(room_name, set())
        members.add(websocket)
        await websocket.send_json({"joined": user_id, "x_user_id": websocket.headers.get("x-user-id"),
                                   "x_request_id": websocket.headers.get("x-request-id")})
        try:
            while True:
                frame = await websocket.receive_json()
                if frame.get("action") == "sendMessage":
                    out = {"messages": [{"user_name": frame["user_name"], "content": frame["content"],
                                         "room_name": room_name}]}
                    for member in list(members):
                        await member.send_text(json.dumps(out))
                elif frame.get("action") == "ban":
                    await websocket.close(4001, "banned")
                    return
        except WebSocketDisconnect:
            pass
        finally:
            members.discard(websocket)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
                else:
                    await websocket.send_text(message["text"])
        except WebSocketDisconnect:
            pass

    return app


class ChatServer:
    """uvicorn serving the chat app in a thread of its own."""

    def __init__(self) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sock = sock
        config = uvicorn.Config(_chat_app(), log_level="warning", lifespan="off", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the chat upstream did not start")
            time.sleep(0.02)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        finally:
            loop.close()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self._sock.close()


def start_chat_upstream() -> ChatServer:
    return ChatServer()
