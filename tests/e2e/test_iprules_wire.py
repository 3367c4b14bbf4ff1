"""IP rules on the wire (SPEC §8, issue 17 item 2): ip_allow / ip_deny through a running gateway.

The tests' client is always 127.0.0.1 (or ::1 on an IPv6 listener); other client
addresses arrive as ``X-Forwarded-For`` through a trusted proxy (the peer itself,
``trusted_proxies: [127.0.0.1/32]``), which is also how spoofing from an untrusted
peer is shown to fail. A counting upstream shows a refused request never reaches it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.web import Application, RequestHandler

from tests.support.raw import AccessLines
from tests.support.tokens import SECRET, bearer

TRUSTING = "server: {host: 127.0.0.1, port: 0, drain_seconds: 0.5, trusted_proxies: [127.0.0.1/32]}\n" \
           "admin: {host: 127.0.0.1, port: 0}\n"


class Counting:
    """An upstream that counts the requests it gets, answering 200 "ok"."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(RequestHandler):
            SUPPORTED_METHODS = ("GET", "OPTIONS")  # type: ignore[assignment]

            def get(self) -> None:
                paths.append(self.request.path)
                self.finish("ok")

            options = get

        self.app = Application([(r".*", Handler)])


@pytest.fixture
def upstream(start_upstream: Any) -> Any:
    counting = Counting()
    server = start_upstream(counting.app)
    server.paths = counting.paths
    return server


def routes(url: str, *rules: str, extra: str = "") -> str:
    lines = "\n".join(f"  - {{name: r{i}, path: /r{i}, upstream: u, {rule}}}" for i, rule in enumerate(rules))
    return f"upstreams:\n  u: {{targets: [\"{url}\"]}}\n{extra}routes:\n{lines}\n"


def error_of(resp: Any) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(resp.body)
    assert body["status"] == resp.code
    return body


