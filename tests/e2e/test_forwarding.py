"""Forwarding on the wire (SPEC §4): method, path, query, headers and bodies, both ways."""

from __future__ import annotations

import json

from tornado.web import Application, RequestHandler

from gateway.demo import EchoHandler


class CookieHandler(RequestHandler):
    def get(self) -> None:
        self.set_status(418, "I'm a teapot")
        self.add_header("Set-Cookie", "a=1; Path=/")
        self.add_header("Set-Cookie", "b=2; Path=/")
        self.set_header("Connection", "close, X-Secret-Hop")
        self.set_header("X-Secret-Hop", "drop me")
        self.set_header("Keep-Alive", "timeout=5")
        self.set_header("Content-Type", "text/plain")
        self.finish("short and stout")


def echo_config(url: str) -> str:
    return f"""
    upstreams:
      echo: {{targets: ["{url}"]}}
    routes:
      - {{name: api, path: /api/orders, upstream: echo, strip_prefix: true}}
      - {{name: v2, path: /v1/things, upstream: echo, rewrite_prefix: /v2}}
      - {{name: plain, path: /plain, upstream: echo}}
    """


async def test_method_path_query_and_forwarding_headers(start_upstream, start_gateway, http) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    gw = await start_gateway(echo_config(echo.url))
    resp = await http(gw.url + "/api/orders/7?b=2&a=%20x&a=1", method="PUT", body=b'{"n": 1}',
                      headers={"X-Request-Id": "abc-123", "X-Custom": "kept", "Content-Type": "application/json"})
    assert resp.code == 200
    seen = json.loads(resp.body)
    assert seen["method"] == "PUT"
    assert seen["path"] == "/7"
    assert seen["query"] == "b=2&a=%20x&a=1"
    assert seen["json"] == {"n": 1}
    headers = seen["headers"]
    assert headers["X-Custom"] == "kept"
    assert headers["X-Request-Id"] == "abc-123"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Prefix"] == "/api/orders"
    assert headers["X-Forwarded-Host"] == f"127.0.0.1:{gw.port}"
    assert headers["Host"] == f"127.0.0.1:{echo.port}"
    assert headers["Traceparent"].startswith("00-") and len(headers["Traceparent"]) == 55
    assert resp.headers["X-Request-Id"] == "abc-123"


async def test_rewrite_prefix_and_unstripped_path(start_upstream, start_gateway, http) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    gw = await start_gateway(echo_config(echo.url))
    assert json.loads((await http(gw.url + "/v1/things/9/")).body)["path"] == "/v2/9/"
    assert json.loads((await http(gw.url + "/v1/things")).body)["path"] == "/v2"
    assert json.loads((await http(gw.url + "/plain/x%2Fy")).body)["path"] == "/plain/x%2Fy"


async def test_upstream_status_cookies_kept_and_hop_by_hop_dropped(start_upstream, start_gateway, http) -> None:
    up = start_upstream(Application([(r".*", CookieHandler)]))
    gw = await start_gateway(echo_config(up.url))
    resp = await http(gw.url + "/plain")
    assert resp.code == 418
    assert resp.reason == "I'm a teapot"
    assert resp.body == b"short and stout"
    assert resp.headers.get_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert "X-Secret-Hop" not in resp.headers
    assert "Keep-Alive" not in resp.headers
    assert resp.headers["Content-Type"] == "text/plain"
    assert "Etag" not in resp.headers


async def test_client_hop_by_hop_and_forged_forwarding_headers_are_replaced(start_upstream, start_gateway, http) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    gw = await start_gateway(echo_config(echo.url))
    resp = await http(gw.url + "/plain", headers={
        "Connection": "X-Drop-Me", "X-Drop-Me": "1", "Proxy-Authorization": "Basic eA==", "TE": "trailers",
        "X-Forwarded-For": "6.6.6.6", "X-Request-Id": "bad id with spaces", "Upgrade": "websocket"})
    headers = json.loads(resp.body)["headers"]
    for name in ("X-Drop-Me", "Proxy-Authorization", "Te", "Upgrade"):
        assert name not in headers
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Request-Id"] != "bad id with spaces"
    assert len(headers["X-Request-Id"]) == 32
    assert resp.headers["X-Request-Id"] == headers["X-Request-Id"]
