"""What an error shows and what it logs (SPEC §4): a body never names an internal address, port,
certificate, upstream name or library message; one log line per failed request has them, with the
request id. Admin errors are the same JSON from the same renderer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tests.conftest import Fetch


def closed_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


class Slow(RequestHandler):
    async def get(self, *_: str) -> None:
        await asyncio.sleep(1.0)
        self.finish("too late")


class Ok(RequestHandler):
    def get(self, *_: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish('{"ok": true}')


@pytest.fixture
def junk_port(io_loop: Any) -> Iterator[int]:
    """A raw TCP upstream that reads a request head and answers something that is not HTTP."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HELLO THERE\r\n\r\nthis is not http")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = io_loop.run_sync(lambda: asyncio.start_server(answer, "127.0.0.1", 0))
    yield server.sockets[0].getsockname()[1]
    server.close()
    io_loop.run_sync(server.wait_closed)


def gateway_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[tuple[int, str]]:
    """The gateway's log records that name ``request_id``: (level, message)."""
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name.startswith("gateway") and request_id in r.getMessage()]


async def failed(http: Fetch, url: str, request_id: str) -> dict[str, Any]:
    response = await http(url, headers={"X-Request-Id": request_id})
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-Id"] == request_id
    body: dict[str, Any] = json.loads(response.body)
    assert response.code == body["status"]
    return body