async def test_allow_and_deny_lists_on_the_peer_address(upstream: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(routes(upstream.url, "ip_allow: [127.0.0.1]", "ip_allow: [10.0.0.0/8, '::1']",
                                    "ip_deny: [127.0.0.0/8]", "ip_deny: [10.0.0.0/8]",
                                    "ip_allow: [127.0.0.0/8], ip_deny: [127.0.0.1]"))
    log = AccessLines(gw)
    codes = [(await http(f"{gw.url}/r{i}", headers={"X-Request-Id": f"ip-{i}"})).code for i in range(5)]
    assert codes == [200, 403, 403, 200, 403]
    resp = await http(gw.url + "/r1")
    assert error_of(resp) == {"error": "forbidden", "message": "this address may not use this route", "status": 403,
                              "request_id": error_of(resp)["request_id"]}
    assert upstream.paths == ["/r0", "/r3"]
    entries = log.by_id()
    assert (entries["ip-1"][0]["status"], entries["ip-1"][0]["client"], entries["ip-1"][0]["route"]) == (
        403, "127.0.0.1", "r1")


async def test_x_forwarded_for_from_an_untrusted_peer_changes_nothing(
        upstream: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(routes(upstream.url, "ip_allow: [10.0.0.0/8]", "ip_deny: [203.0.113.0/24]"))
    for spoofed in ("10.1.2.3", "10.1.2.3, 10.4.5.6", "::ffff:10.1.2.3"):
        resp = await http(gw.url + "/r0", headers={"X-Forwarded-For": spoofed, "X-Real-IP": "10.1.2.3",
                                                   "Forwarded": "for=10.1.2.3"})
        assert (resp.code, error_of(resp)["error"]) == (403, "forbidden")
    assert (await http(gw.url + "/r1", headers={"X-Forwarded-For": "203.0.113.9"})).code == 200
    assert upstream.paths == ["/r1"]


@pytest.mark.parametrize("forwarded_for, codes", [
    ("10.1.2.3", [200, 200]),
    ("10.0.5.7", [200, 403]),  # in the allowed /8, and in the denied /24: deny wins
    ("::ffff:10.1.2.3", [200, 200]),  # IPv4-mapped: the IPv4 address
    ("::ffff:10.0.5.7", [200, 403]),
    ("203.0.113.5, 10.1.2.3", [200, 200]),  # the right-most untrusted entry is the client
    ("10.1.2.3, 203.0.113.5", [403, 403]),  # a client-written left part is not believed
    ("2001:db8::7", [200, 200]),
    ("2001:db9::7", [403, 403]),
    ("unknown", [403, 403]),  # not an address: refused by any rule
    ("10.1.2.3:4567", [403, 403]),
])
async def test_the_client_address_after_trusted_proxies(upstream: Any, start_gateway: Any, http: Any,
                                                        forwarded_for: str, codes: list[int]) -> None:
    gw = await start_gateway(TRUSTING + routes(
        upstream.url, "ip_allow: [10.0.0.0/8, '2001:db8::/32']",
        "ip_allow: ['::ffff:10.0.0.0/104', '2001:db8::/32'], ip_deny: [10.0.5.0/24]"))
    got = [(await http(f"{gw.url}/r{i}", headers={"X-Forwarded-For": forwarded_for})).code for i in range(2)]
    assert got == codes


async def test_an_ipv6_listener(upstream: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway("server: {host: '::1', port: 0, drain_seconds: 0.5}\nadmin: {host: 127.0.0.1, port: 0}\n"
                             + routes(upstream.url, "ip_allow: ['::1/128']", "ip_allow: [127.0.0.1]",
                                      "ip_deny: ['::/0']"))
    base = f"http://[::1]:{gw.port}"
    assert [(await http(f"{base}/r{i}")).code for i in range(3)] == [200, 403, 403]


async def test_a_denied_address_gets_no_preflight_answer(upstream: Any, start_gateway: Any, http: Any) -> None:
    cors = "cors: {allow_origins: ['https://app.example'], allow_methods: [GET]}\n"
    gw = await start_gateway(TRUSTING + routes(upstream.url, "ip_allow: [10.0.0.0/8]",
                                               "ip_allow: [10.0.0.0/8], cors: {allow_origins: ['*']}",
                                               extra=cors))
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    for path in ("/r0", "/r1"):
        resp = await http(gw.url + path, method="OPTIONS", headers={**preflight, "X-Forwarded-For": "203.0.113.5"})
        assert (resp.code, error_of(resp)["error"]) == (403, "forbidden")
        assert not [name for name in resp.headers if name.lower().startswith("access-control-")]
        resp = await http(gw.url + path, method="OPTIONS", headers={**preflight, "X-Forwarded-For": "10.1.1.1"})
        assert resp.code == 204
        assert resp.headers["Access-Control-Allow-Methods"] in ("GET", "GET, POST, PUT, PATCH, DELETE")
    # An actual cross-origin request from a denied address: 403, readable by the page (CORS headers on it).
    resp = await http(gw.url + "/r0", headers={"Origin": "https://app.example", "X-Forwarded-For": "203.0.113.5"})
    assert resp.code == 403 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # A plain OPTIONS (no preflight) is a request like any other, checked in the IP rules' own slot.
    resp = await http(gw.url + "/r0", method="OPTIONS", headers={"X-Forwarded-For": "203.0.113.5"})
    assert resp.code == 403
    assert upstream.paths == []


async def test_ip_rules_run_after_auth_and_before_the_rate_limit(upstream: Any, start_gateway: Any, http: Any) -> None:
    """SPEC §7's order: auth → scopes → IP rules → rate limit. A denied caller without a token
    is told 401 (auth first); a denied caller spends no rate-limit budget."""
    auth = f"auth:\n  jwt: {{algorithms: [HS256], secret: {SECRET}}}\n"
    gw = await start_gateway(TRUSTING + auth + routes(
        upstream.url, "ip_allow: [10.0.0.0/8], rate_limit: {requests: 1, window_seconds: 60, key: subject}"))
    denied = {"X-Forwarded-For": "203.0.113.5"}
    assert (await http(gw.url + "/r0", headers=denied)).code == 401
    for _ in range(3):
        assert (await http(gw.url + "/r0", headers={**denied, **bearer("alice")})).code == 403
    allowed = {"X-Forwarded-For": "10.9.9.9", **bearer("alice")}
    assert (await http(gw.url + "/r0", headers=allowed)).code == 200
    assert (await http(gw.url + "/r0", headers=allowed)).code == 429
    assert upstream.paths == ["/r0"]
