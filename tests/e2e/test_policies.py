"""Route policies on the wire (SPEC §3, §4): rate limits, CORS, body limit, validate_json, header rules.

Every test runs a real gateway in front of a real Tornado upstream that records
what reached it, so "the upstream never sees it" is asserted, not assumed. The
rate limits here use the in-memory store; tests/e2e/test_ratelimit_shared.py
runs the same rules on a shared Redis.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.web import Application, RequestHandler

from tests.support.raw import first_answer, parse
from tests.support.tokens import SECRET, bearer

AUTH = f"""
auth:
  jwt: {{algorithms: [HS256], secret: "{SECRET}"}}
"""
CORS_HEADERS = (
    "Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
    "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
)


def joined(*parts: str) -> str:
    """YAML sections written at different indents, as one document."""
    return "".join(textwrap.dedent(part) for part in parts)


class Seen:
    """One request as the upstream received it."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body


class Recorder:
    """A real upstream that records every request it receives and answers 200 JSON.

    ``delay`` holds each answer back (to keep many requests in flight at once);
    ``extra_headers`` are added to every answer.
    """

    def __init__(self, delay: float = 0.0, extra_headers: dict[str, str] | None = None) -> None:
        self.seen: list[Seen] = []
        recorder = self

        class Handler(RequestHandler):
            SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]

            async def _answer(self, *args: str) -> None:
                request = self.request
                recorder.seen.append(Seen(request.method or "", request.path, dict(request.headers), request.body))
                if recorder.delay:
                    await asyncio.sleep(recorder.delay)
                for name, value in recorder.extra_headers.items():
                    self.set_header(name, value)
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps({"path": request.path}))

            get = head = post = delete = patch = put = options = _answer

        self.delay = delay
        self.extra_headers = extra_headers or {}
        self.app = Application([(r".*", Handler)])


def error_of(resp: HTTPResponse) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(resp.body)
    assert body["status"] == resp.code
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return body


def rate_headers(resp: HTTPResponse) -> tuple[str, str, str]:
    return resp.headers["RateLimit-Limit"], resp.headers["RateLimit-Remaining"], resp.headers["RateLimit-Reset"]


def cors_headers(resp: HTTPResponse) -> dict[str, str]:
    return {name: resp.headers[name] for name in CORS_HEADERS if name in resp.headers}


# --- rate limits ---------------------------------------------------------------------------------


