"""Hostile header lines and paths on the wire (SPEC §4, "Framing and hostile input"; issue 13 findings 3, 5, 8).

Requests are written byte for byte on raw sockets, so header names keep the exact
spelling under test (``X_User_Id``, ``X-User_Id``) and paths keep their ``;`` and
``\\``. The upstream is a real Tornado app that records every header line it
receives, so "the upstream never sees it" is asserted, not assumed.
"""

from __future__ import annotations

import json

import pytest
from tornado.web import Application, RequestHandler

from tests.support.raw import exchange, parse
from tests.support.tokens import SECRET, token


class LineRecorder:
    """A real upstream that records each request's path and header lines (name as received, value)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[tuple[str, str]]]] = []
        recorder = self

        class Handler(RequestHandler):
            def get(self) -> None:
                recorder.seen.append((self.request.path, list(self.request.headers.get_all())))
                self.set_header("Content-Type", "application/json")
                self.finish(b"{}")

        self.app = Application([(r".*", Handler)])

    def folded(self, index: int = -1) -> dict[str, list[str]]:
        """One request's header values by name as a CGI/WSGI backend reads it: lower-case, ``_`` as ``-``."""
        out: dict[str, list[str]] = {}
        for name, value in self.seen[index][1]:
            out.setdefault(name.lower().replace("_", "-"), []).append(value)
        return out


async def get(port: int, target: str, lines: list[str]) -> tuple[int, dict[str, str], bytes]:
    """Send ``GET target`` with ``lines`` as header lines, exactly as written; (status, headers, body)."""
    head = "".join(f"{line}\r\n" for line in [f"GET {target} HTTP/1.1", "Host: gw.test", *lines, "Connection: close"])
    return parse(await exchange(port, head.encode("latin-1") + b"\r\n"))


def bad_request(status: int, body: bytes) -> tuple[int, str | None]:
    return status, json.loads(body).get("error")  # an upstream answer ({}) has none


@pytest.fixture
def recorder(start_upstream) -> tuple[LineRecorder, str]:
    rec = LineRecorder()
    return rec, start_upstream(rec.app).url


# --- finding 3: identity spoofing through '_' ---

SPOOFED = [
    "X_User_Id: admin", "X-User_Id: admin", "X_User-Id: admin", "x_user_id: admin",
    "X_Forwarded_For: 10.6.6.6", "X-Forwarded_Host: evil.test", "X_Forwarded_Proto: https",
    "X_Request_Id: forged", "Content_Length: 9",
    "Forwarded: for=10.6.6.6;proto=https", "X-Real-IP: 10.6.6.6", "X-Forwarded-Port: 443", "X-Forwarded-Ssl: on",
    "X_Real_IP: 10.6.6.6",
    "X_Custom: kept",
]


@pytest.mark.parametrize("route_path", ["/private", "/open"])
async def test_underscore_spellings_of_owned_headers_never_reach_the_upstream(
        recorder, start_gateway, route_path: str) -> None:
    rec, url = recorder
    gw = await start_gateway(f"""
    auth:
      jwt: {{algorithms: [HS256], secret: "{SECRET}", claims_to_headers: {{sub: X-User-Id}}}}
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: private, path: /private, upstream: up, auth: required}}
      - {{name: open, path: /open, upstream: up, auth: none}}
    """)
    status, headers, _ = await get(
        gw.port, route_path + "/x", [f"Authorization: Bearer {token('alice')}", *SPOOFED])
    assert status == 200
    seen = rec.folded()
    # The gateway's own values, one line each; the client's spellings are gone.
    assert seen.get("x-user-id") == (["alice"] if route_path == "/private" else None)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["gw.test"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-request-id"] == [headers["x-request-id"]] and headers["x-request-id"] != "forged"
    assert "content-length" not in seen  # a GET without a body: the client's Content_Length is not relayed
    for stripped in ("forwarded", "x-real-ip", "x-forwarded-port", "x-forwarded-ssl"):
        assert stripped not in seen, stripped
    # An underscore name that folds onto nothing the gateway owns passes as sent.
    assert [value for name, value in rec.seen[-1][1] if name.lower() == "x_custom"] == ["kept"]


# --- finding 5: a repeated header that a policy reads ---

async def test_a_repeated_rate_limit_key_header_is_400_and_buys_no_budget(recorder, start_gateway) -> None:
    rec, url = recorder
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: keyed, path: /k, upstream: up, rate_limit: {{requests: 3, window_seconds: 60, key: "header:X-Api-Key"}}}}
    """)
    answers = [await get(gw.port, "/k", [f"X-Api-Key: fresh-{i}", "X-Api-Key: shared"]) for i in range(6)]
    assert [bad_request(status, body) for status, _, body in answers] == [(400, "bad_request")] * 6
    assert json.loads(answers[0][2])["message"] == "the X-Api-Key header is repeated"
    assert rec.seen == []
    # One line per request is still limited as before: the budget is the key's.
    codes = [(await get(gw.port, "/k", ["X-Api-Key: shared"]))[0] for _ in range(4)]
    assert codes == [200, 200, 200, 429]


async def test_an_underscore_spelling_of_the_key_header_does_not_reach_the_upstream(recorder, start_gateway) -> None:
    rec, url = recorder
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: keyed, path: /k, upstream: up, rate_limit: {{requests: 3, window_seconds: 60, key: "header:X-Api-Key"}}}}
    """)
    # A fresh X-Api-Key each time for the budget, the real key where a CGI/WSGI backend would read it.
    statuses = [(await get(gw.port, "/k", [f"X-Api-Key: fresh-{i}", "X_Api_Key: mine"]))[0] for i in range(2)]
    assert statuses == [200, 200]
    assert [rec.folded(i)["x-api-key"] for i in range(2)] == [["fresh-0"], ["fresh-1"]]