@pytest.mark.timeout(seconds=20)
async def test_refused_timeout_and_garbage_show_what_a_client_can_act_on_and_log_the_rest(
        start_gateway: Any, start_upstream: Any, http: Fetch, junk_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    refused = closed_port()
    slow = start_upstream(Application([(r".*", Slow)]))
    gateway = await start_gateway(f"""
    upstreams:
      refused: {{targets: ["http://127.0.0.1:{refused}"]}}
      slow: {{targets: ["{slow.url}"]}}
      junk: {{targets: ["http://127.0.0.1:{junk_port}"]}}
    routes:
      - {{name: refused, path: /refused, upstream: refused}}
      - {{name: slow, path: /slow, upstream: slow, timeout: 0.3}}
      - {{name: junk, path: /junk, upstream: junk}}
    """)
    cases = [
        ("/refused/x", "rid-refused", 502, "bad_gateway", "the upstream could not be reached",
         f"cannot connect to http://127.0.0.1:{refused}: Connection refused"),
        ("/slow/x", "rid-slow", 504, "upstream_timeout", "the upstream took too long to answer",
         f"{slow.url} did not answer within 0.3s"),
        ("/junk/x", "rid-junk", 502, "bad_gateway", "the upstream sent an invalid answer",
         f"http://127.0.0.1:{junk_port} answered malformed HTTP: bad status line 'HELLO THERE'"),
    ]
    for path, request_id, status, code, message, detail in cases:
        body = await failed(http, gateway.url + path, request_id)
        assert body == {"error": code, "message": message, "status": status, "request_id": request_id}
        assert gateway_lines(caplog, request_id) == [
            (logging.WARNING, f"request_id={request_id} {status} {code}: {detail}")]
    await asyncio.sleep(0.8)  # let the slow handler finish before its server is closed


@pytest.mark.timeout(seconds=20)
async def test_an_open_circuit_does_not_name_the_upstream(
        start_gateway: Any, http: Fetch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    gateway = await start_gateway(f"""
    upstreams:
      billing-internal: {{targets: ["http://127.0.0.1:{closed_port()}"],
                          circuit_breaker: {{failure_threshold: 1, open_seconds: 30}}}}
    routes:
      - {{name: billing, path: /billing, upstream: billing-internal}}
    """)
    assert (await failed(http, gateway.url + "/billing", "rid-1"))["error"] == "bad_gateway"
    body = await failed(http, gateway.url + "/billing", "rid-2")
    assert body == {"error": "no_healthy_upstream", "message": "no healthy upstream target", "status": 503,
                    "request_id": "rid-2"}
    assert gateway_lines(caplog, "rid-2") == [
        (logging.WARNING, "request_id=rid-2 503 no_healthy_upstream: upstream 'billing-internal' has no healthy target")]


@pytest.mark.timeout(seconds=20)
async def test_an_aggregate_logs_why_its_parts_failed(
        start_gateway: Any, start_upstream: Any, http: Fetch, junk_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    refused = closed_port()
    ok = start_upstream(Application([(r".*", Ok)]))
    gateway = await start_gateway(f"""
    upstreams:
      users: {{targets: ["http://127.0.0.1:{refused}"]}}
      orders: {{targets: ["http://127.0.0.1:{junk_port}"]}}
      stock: {{targets: ["{ok.url}"]}}
    routes:
      - name: broken
        path: /broken/{{id}}
        aggregate:
          - {{name: user, upstream: users, path: "/users/{{id}}"}}
          - {{name: orders, upstream: orders, path: "/orders/{{id}}"}}
      - name: partial
        path: /partial/{{id}}
        aggregate:
          - {{name: user, upstream: users, path: "/users/{{id}}"}}
          - {{name: stock, upstream: stock, path: "/stock/{{id}}"}}
    """)
    body = await failed(http, gateway.url + "/broken/7", "rid-all")
    assert body == {"error": "bad_gateway", "message": "every part of the aggregate failed", "status": 502,
                    "request_id": "rid-all"}
    assert gateway_lines(caplog, "rid-all") == [(
        logging.WARNING,
        f"request_id=rid-all 502 bad_gateway: every part of the aggregate failed: "
        f"user: cannot connect to http://127.0.0.1:{refused}: Connection refused; "
        f"orders: http://127.0.0.1:{junk_port} answered malformed HTTP: bad status line 'HELLO THERE'")]
    partial = await http(gateway.url + "/partial/7", headers={"X-Request-Id": "rid-some"})
    assert (partial.code, json.loads(partial.body)) == (200, {"user": None, "stock": {"ok": True}})
    assert gateway_lines(caplog, "rid-some") == [(
        logging.INFO,
        f"request_id=rid-some aggregate part user failed: cannot connect to http://127.0.0.1:{refused}: "
        "Connection refused")]


@pytest.mark.timeout(seconds=20)
async def test_a_jwks_that_cannot_be_fetched_is_not_named_to_the_client(
        start_gateway: Any, start_upstream: Any, http: Fetch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    ok = start_upstream(Application([(r".*", Ok)]))
    jwks_url = f"http://127.0.0.1:{closed_port()}/idp/jwks.json"
    gateway = await start_gateway(f"""
    auth:
      jwt: {{algorithms: [RS256], jwks_url: "{jwks_url}"}}
    upstreams:
      ok: {{targets: ["{ok.url}"]}}
    routes:
      - {{name: api, path: /api, upstream: ok}}
    """)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "u-1", "exp": int(time.time()) + 600}, key, "RS256", headers={"kid": "k1"})
    response = await http(gateway.url + "/api", headers={"Authorization": f"Bearer {token}", "X-Request-Id": "rid-jwks"})
    # No key set was ever fetched: the gateway cannot check any token, which is not the client's fault.
    assert response.code == 503
    assert json.loads(response.body) == {"error": "service_unavailable",
                                         "message": "the keys that verify tokens are not available",
                                         "status": 503, "request_id": "rid-jwks"}
    assert "WWW-Authenticate" not in response.headers
    assert gateway_lines(caplog, "rid-jwks") == [(
        logging.WARNING, f"request_id=rid-jwks 503 service_unavailable: no JWK set was ever fetched from {jwks_url}")]


@pytest.mark.timeout(seconds=20)
async def test_admin_errors_are_the_json_of_spec_4(
        start_gateway: Any, http: Fetch, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        expect_errors: Any) -> None:
    expect_errors("gateway", r"^request_id=adm-3 admin GET /-/routes: internal error$")
    gateway = await start_gateway("routes: []\n")
    admin = f"http://127.0.0.1:{gateway.admin_port}"

    async def admin_error(path: str, request_id: str, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        response = await http(admin + path, headers={"X-Request-Id": request_id}, **kwargs)
        assert (response.headers["Content-Type"], response.headers["X-Request-Id"]) == ("application/json", request_id)
        return json.loads(response.body), response

    body, _ = await admin_error("/-/nothing", "adm-1")
    assert body == {"error": "no_route", "message": "no route matches this request", "status": 404,
                    "request_id": "adm-1"}
    body, response = await admin_error("/-/reload", "adm-2")  # reload is a POST
    assert body == {"error": "method_not_allowed", "message": "method not allowed on this route", "status": 405,
                    "request_id": "adm-2"}
    assert response.headers["Allow"] == "POST"

    def broken() -> None:
        raise RuntimeError("simulated admin bug at 10.1.2.3")

    monkeypatch.setattr(gateway.holder.runtime.routes, "describe", broken)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        body, response = await admin_error("/-/routes", "adm-3")
    assert body == {"error": "internal_error", "message": "internal error", "status": 500, "request_id": "adm-3"}
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in logged] == ["request_id=adm-3 admin GET /-/routes: internal error"]
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], RuntimeError)