async def test_subject_limit_counts_each_token_subject_apart(start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(joined(AUTH, f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - {{name: limited, path: /api, upstream: up, rate_limit: {{requests: 3, window_seconds: 60, key: subject}}}}
    """))
    # 3 per 60 s: one request every 20 s, a burst of 3. Reset is when the budget is whole again.
    answers = [await http(gw.url + "/api/x", headers=bearer("alice")) for _ in range(4)]
    assert [resp.code for resp in answers] == [200, 200, 200, 429]
    assert [rate_headers(resp) for resp in answers] == [
        ("3", "2", "20"), ("3", "1", "40"), ("3", "0", "60"), ("3", "0", "60")]
    assert all("Retry-After" not in resp.headers for resp in answers[:3])

    refused = answers[3]
    assert refused.headers["Retry-After"] == "20"
    assert refused.headers["Cache-Control"] == "no-store"
    body = error_of(refused)
    assert body["error"] == "rate_limited"
    assert body["status"] == 429

    other = await http(gw.url + "/api/x", headers=bearer("bob"))
    assert other.code == 200
    assert rate_headers(other) == ("3", "2", "20")
    assert len(recorder.seen) == 4  # alice's three and bob's one; the refusal never went upstream


async def test_anonymous_caller_on_optional_auth_falls_back_to_its_ip(start_upstream, start_gateway, http) -> None:
    up = start_upstream(Recorder().app)
    gw = await start_gateway(joined(AUTH, f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - {{name: open, path: /open, upstream: up, auth: optional,
          rate_limit: {{requests: 2, window_seconds: 60, key: subject}}}}
    """))
    codes = [(await http(gw.url + "/open")).code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert (await http(gw.url + "/open", headers=bearer("carol"))).code == 200


async def test_ip_limit_follows_the_trusted_proxy_rules(start_upstream, start_gateway, http) -> None:
    up = start_upstream(Recorder().app)
    routes = f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - {{name: by-ip, path: /ip, upstream: up, rate_limit: {{requests: 2, window_seconds: 60, key: ip}}}}
    """
    untrusting = await start_gateway(routes)
    # The peer is not a trusted proxy: a forged X-Forwarded-For buys no fresh budget.
    codes = [(await http(untrusting.url + "/ip", headers={"X-Forwarded-For": f"10.0.0.{i}"})).code
             for i in range(3)]
    assert codes == [200, 200, 429]

    trusting = await start_gateway(joined(
        "server: {host: 127.0.0.1, port: 0, trusted_proxies: [127.0.0.1/32]}\n"
        "admin: {host: 127.0.0.1, port: 0}\n", routes))
    for client in ("10.0.0.1", "10.0.0.2"):
        codes = [(await http(trusting.url + "/ip", headers={"X-Forwarded-For": client})).code for _ in range(3)]
        assert codes == [200, 200, 429], client


async def test_header_limit_keys_on_the_api_key(start_upstream, start_gateway, http) -> None:
    up = start_upstream(Recorder().app)
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - {{name: keyed, path: /k, upstream: up, rate_limit: {{requests: 2, window_seconds: 60, key: "header:X-Api-Key"}}}}
    """)
    for api_key in ("key-a", "key-b"):
        answers = [await http(gw.url + "/k", headers={"X-Api-Key": api_key}) for _ in range(3)]
        assert [resp.code for resp in answers] == [200, 200, 429], api_key
        assert [resp.headers["RateLimit-Remaining"] for resp in answers] == ["1", "0", "0"]
    # Without the header the client's address is the key: a budget of its own.
    assert [(await http(gw.url + "/k")).code for _ in range(3)] == [200, 200, 429]


async def test_every_answer_of_a_limited_route_carries_the_rate_limit_headers(
        start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(f"""
    server: {{host: 127.0.0.1, port: 0, max_body_bytes: 64}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - {{name: strict, path: /s, upstream: up, validate_json: true,
          rate_limit: {{requests: 10, window_seconds: 10, key: ip}}}}
      - {{name: free, path: /free, upstream: up}}
    """)
    json_type = {"Content-Type": "application/json"}
    relayed = await http(gw.url + "/s", method="POST", body=b"{}", headers=json_type)
    invalid = await http(gw.url + "/s", method="POST", body=b"{", headers=json_type)
    too_large = await http(gw.url + "/s", method="POST", body=b"[" + b"1," * 40 + b"1]", headers=json_type)
    assert [relayed.code, invalid.code, too_large.code] == [200, 400, 413]
    assert [rate_headers(resp) for resp in (relayed, invalid, too_large)] == [
        ("10", "9", "1"), ("10", "8", "2"), ("10", "7", "3")]
    free = await http(gw.url + "/free")
    assert free.code == 200
    assert not [name for name in free.headers if name.lower().startswith("ratelimit")]


@pytest.mark.timeout(seconds=30)
async def test_exactly_the_limit_of_200_concurrent_requests_reaches_the_upstream(
        start_upstream, start_gateway) -> None:
    recorder = Recorder(delay=0.05)  # answers held back so that the requests overlap
    up = start_upstream(recorder.app)
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - {{name: burst, path: /b, upstream: up, rate_limit: {{requests: 50, window_seconds: 3600, key: ip}}}}
    """)
    client = SimpleAsyncHTTPClient(force_instance=True, max_clients=200)
    try:
        answers = await asyncio.gather(*(
            client.fetch(gw.url + "/b", raise_error=False, request_timeout=20) for _ in range(200)))
    finally:
        client.close()
    codes = [resp.code for resp in answers]
    assert codes.count(200) == 50
    assert codes.count(429) == 150
    assert len(recorder.seen) == 50
    allowed = sorted(int(resp.headers["RateLimit-Remaining"]) for resp in answers if resp.code == 200)
    assert allowed == list(range(50))


# --- CORS ----------------------------------------------------------------------------------------

APP = "https://app.example.com"
OTHER = "https://other.example.com"


def cors_config(url: str) -> str:
    return joined(AUTH, f"""
    cors:
      allow_origins: [{APP}]
      allow_methods: [GET, POST]
      allow_headers: [Authorization, Content-Type]
      expose_headers: [X-Request-Id]
      allow_credentials: true
      max_age_seconds: 600
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: api, path: /api, upstream: up}}
      - name: partner
        path: /partner
        upstream: up
        cors: {{allow_origins: [{OTHER}], allow_methods: [GET], max_age_seconds: 60}}
    """)


def preflight(origin: str, method: str = "POST", headers: str | None = "authorization, content-type"
              ) -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        out["Access-Control-Request-Headers"] = headers
    return out


async def test_preflight_is_answered_by_the_gateway_without_a_token(start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(cors_config(up.url))
    resp = await http(gw.url + "/api/orders", method="OPTIONS", headers=preflight(APP))
    assert resp.code == 204
    assert resp.body == b""
    assert cors_headers(resp) == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Max-Age": "600",
    }
    assert resp.headers["Vary"] == "Origin"
    assert len(resp.headers["X-Request-Id"]) == 32
    assert recorder.seen == []


@pytest.mark.parametrize("headers", [
    preflight(OTHER),                               # origin not allowed
    preflight(APP, method="DELETE"),                # method not allowed
    preflight(APP, headers="X-Secret-Header"),      # header not allowed
])
async def test_refused_preflight_gets_no_cors_headers(start_upstream, start_gateway, http, headers) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(cors_config(up.url))
    resp = await http(gw.url + "/api", method="OPTIONS", headers=headers)
    assert resp.code == 204
    assert cors_headers(resp) == {}
    assert recorder.seen == []


async def test_allowed_origin_is_echoed_with_vary_merged_into_the_upstreams(
        start_upstream, start_gateway, http) -> None:
    up = start_upstream(Recorder(extra_headers={"Vary": "Accept-Encoding"}).app)
    gw = await start_gateway(cors_config(up.url))
    resp = await http(gw.url + "/api", headers={"Origin": APP, **bearer("alice")})
    assert resp.code == 200
    assert cors_headers(resp) == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Request-Id",
    }
    assert resp.headers.get_list("Vary") == ["Accept-Encoding, Origin"]
    # Without an Origin the answer still varies on it, so a shared cache never hands it to a page.
    no_origin = await http(gw.url + "/api", headers=bearer("alice"))
    assert cors_headers(no_origin) == {}
    assert no_origin.headers.get_list("Vary") == ["Accept-Encoding, Origin"]

    # A gateway-made error is readable by the page too: same CORS headers on the 401.
    refused = await http(gw.url + "/api", headers={"Origin": APP})
    assert refused.code == 401
    assert error_of(refused)["error"] == "missing_token"
    assert refused.headers["Access-Control-Allow-Origin"] == APP
    assert refused.headers["Vary"] == "Origin"


async def test_upstream_vary_naming_origin_or_star_is_not_repeated(start_upstream, start_gateway, http) -> None:
    for upstream_vary, expected in (("origin, Accept", "origin, Accept"), ("*", "*")):
        up = start_upstream(Recorder(extra_headers={"Vary": upstream_vary}).app)
        gw = await start_gateway(cors_config(up.url))
        resp = await http(gw.url + "/api", headers={"Origin": APP, **bearer("alice")})
        assert resp.headers.get_list("Vary") == [expected]


async def test_disallowed_origin_gets_no_cors_headers(start_upstream, start_gateway, http) -> None:
    up = start_upstream(Recorder().app)
    gw = await start_gateway(cors_config(up.url))
    resp = await http(gw.url + "/api", headers={"Origin": "https://evil.example", **bearer("alice")})
    assert resp.code == 200
    assert cors_headers(resp) == {}
    assert resp.headers["Vary"] == "Origin"  # the answer still depends on the origin, for caches


async def test_route_cors_overrides_the_global_section(start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(cors_config(up.url))
    globally_allowed = await http(gw.url + "/partner", method="OPTIONS", headers=preflight(APP, method="GET"))
    assert globally_allowed.code == 204
    assert cors_headers(globally_allowed) == {}

    resp = await http(gw.url + "/partner", method="OPTIONS", headers=preflight(OTHER, method="GET", headers=None))
    assert resp.code == 204
    assert cors_headers(resp) == {
        "Access-Control-Allow-Origin": OTHER,
        "Access-Control-Allow-Methods": "GET",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",  # the section's default, not the global's
        "Access-Control-Max-Age": "60",
    }
    actual = await http(gw.url + "/partner", headers={"Origin": OTHER, **bearer("alice")})
    assert actual.code == 200
    assert cors_headers(actual) == {"Access-Control-Allow-Origin": OTHER}
    assert recorder.seen[0].method == "GET" and len(recorder.seen) == 1


# --- body limit ----------------------------------------------------------------------------------

LIMIT = 1024


def body_config(url: str) -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, max_body_bytes: {LIMIT}}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams: {{up: {{targets: ["{url}"]}}}}
    routes:
      - {{name: up, path: /up, upstream: up}}
      - {{name: json, path: /json, upstream: up, validate_json: true}}
    """


