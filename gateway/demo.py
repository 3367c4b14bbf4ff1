"""``python run.py --demo``: conf/demo.yaml in front of a bundled echo upstream on loopback.

The echo upstream answers every request with a JSON description of what it
received (method, path, query, headers, body size), which makes the headers
the gateway adds visible; under ``/chat`` it is a WebSocket echo. The demo prints a
fresh token, three curl lines and a WebSocket client line that work exactly as printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler

from .loader import load_config
from .logs import configure_logging
from .server import GatewayServer, serve
from .tables import PROXIED_METHODS
from .tokens import mint_token

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "demo.yaml")


class EchoHandler(RequestHandler):
    """Describes the request it got, as JSON."""

    SUPPORTED_METHODS = PROXIED_METHODS  # type: ignore[assignment]

    def _echo(self, *args: str) -> None:
        self.set_header("Content-Type", "application/json")
        body = self.request.body
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.finish(json.dumps({
            "method": self.request.method,
            "path": self.request.path,
            "query": self.request.query,
            "headers": dict(sorted(self.request.headers.items())),
            "body_bytes": len(body),
            "json": parsed,
        }, indent=2) + "\n")

    get = head = post = delete = patch = put = options = _echo


class EchoSocket(WebSocketHandler):
    """The demo's WebSocket route: says who the gateway said the caller is, then echoes each message."""

    def open(self, *args: str) -> None:
        self.write_message(f"hello {self.request.headers.get('X-User-Id', 'anonymous')}, "
                           f"request id {self.request.headers.get('X-Request-Id')}")

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


def echo_app() -> Application:
    return Application([(r"/chat.*", EchoSocket), (r".*", EchoHandler)])


def run_demo() -> int:
    """Start the echo upstream and the gateway on conf/demo.yaml; print how to call it."""
    return asyncio.run(_demo()) or 0


async def _demo() -> int:
    echo_socket = bind_sockets(0, "127.0.0.1")
    HTTPServer(echo_app()).add_sockets(echo_socket)
    os.environ["DEMO_ECHO_PORT"] = str(echo_socket[0].getsockname()[1])
    config = load_config(DEMO_CONFIG)
    configure_logging(config)
    jwt = config.auth.jwt
    if jwt is None or jwt.secret is None:
        print("conf/demo.yaml needs auth.jwt.secret", file=sys.stderr)
        return 2

    def announce(server: GatewayServer) -> None:
        base = f"http://{config.server.host}:{server.port}"
        ws_base = f"ws://{config.server.host}:{server.port}"
        token = mint_token(key=jwt.secret or "", algorithm=jwt.algorithms[0], subject="demo-user",
                           scopes="orders:read orders:write", ttl_seconds=3600, audience=None, issuer=None,
                           extra_claims={})
        print(f"""
gateway demo: {base} -> echo upstream on 127.0.0.1:{os.environ['DEMO_ECHO_PORT']} (conf/demo.yaml)

A token for subject demo-user, scopes orders:read orders:write, valid one hour:
  TOKEN={token}

Try:
  curl -s '{base}/public/hello?lang=en'
  curl -s -H "Authorization: Bearer {token}" {base}/api/orders/7
  curl -s -X POST -H "Authorization: Bearer {token}" -H 'Content-Type: application/json' -d '{{"item": "book"}}' {base}/api/orders

A WebSocket through the gateway (route chat, websocket: true; the token is checked at the handshake):
  .venv/bin/python -c 'with __import__("websockets.sync.client").sync.client.connect("{ws_base}/chat", additional_headers={{"Authorization": "Bearer {token}"}}) as ws: print(ws.recv()); ws.send("hi"); print(ws.recv())'

Without the token, /api/orders answers 401. Ctrl-C stops the demo.
""", flush=True)

    await serve(DEMO_CONFIG, config, ready=announce)
    return 0
