"""The pure rules of WebSocket relaying (gateway.websocket): handshake checks, close codes, URLs."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from gateway.config import Origin, RouteConfig, TargetConfig
from gateway.errors import BadRequest
from gateway.websocket import (
    UpgradeRequired,
    WebSocketPlan,
    accept_value,
    close_for_other_side,
    handshake_error,
    is_upgrade,
    upstream_url,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def headers(*pairs: tuple[str, str]) -> HTTPHeaders:
    out = HTTPHeaders()
    for name, value in pairs:
        out.add(name, value)
    return out


GOOD = (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"))


def test_accept_value_is_rfc_6455s_example() -> None:
    assert accept_value(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


@pytest.mark.parametrize("value, expected", [
    ("websocket", True), ("WebSocket", True), ("h2c, websocket", True), ("h2c", False), ("", False),
    ("websockets", False),
])
def test_is_upgrade(value: str, expected: bool) -> None:
    assert is_upgrade(headers(("Upgrade", value))) is expected


@pytest.mark.parametrize("method, pairs, length, expected", [
    ("GET", GOOD, 0, None),
    ("GET", (*GOOD[:1], ("Connection", "keep-alive, Upgrade"), *GOOD[2:]), 0, None),
    ("POST", GOOD, 0, BadRequest),
    ("GET", GOOD, 5, BadRequest),
    ("GET", GOOD, -1, BadRequest),  # chunked
    ("GET", (GOOD[0], ("Connection", "keep-alive"), *GOOD[2:]), 0, BadRequest),
    ("GET", (GOOD[0], GOOD[1], GOOD[3]), 0, BadRequest),  # no key
    ("GET", (*GOOD, ("Sec-WebSocket-Key", KEY)), 0, BadRequest),  # two keys
    ("GET", (GOOD[0], GOOD[1], ("Sec-WebSocket-Key", "c2hvcnQ="), GOOD[3]), 0, BadRequest),  # not 16 bytes
    ("GET", (GOOD[0], GOOD[1], ("Sec-WebSocket-Key", "!!not base64!!!!!!!!!!=="), GOOD[3]), 0, BadRequest),
    ("GET", (*GOOD[:3], ("Sec-WebSocket-Version", "8")), 0, UpgradeRequired),
    ("GET", GOOD[:3], 0, UpgradeRequired),
    ("GET", (*GOOD, ("Sec-WebSocket-Version", "13")), 0, UpgradeRequired),  # repeated
])
def test_handshake_error(method: str, pairs: tuple[tuple[str, str], ...], length: int, expected: type | None) -> None:
    error = handshake_error(method, headers(*pairs), length)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        if expected is UpgradeRequired:
            assert (error.status, error.code, error.headers) == (426, "upgrade_required", {"Sec-WebSocket-Version": "13"})


@pytest.mark.parametrize("side, received, sent, expected", [
    ("upstream", (4001, "banned"), None, (4001, "banned")),
    ("client", (4002, "bye"), None, (4002, "bye")),
    ("client", (1000, None), None, (1000, None)),
    ("client", (None, None), None, (None, None)),  # a close frame with no code: passed on with none
    ("upstream", (1005, None), None, (None, None)),  # codes that may not be sent
    ("upstream", (1006, "x"), None, (None, None)),
    ("client", (1015, None), None, (None, None)),
    ("client", (4002, "bye"), (1001, "idle timeout"), (4002, "bye")),  # received first wins
    ("client", None, (1009, "message too big"), (1009, "message too big")),  # the gateway's own close
    ("upstream", None, (1009, "message too big"), (1009, "message too big")),
    ("upstream", None, None, (1014, "upstream connection lost")),  # dropped
    ("client", None, None, (1001, "client went away")),
    ("upstream", None, (None, None), (1014, "upstream connection lost")),
])
def test_close_for_other_side(side: str, received, sent, expected) -> None:
    assert close_for_other_side(side, received, sent) == expected


@pytest.mark.parametrize("url, origin, base, path, expected", [
    ("http://10.0.0.1:8000", Origin("http", "10.0.0.1", 8000), "", "/ws?a=1", "ws://10.0.0.1:8000/ws?a=1"),
    ("https://chat.internal", Origin("https", "chat.internal", 443), "/api", "/ws", "wss://chat.internal/api/ws"),
    ("http://[::1]:81", Origin("http", "::1", 81), "", "/", "ws://[::1]:81/"),
])
def test_upstream_url(url: str, origin: Origin, base: str, path: str, expected: str) -> None:
    assert upstream_url(TargetConfig(url=url, origin=origin, base_path=base), path) == expected


def test_plan_only_for_websocket_routes() -> None:
    assert WebSocketPlan.for_route(RouteConfig(name="a", path="/a", upstream="u")) is None
    plan = WebSocketPlan.for_route(RouteConfig(name="a", path="/a", upstream="u", websocket=True,
                                               websocket_idle_seconds=7.0, websocket_max_message_bytes=99))
    assert plan == WebSocketPlan(idle_seconds=7.0, max_message_bytes=99)


@pytest.mark.parametrize("block, expected", [
    ("upgrade: websocket\r\nHost: a\r\n", True), ("UPGRADE: h2c\r\n", True), ("Host: a\r\n", False),
    ("X-Upgrade: websocket\r\n", False),
])
def test_the_upgrade_lookup_in_find_handler_sees_any_spelling(block: str, expected: bool) -> None:
    """GatewayApplication.find_handler reads HTTPHeaders._as_list by the normalized name (Tornado private)."""
    assert ("Upgrade" in HTTPHeaders.parse(block)._as_list) is expected