def post_head(path: str, *lines: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: gw", *lines, "", ""]).encode()


async def test_declared_length_over_the_limit_is_refused_before_any_byte_is_read(
        start_upstream, start_gateway) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(body_config(up.url))
    # Only the head is sent: the gateway answers from Content-Length alone, without waiting for the body.
    status, headers, body = parse(await first_answer(
        gw.port, post_head("/up", "Content-Type: application/octet-stream", f"Content-Length: {LIMIT + 1}")))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "body_too_large"
    await asyncio.sleep(0.1)
    assert recorder.seen == []


async def test_chunked_body_is_counted_as_it_streams(start_upstream, start_gateway) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(body_config(up.url))
    chunk = b"x" * 400
    for path in ("/up", "/json"):  # streamed to the upstream, and buffered for validation
        status, _, body = parse(await first_answer(
            gw.port, post_head(path, "Transfer-Encoding: chunked", "Content-Type: text/plain"),
            (b"190\r\n" + chunk + b"\r\n",) * 4 + (b"0\r\n\r\n",)))
        assert status == 413, path
        assert json.loads(body)["error"] == "body_too_large"
    await asyncio.sleep(0.1)
    assert recorder.seen == []  # no upstream got a whole request


async def test_bodies_up_to_the_limit_pass_byte_for_byte(start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(body_config(up.url))
    payload = bytes(range(256)) * (LIMIT // 256)
    resp = await http(gw.url + "/up", method="POST", body=payload)
    assert resp.code == 200
    chunked = await http(gw.url + "/up", method="PUT", body_producer=lambda write: write(payload))
    assert chunked.code == 200
    assert [seen.body for seen in recorder.seen] == [payload, payload]


# --- validate_json -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, content_type", [
    (b'{"a": 1,}', "application/json"),
    (b"{'a': 1}", "application/json; charset=utf-8"),
    (b'{"a": ', "application/problem+json"),
    (b'"\xff\xfe"', "application/json"),  # not UTF-8
])
async def test_malformed_json_is_refused_and_never_forwarded(
        start_upstream, start_gateway, http, body, content_type) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(body_config(up.url))
    resp = await http(gw.url + "/json", method="POST", body=body, headers={"Content-Type": content_type})
    assert resp.code == 400
    assert error_of(resp)["error"] == "invalid_json"
    await asyncio.sleep(0.05)
    assert recorder.seen == []


async def test_valid_json_and_other_media_types_pass_byte_for_byte(start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    up = start_upstream(recorder.app)
    gw = await start_gateway(body_config(up.url))
    sent = [
        ('{ "name" : "Zoë",\n  "n": [1, 2.50, -0e3], "nested": {"ok": true} }\n'.encode(), "application/json"),
        (b"not json at all {", "text/plain"),
        (b"[]", "application/vnd.api+json"),
    ]
    for body, content_type in sent:
        resp = await http(gw.url + "/json", method="PUT", body=body, headers={"Content-Type": content_type})
        assert resp.code == 200, content_type
    chunked = await http(gw.url + "/json", method="POST", headers={"Content-Type": "application/json"},
                         body_producer=lambda write: write(sent[0][0]))
    assert chunked.code == 200
    assert [seen.body for seen in recorder.seen] == [body for body, _ in sent] + [sent[0][0]]
    assert [seen.headers["Content-Type"] for seen in recorder.seen[:3]] == [ct for _, ct in sent]


# --- header rules --------------------------------------------------------------------------------

async def test_request_and_response_header_rules(start_upstream, start_gateway, http) -> None:
    recorder = Recorder(extra_headers={"Server": "upstream/1.0", "X-Frame-Options": "SAMEORIGIN",
                                       "X-Powered-By": "php", "X-Kept": "yes"})
    up = start_upstream(recorder.app)
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    routes:
      - name: ruled
        path: /r
        upstream: up
        request_headers: {{set: {{X-Api-Version: "2", X-Added: added}}, remove: [Cookie, X-Debug]}}
        response_headers: {{set: {{X-Frame-Options: DENY}}, remove: [Server, x-powered-by]}}
      - {{name: plain, path: /p, upstream: up}}
    """)
    client_headers = {"X-Api-Version": "1", "Cookie": "session=s3cr3t", "X-Debug": "1", "X-Other": "kept"}
    resp = await http(gw.url + "/r", headers=client_headers)
    assert resp.code == 200
    seen = recorder.seen[0].headers
    assert seen["X-Api-Version"] == "2"
    assert seen["X-Added"] == "added"
    assert seen["X-Other"] == "kept"
    assert "Cookie" not in seen and "X-Debug" not in seen
    assert resp.headers.get_list("X-Frame-Options") == ["DENY"]
    assert "Server" not in resp.headers and "X-Powered-By" not in resp.headers
    assert resp.headers["X-Kept"] == "yes"

    # Another route has no rules: everything passes as it came.
    plain = await http(gw.url + "/p", headers=client_headers)
    assert recorder.seen[1].headers["Cookie"] == "session=s3cr3t"
    assert recorder.seen[1].headers["X-Api-Version"] == "1"
    assert plain.headers["Server"] == "upstream/1.0"
    assert plain.headers["X-Frame-Options"] == "SAMEORIGIN"