@pytest.mark.parametrize("route_path", ["/required", "/optional"])
async def test_two_authorization_lines_are_400_not_a_token_check(recorder, start_gateway, route_path: str) -> None:
    rec, url = recorder
    gw = await start_gateway(f"""
    auth:
      jwt: {{algorithms: [HS256], secret: "{SECRET}", claims_to_headers: {{sub: X-User-Id}}}}
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: required, path: /required, upstream: up, auth: required}}
      - {{name: optional, path: /optional, upstream: up, auth: optional}}
    """)
    valid = f"Authorization: Bearer {token('alice')}"
    for lines in ([valid, valid], [valid, f"Authorization: Bearer {token('mallory')}"], [valid, "Authorization: Basic eDp5"]):
        status, headers, body = await get(gw.port, route_path, lines)
        assert bad_request(status, body) == (400, "bad_request"), lines
        assert json.loads(body)["message"] == "the Authorization header is repeated"
        assert "WWW-Authenticate" not in headers
    assert rec.seen == []
    status, _, _ = await get(gw.port, route_path, [valid])
    assert status == 200
    assert rec.folded()["x-user-id"] == ["alice"]


# --- finding 8: path tricks that backends normalise ---

TRICKS = [
    "/public/..;/admin-api/x",
    "/public/..;jsessionid=1/admin-api/x",
    "/public/.;/../admin-api/x",
    "/public/%2e%2e;/admin-api/x",
    "/public/..%3b/admin-api/x",
    "/public/%2E%2E%3B/admin-api/x",
    "/public/..\\admin-api\\x",
    "/public\\..\\admin-api\\x",
    "/public/..%5cadmin-api/x",
    "/public/..%5Cadmin-api%5Cx",
]


async def test_path_tricks_are_400_and_reach_nothing(recorder, start_gateway) -> None:
    rec, url = recorder
    gw = await start_gateway(f"""
    auth:
      jwt: {{algorithms: [HS256], secret: "{SECRET}"}}
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: public, path: /public, upstream: up, auth: none}}
      - {{name: admin, path: /admin-api, upstream: up, auth: required}}
    """)
    answers = {path: await get(gw.port, path, []) for path in TRICKS}
    assert {path: bad_request(status, body) for path, (status, _, body) in answers.items()} == {
        path: (400, "bad_request") for path in TRICKS}
    assert rec.seen == []
    # The routes themselves work: the public one without a token, the admin one only with one.
    assert (await get(gw.port, "/public/page", []))[0] == 200
    assert (await get(gw.port, "/admin-api/x", []))[0] == 401
    assert (await get(gw.port, "/admin-api/x", [f"Authorization: Bearer {token('alice')}"]))[0] == 200
    assert [path for path, _ in rec.seen] == ["/public/page", "/admin-api/x"]
