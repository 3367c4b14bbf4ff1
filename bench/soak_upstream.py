#!/usr/bin/env python3
"""One soak target: a Tornado app the soak kills, restarts and turns to 503 (bench/soak.py).

Paths (the gateway strips its `/api` prefix before they arrive):

- `GET /small`: a 1 KiB JSON body; `GET /big`: 1 MiB; `GET /part/<name>`: a small JSON
  object, what the aggregate route's parts fetch;
- `POST /echo`: reads the body (any size) and answers `{"id": ..., "bytes": N}`. The
  request's `X-Soak-Id` is appended to the record file **as soon as the headers
  arrive** (the handler streams the body), one line per arrival, with `O_APPEND` and
  no user-space buffer: a line survives a SIGKILL of this process, so the soak sees
  every POST that reached a target, even one whose body never finished;
- `GET /health`: 200, or 503 while faulted.

- `GET /ws` (a WebSocket): echoes every message as it came, in order; its `101` carries
  `X-Soak-Target: <name>`, so the client knows which target its socket reached.

SIGUSR1 makes every answer (health and WebSocket handshakes included) `503 {"error":
"target_fault"}` until SIGUSR2: "a target that starts answering 503 for a while". It also
closes the target's open WebSockets with 1001 ("going away"), as a server taken out of
service does; the gateway passes that close on to the client (SPEC §6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.web import Application, RequestHandler, stream_request_body
from tornado.websocket import WebSocketClosedError, WebSocketHandler

SMALL = b'{"kind":"small","pad":"' + b"x" * (1024 - 25) + b'"}'
BIG = b"b" * (1 << 20)
FAULT = json.dumps({"error": "target_fault"}).encode()


class State:
    """What every handler of this process shares: the fault flag and the record file."""

    faulted = False
    record_fd = -1
    name = ""
    sockets: set[WsEcho] = set()

    @classmethod
    def fault(cls) -> None:
        """SIGUSR1: answer 503 from now on and close the open WebSockets with 1001."""
        cls.faulted = True
        for sock in list(cls.sockets):
            sock.close(1001, "target going away")


class Base(RequestHandler):
    def prepare(self) -> None:
        if State.faulted:
            self.set_status(503)
            self.set_header("Content-Type", "application/json")
            self.finish(FAULT)

    def compute_etag(self) -> None:
        return None


class Small(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(SMALL)


class Big(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(BIG)


class Part(Base):
    def get(self, name: str) -> None:
        self.finish({"part": name, "target": State.name})


class Health(Base):
    def get(self) -> None:
        self.finish(b"ok")


@stream_request_body
class Echo(Base):
    received = 0
    soak_id = ""

    def prepare(self) -> None:
        self.soak_id = self.request.headers.get("X-Soak-Id", "-")
        os.write(State.record_fd, f"{self.soak_id} {State.name}\n".encode())
        super().prepare()

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)

    def post(self) -> None:
        self.finish({"id": self.soak_id, "bytes": self.received, "target": State.name})


class WsEcho(WebSocketHandler):
    """Each message back as it came (text as text, binary as binary), in order."""

    def prepare(self) -> None:
        if State.faulted:
            self.set_status(503)
            self.set_header("Content-Type", "application/json")
            self.finish(FAULT)
            return
        self.set_header("X-Soak-Target", State.name)  # kept in the 101

    def open(self) -> None:
        State.sockets.add(self)

    async def on_message(self, message: str | bytes) -> None:
        try:
            await self.write_message(message, binary=isinstance(message, bytes))
        except (WebSocketClosedError, StreamClosedError):
            pass  # the socket closed meanwhile: nothing to echo to

    def on_close(self) -> None:
        State.sockets.discard(self)


def make_app() -> Application:
    return Application([
        (r"/small", Small), (r"/big", Big), (r"/part/([a-z0-9]+)", Part),
        (r"/echo", Echo), (r"/health", Health), (r"/ws", WsEcho),
    ], log_function=lambda handler: None)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--record", required=True, help="file that gets one line per POST arrival")
    a = p.parse_args()
    State.name = a.name
    State.record_fd = os.open(a.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, State.fault)
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(State, "faulted", False))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = HTTPServer(make_app(), idle_connection_timeout=120)
    server.bind(a.port, "127.0.0.1", backlog=1024, reuse_port=False)
    server.start()
    print(f"soak target {a.name} listening on 127.0.0.1:{a.port}", flush=True)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
