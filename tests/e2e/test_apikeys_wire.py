"""API keys on the wire (SPEC §8, issue 17 item 1): through a running gateway to a real upstream.

Every test runs a real gateway in front of the demo's echo upstream, which answers
with the headers it got (so "the upstream never sees the key" is asserted), and a
counting upstream where "nothing was forwarded" matters. Raw sockets send what an
HTTP client would not (an empty or repeated key header).
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from typing import Any

import pytest
from tornado.web import Application, RequestHandler

from gateway.demo import EchoHandler
from tests.support.raw import AccessLines, first_answer, parse
from tests.support.tokens import SECRET, bearer

KEY_A = "partner-a-key-0123456789abcdef"
KEY_B = "partner-b-key-fedcba9876543210"
DIGEST_B = hashlib.sha256(KEY_B.encode()).hexdigest()
BOTH = 'Bearer realm="gateway", Key realm="gateway"'


def config(url: str, *, routes: str = "") -> str:
    return f"""
    auth:
      jwt: {{algorithms: [HS256], secret: {SECRET}, claims_to_headers: {{sub: X-User-Id, scope: X-User-Scopes}}}}
      api_keys:
        consumers:
          - {{subject: partner-a, key: {KEY_A}, scopes: [orders:read, orders:write]}}
          - {{subject: partner-b, key_sha256: {DIGEST_B}, scopes: [orders:read]}}
    upstreams:
      echo: {{targets: ["{url}"]}}
    routes:
      - {{name: keys, path: /keys, upstream: echo, auth_methods: [api_key]}}
      - {{name: both, path: /both, upstream: echo}}
      - {{name: jwt, path: /jwt, upstream: echo, auth_methods: [jwt]}}
      - {{name: maybe, path: /maybe, upstream: echo, auth: optional, auth_methods: [api_key]}}
      - {{name: writers, path: /write, upstream: echo, scopes: [orders:write]}}
      - {{name: open, path: /open, upstream: echo, auth: none}}
    {routes}
    """


@pytest.fixture
def echo(start_upstream: Any) -> Any:
    return start_upstream(Application([(r".*", EchoHandler)]))


def error_of(resp: Any) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(resp.body)
    assert body["status"] == resp.code
    return body


def seen_headers(resp: Any) -> dict[str, str]:
    assert resp.code == 200, resp.body
    return json.loads(resp.body)["headers"]  # type: ignore[no-any-return]


async def test_a_key_identifies_its_consumer_like_a_token(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url))
    log = AccessLines(gw)
    resp = await http(gw.url + "/keys/1", headers={"X-Api-Key": KEY_A, "X-User-Id": "mallory",
                                                   "X-Request-Id": "key-1"})
    seen = seen_headers(resp)
    assert (seen["X-User-Id"], seen["X-User-Scopes"]) == ("partner-a", "orders:read orders:write")
    assert "X-Api-Key" not in seen  # the key is the gateway's credential, never forwarded
    resp = await http(gw.url + "/keys/1", headers={"X-Api-Key": KEY_B, "X-Request-Id": "key-2"})
    assert (seen_headers(resp)["X-User-Id"], seen_headers(resp)["X-User-Scopes"]) == ("partner-b", "orders:read")
    entries = log.by_id()
    assert (entries["key-1"][0]["subject"], entries["key-1"][0]["status"]) == ("partner-a", 200)
    assert entries["key-2"][0]["subject"] == "partner-b"


async def test_identity_headers_of_a_keys_only_config(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(f"""
    auth:
      api_keys:
        claims_to_headers: {{sub: X-Consumer}}
        consumers: [{{subject: partner-a, key: {KEY_A}}}]
    upstreams:
      echo: {{targets: ["{echo.url}"]}}
    routes:
      - {{name: keys, path: /keys, upstream: echo}}
    """)
    seen = seen_headers(await http(gw.url + "/keys", headers={"X-Api-Key": KEY_A, "X-Consumer": "mallory"}))
    assert seen["X-Consumer"] == "partner-a"
    assert "X-User-Id" not in seen


@pytest.mark.parametrize("path, challenge", [("/keys", 'Key realm="gateway"'), ("/both", BOTH)])
async def test_no_key_is_401_missing_credentials(echo: Any, start_gateway: Any, http: Any, path: str,
                                                 challenge: str) -> None:
    gw = await start_gateway(config(echo.url))
    resp = await http(gw.url + path)
    assert resp.code == 401
    assert error_of(resp)["error"] == "missing_credentials"
    assert resp.headers["WWW-Authenticate"] == challenge


@pytest.mark.parametrize("headers, message", [
    ({"X-Api-Key": "not-a-key-of-anyone-at-all"}, "the API key is not valid"),
    ({"X-Api-Key": KEY_A[:-1]}, "the API key is not valid"),
    ({"X-Api-Key": KEY_A.upper()}, "the API key is not valid"),
    ({"X-Api-Key": DIGEST_B}, "the API key is not valid"),  # the digest in the config is not a key
    ({"X-Api-Key": "k" * 8000}, "API key too long"),
])
async def test_an_unknown_key_is_401_invalid_api_key(echo: Any, start_gateway: Any, http: Any,
                                                     headers: dict[str, str], message: str) -> None:
    gw = await start_gateway(config(echo.url))
    for path, challenge in (("/keys", 'Key realm="gateway"'), ("/both", BOTH), ("/maybe", 'Key realm="gateway"')):
        resp = await http(gw.url + path, headers=headers)
        assert resp.code == 401, path
        assert (error_of(resp)["error"], error_of(resp)["message"]) == ("invalid_api_key", message)
        assert resp.headers["WWW-Authenticate"] == challenge


async def test_empty_and_repeated_key_headers(echo: Any, start_gateway: Any) -> None:
    gw = await start_gateway(config(echo.url))
    port = gw.port
    status, headers, body = parse(await first_answer(
        port, b"GET /keys HTTP/1.1\r\nHost: gw\r\nX-Api-Key:\r\n\r\n"))
    assert (status, json.loads(body)["error"], json.loads(body)["message"]) == (401, "invalid_api_key",
                                                                                "empty API key")
    status, headers, body = parse(await first_answer(
        port, f"GET /keys HTTP/1.1\r\nHost: gw\r\nX-Api-Key: {KEY_A}\r\nx-api-key: {KEY_B}\r\n\r\n".encode()))
    assert (status, json.loads(body)["error"]) == (400, "bad_request")
    assert json.loads(body)["message"] == "the X-Api-Key header is repeated"
    # The same key twice is still two lines: refused, not deduplicated.
    status, _, _ = parse(await first_answer(
        port, f"GET /keys HTTP/1.1\r\nHost: gw\r\nX-Api-Key: {KEY_A}\r\nX-Api-Key: {KEY_A}\r\n\r\n".encode()))
    assert status == 400


async def test_a_key_anywhere_but_its_header_is_no_credential(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url))
    for url, headers in (
        (f"/keys?api_key={KEY_A}", {}),
        (f"/keys?X-Api-Key={KEY_A}", {}),
        ("/keys", {"Authorization": f"Bearer {KEY_A}", "X-Api-Key-2": KEY_A}),  # a key-only route reads no token
        ("/keys", {"Cookie": f"X-Api-Key={KEY_A}"}),
    ):
        resp = await http(gw.url + url, headers=headers)
        assert (resp.code, error_of(resp)["error"]) == (401, "missing_credentials"), url
    # The underscore spelling is not the header (and is dropped on its way upstream: a CGI backend
    # would read X_Api_Key as the same HTTP_X_API_KEY).
    resp = await http(gw.url + "/keys", headers={"X_Api_Key": KEY_A})
    assert (resp.code, error_of(resp)["error"]) == (401, "missing_credentials")
    seen = seen_headers(await http(gw.url + "/open", headers={"X_Api_Key": KEY_A, "X-Api-Key": KEY_B}))
    assert not any(name.lower().replace("_", "-") == "x-api-key" for name in seen)


async def test_a_consumer_without_the_routes_scope_is_403(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url))
    resp = await http(gw.url + "/write", headers={"X-Api-Key": KEY_B})
    assert resp.code == 403
    assert (error_of(resp)["error"], error_of(resp)["message"]) == ("insufficient_scope", "missing scope: orders:write")
    assert "WWW-Authenticate" not in resp.headers  # no Bearer challenge for a caller without a token
    assert seen_headers(await http(gw.url + "/write", headers={"X-Api-Key": KEY_A}))["X-User-Id"] == "partner-a"
    resp = await http(gw.url + "/write", headers=bearer("alice", scopes="orders:read"))
    assert resp.code == 403 and resp.headers["WWW-Authenticate"].startswith('Bearer realm="gateway", error=')


async def test_a_route_taking_both_credentials(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url))
    assert seen_headers(await http(gw.url + "/both", headers=bearer("alice")))["X-User-Id"] == "alice"
    assert seen_headers(await http(gw.url + "/both", headers={"X-Api-Key": KEY_A}))["X-User-Id"] == "partner-a"
    # Another scheme in Authorization is the upstream's business: the key decides.
    seen = seen_headers(await http(gw.url + "/both", headers={"X-Api-Key": KEY_A, "Authorization": "Basic YTpi"}))
    assert (seen["X-User-Id"], seen["Authorization"]) == ("partner-a", "Basic YTpi")
    # Two credentials would be two identities.
    resp = await http(gw.url + "/both", headers={**bearer("alice"), "X-Api-Key": KEY_A})
    assert (resp.code, error_of(resp)["error"]) == (400, "bad_request")
    assert error_of(resp)["message"] == "send one credential: a bearer token or an X-Api-Key key, not both"
    resp = await http(gw.url + "/both", headers={"Authorization": "Bearer not.a.token"})
    assert (resp.code, error_of(resp)["error"]) == (401, "invalid_token")
    assert resp.headers["WWW-Authenticate"] == \
        'Bearer realm="gateway", error="invalid_token", error_description="malformed token"'


async def test_a_jwt_only_route_ignores_keys(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url))
    resp = await http(gw.url + "/jwt", headers={"X-Api-Key": KEY_A})
    assert (resp.code, error_of(resp)["error"]) == (401, "missing_token")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    seen = seen_headers(await http(gw.url + "/jwt", headers={**bearer("alice"), "X-Api-Key": KEY_A}))
    assert seen["X-User-Id"] == "alice" and "X-Api-Key" not in seen


async def test_optional_auth_with_keys(echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url))
    log = AccessLines(gw)
    seen = seen_headers(await http(gw.url + "/maybe", headers={"X-Request-Id": "anon"}))
    assert "X-User-Id" not in seen
    assert seen_headers(await http(gw.url + "/maybe", headers={"X-Api-Key": KEY_B}))["X-User-Id"] == "partner-b"
    assert log.by_id()["anon"][0]["subject"] is None


async def test_rate_limit_by_subject_counts_a_consumer_like_a_token_subject(
        echo: Any, start_gateway: Any, http: Any) -> None:
    gw = await start_gateway(config(echo.url, routes="""
      - {name: limited, path: /limited, upstream: echo, rate_limit: {requests: 1, window_seconds: 60, key: subject}}
    """))
    assert (await http(gw.url + "/limited", headers={"X-Api-Key": KEY_A})).code == 200
    assert (await http(gw.url + "/limited", headers={"X-Api-Key": KEY_A})).code == 429
    assert (await http(gw.url + "/limited", headers={"X-Api-Key": KEY_B})).code == 200
    # partner-b by token is the same subject as partner-b by key: one budget.
    assert (await http(gw.url + "/limited", headers=bearer("partner-b"))).code == 429
    assert (await http(gw.url + "/limited", headers=bearer("alice"))).code == 200


async def test_a_refused_key_never_reaches_the_upstream(start_upstream: Any, start_gateway: Any, http: Any) -> None:
    calls: list[str] = []

    class Counting(RequestHandler):
        def get(self) -> None:
            calls.append(self.request.path)
            self.finish("ok")

    upstream = start_upstream(Application([(r".*", Counting)]))
    gw = await start_gateway(config(upstream.url))
    for headers in ({}, {"X-Api-Key": "wrong-key-wrong-key-wrong"}, {"X-Api-Key": KEY_B}):
        await http(gw.url + "/write", headers=headers)
    assert calls == []
    assert (await http(gw.url + "/write", headers={"X-Api-Key": KEY_A})).code == 200
    assert calls == ["/write"]


@pytest.mark.timeout(seconds=60)
async def test_a_key_never_appears_in_a_log_line(echo: Any, tmp_path: Any, http: Any) -> None:
    """A gateway process at debug level, fed good, bad, repeated, huge and misplaced keys: no key
    (nor a consumer's plaintext key from the environment) is in its stdout or stderr."""
    from tests.support.gateway_process import GatewayProcess

    env_key = "from-the-environment-key-0123456789"
    process = GatewayProcess(tmp_path / "gateway.yaml", env={"PARTNER_C_KEY": env_key})
    process.write_config("server: {host: 127.0.0.1, port: 0, drain_seconds: 0.5}\n"
                         "admin: {host: 127.0.0.1, port: 0}\nlogging: {level: debug, format: json}\n"
                         + textwrap.dedent(config(echo.url)).replace(
                             "      - {subject: partner-b,",
                             "      - {subject: partner-c, key: '${PARTNER_C_KEY}'}\n"
                             "      - {subject: partner-b,"))
    await process.start()
    try:
        wrong = "wrong-key-that-must-not-be-logged-0"
        huge = "h" * 9000
        requests = [
            ("/keys", {"X-Api-Key": KEY_A, "X-Request-Id": "log-1"}),
            ("/keys", {"X-Api-Key": env_key, "X-Request-Id": "log-2"}),
            ("/keys", {"X-Api-Key": wrong, "X-Request-Id": "log-3"}),
            ("/keys", {"X-Api-Key": huge, "X-Request-Id": "log-4"}),
            (f"/keys?api_key={KEY_B}", {"X-Request-Id": "log-5"}),
            ("/write", {"X-Api-Key": KEY_B, "X-Request-Id": "log-6"}),
            ("/both", {"X-Api-Key": KEY_B, **bearer("alice"), "X-Request-Id": "log-7"}),
        ]
        codes = []
        for path, headers in requests:
            codes.append((await http(process.url + path, headers=headers)).code)
            await process.access_line(headers["X-Request-Id"])
        assert codes == [200, 200, 401, 401, 401, 403, 400]
        assert (await process.access_line("log-2"))["subject"] == "partner-c"
        assert await process.stop() == 0
    finally:
        process.kill()  # closes its pipes
    output = "".join(process.stdout) + "".join(process.stderr)
    assert "log-7" in output  # the lines were collected
    for secret in (KEY_A, KEY_B, env_key, wrong, huge[:64], DIGEST_B):
        assert secret not in output


@pytest.mark.expect_errors("gateway", r"^reload of .* refused, the running config stays:")
async def test_a_reload_rotates_keys_and_ip_rules(echo: Any, tmp_path: Any, http: Any) -> None:
    """Key rotation: a reload swaps the consumers (the old key stops, the new one works) and the IP
    rules; a refused reload (a bad digest) keeps the running keys."""
    from gateway.config import ConfigError
    from gateway.loader import load_config
    from gateway.server import GatewayServer

    path = tmp_path / "gateway.yaml"

    def write(consumer: str, rule: str) -> None:
        path.write_text(textwrap.dedent(f"""\
            server: {{host: 127.0.0.1, port: 0, drain_seconds: 0.5}}
            admin: {{host: 127.0.0.1, port: 0}}
            logging: {{access_log: false}}
            auth:
              api_keys:
                consumers: [{consumer}]
            upstreams: {{echo: {{targets: ["{echo.url}"]}}}}
            routes: [{{name: k, path: /k, upstream: echo, {rule}}}]
            """))

    write(f"{{subject: a, key: {KEY_A}}}", "ip_allow: [127.0.0.1]")
    server = GatewayServer(load_config(str(path)))
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/k"
        assert (await http(url, headers={"X-Api-Key": KEY_A})).code == 200
        write(f"{{subject: a, key_sha256: {DIGEST_B}}}", "ip_allow: [127.0.0.1]")
        await server.reload()
        assert (await http(url, headers={"X-Api-Key": KEY_A})).code == 401
        assert (await http(url, headers={"X-Api-Key": KEY_B})).code == 200
        write(f"{{subject: a, key_sha256: {DIGEST_B}}}", "ip_deny: [127.0.0.1]")
        await server.reload()
        assert (await http(url, headers={"X-Api-Key": KEY_B})).code == 403
        write("{subject: a, key_sha256: not-hex}", "ip_allow: [127.0.0.1]")
        with pytest.raises(ConfigError):
            await server.reload()
        assert (await http(url, headers={"X-Api-Key": KEY_B})).code == 403  # the running config stays
    finally:
        await server.shutdown()
