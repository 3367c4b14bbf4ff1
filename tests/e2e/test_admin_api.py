"""The admin API's dashboard endpoints and ``admin.token`` (SPEC §9), through a running gateway.

``/-/stats`` agrees with ``/-/metrics``; ``/-/errors`` holds the last error answers
with their request ids; the dashboard's files are served with a strict CSP; with
``admin.token`` every data endpoint refuses a missing, wrong, repeated or
non-Bearer credential with SPEC §4's 401 JSON, and the main listener is unaffected.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httputil import HTTPHeaders
from tornado.web import Application, RequestHandler

from gateway.stats import histogram_quantile
from tests.conftest import Fetch
from tests.support.tokens import bearer

ADMIN_TOKEN = "f3a1c2d4e5b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0"  # 48 bytes
DATA_ENDPOINTS = [("GET", "/-/metrics"), ("GET", "/-/routes"), ("GET", "/-/upstreams"), ("GET", "/-/stats"),
                  ("GET", "/-/errors"), ("POST", "/-/reload"), ("GET", "/-/no-such-endpoint")]
DASHBOARD_FILES = [("/", "text/html; charset=utf-8"), ("/-/dashboard/app.js", "text/javascript; charset=utf-8"),
                   ("/-/dashboard/style.css", "text/css; charset=utf-8")]


def upstream_app() -> Application:
    class Handler(RequestHandler):
        def get(self, status: str) -> None:
            self.set_status(int(status))
            self.finish("x")

    return Application([(r"/(\d+)", Handler)])


def config(upstream: str, token: str | None = None) -> str:
    admin = f"admin: {{host: 127.0.0.1, port: 0, token: {token}}}" if token else "admin: {host: 127.0.0.1, port: 0}"
    return f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: 0.5}}
    {admin}
    upstreams:
      backend: {{targets: ["{upstream}"]}}
    routes:
      - {{name: api, path: /api, upstream: backend, strip_prefix: true}}
      - {{name: idle, path: /idle, upstream: backend}}
    """


async def metrics_of(http: Fetch, admin: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """From /-/metrics: per route, requests, 5xx and the duration buckets."""
    text = (await http(admin + "/-/metrics", headers=headers)).body.decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gateway_requests_total":
                entry = out.setdefault(s.labels["route"], {"requests": 0, "errors_5xx": 0, "buckets": []})
                entry["requests"] += int(s.value)
                entry["errors_5xx"] += int(s.value) if s.labels["status"].startswith("5") else 0
            elif s.name == "gateway_request_duration_seconds_bucket":
                entry = out.setdefault(s.labels["route"], {"requests": 0, "errors_5xx": 0, "buckets": []})
                entry["buckets"].append((float(s.labels["le"]), s.value))
    return out


async def test_stats_agree_with_metrics_and_errors_keep_the_request_ids(
        start_gateway: Any, start_upstream: Any, http: Fetch) -> None:
    upstream = start_upstream(upstream_app())
    gateway = await start_gateway(config(upstream.url))
    admin = f"http://127.0.0.1:{gateway.admin_port}"
    for status, times in ((200, 7), (404, 2), (503, 3)):
        for i in range(times):
            answer = await http(f"{gateway.url}/api/{status}", headers={"X-Request-Id": f"req-{status}-{i}"})
            assert answer.code == status
    assert (await http(gateway.url + "/nowhere", headers={"X-Request-Id": "req-no-route"})).code == 404

    stats = json.loads((await http(admin + "/-/stats")).body)
    expected = await metrics_of(http, admin)
    api = stats["routes"]["api"]
    assert (api["requests"], api["errors_4xx"], api["errors_5xx"]) == (12, 2, 3)
    assert api["statuses"] == {"200": 7, "404": 2, "503": 3}
    assert api["requests"] == expected["api"]["requests"] and api["errors_5xx"] == expected["api"]["errors_5xx"]
    buckets = sorted(expected["api"]["buckets"])
    assert api["p50_seconds"] == histogram_quantile(0.5, buckets)
    assert api["p99_seconds"] == histogram_quantile(0.99, buckets)
    assert [[b, c] for b, c in api["buckets"]] == [["+Inf" if math.isinf(le) else repr(le), int(c)]
                                                   for le, c in buckets]
    assert stats["routes"]["idle"] == {"requests": 0, "statuses": {}, "errors_4xx": 0, "errors_5xx": 0,
                                       "duration_sum_seconds": 0.0, "buckets": [], "p50_seconds": None,
                                       "p99_seconds": None}
    assert stats["in_flight"] == 0

    errors = json.loads((await http(admin + "/-/errors")).body)["errors"]
    assert [(e["status"], e["route"], e["method"], e["path"], e["request_id"]) for e in errors] == [
        (404, "", "GET", "/nowhere", "req-no-route"),
        *[(503, "api", "GET", "/api/503", f"req-503-{i}") for i in (2, 1, 0)],
        *[(404, "api", "GET", "/api/404", f"req-404-{i}") for i in (1, 0)],
    ]


async def test_errors_ring_keeps_the_path_without_its_query_and_bounded(
        start_gateway: Any, start_upstream: Any, http: Fetch) -> None:
    upstream = start_upstream(upstream_app())
    gateway = await start_gateway(config(upstream.url))
    admin = f"http://127.0.0.1:{gateway.admin_port}"
    for i in range(105):
        await http(f"{gateway.url}/api/500?api_key=secret{i}", headers={"X-Request-Id": f"r{i}"})
    long_path = "/api/400/" + "a" * 1000
    await http(gateway.url + long_path)
    errors = json.loads((await http(admin + "/-/errors")).body)["errors"]
    assert len(errors) == 100
    assert errors[0]["path"] == long_path[:200] and errors[0]["status"] == 404
    assert [e["request_id"] for e in errors[1:]] == [f"r{i}" for i in range(104, 5, -1)]
    assert all(e["path"] == "/api/500" for e in errors[1:])


@pytest.mark.parametrize("path, content_type", DASHBOARD_FILES)
async def test_dashboard_files_are_served_with_a_strict_policy(
        start_gateway: Any, start_upstream: Any, http: Fetch, path: str, content_type: str) -> None:
    gateway = await start_gateway(config(start_upstream(upstream_app()).url, ADMIN_TOKEN))
    answer = await http(f"http://127.0.0.1:{gateway.admin_port}{path}")
    assert answer.code == 200
    assert answer.headers["Content-Type"] == content_type
    assert answer.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in answer.headers
    body = answer.body.decode().replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
    assert "http://" not in body and "https://" not in body and "//cdn" not in body
    assert ADMIN_TOKEN not in body


REFUSALS = [
    ("no header", [], "missing_token", 'Bearer realm="gateway"'),
    ("wrong token", [f"Bearer {ADMIN_TOKEN[:-1]}1"], "invalid_token",
     'Bearer realm="gateway", error="invalid_token", error_description="the admin token is not valid"'),
    ("a prefix of the token", [f"Bearer {ADMIN_TOKEN[:32]}"], "invalid_token", None),
    ("the token and more", [f"Bearer {ADMIN_TOKEN}x"], "invalid_token", None),
    ("repeated header", [f"Bearer {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}"], "invalid_token",
     'Bearer realm="gateway", error="invalid_token", error_description="one Authorization header is expected"'),
    ("basic scheme", ["Basic " + ADMIN_TOKEN], "missing_token", 'Bearer realm="gateway"'),
    ("scheme alone", ["Bearer"], "invalid_token", None),
    ("token without scheme", [ADMIN_TOKEN], "missing_token", None),
    ("a JWT the main listener would take", [bearer()["Authorization"]], "invalid_token", None),
]


@pytest.mark.parametrize("method, path", DATA_ENDPOINTS)
@pytest.mark.parametrize("values, code, challenge", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
async def test_admin_token_refuses_every_data_endpoint(
        start_gateway: Any, start_upstream: Any, http: Fetch, method: str, path: str, values: list[str], code: str,
        challenge: str | None) -> None:
    gateway = await start_gateway(config(start_upstream(upstream_app()).url, ADMIN_TOKEN))
    headers = HTTPHeaders({"X-Request-Id": "admin-probe"})
    for value in values:
        headers.add("Authorization", value)
    answer = await http(f"http://127.0.0.1:{gateway.admin_port}{path}", method=method, headers=headers,
                        body=b"" if method == "POST" else None)
    assert answer.code == 401
    body = json.loads(answer.body)
    assert body["error"] == code and body["status"] == 401 and body["request_id"] == "admin-probe"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="gateway"')
    if challenge is not None:
        assert answer.headers["WWW-Authenticate"] == challenge
    assert ADMIN_TOKEN not in answer.body.decode() and ADMIN_TOKEN not in answer.headers["WWW-Authenticate"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/-/metrics", 200), ("GET", "/-/routes", 200), ("GET", "/-/upstreams", 200), ("GET", "/-/stats", 200),
    ("GET", "/-/errors", 200), ("GET", "/-/no-such-endpoint", 404), ("DELETE", "/-/stats", 405),
])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_admin_token_opens_every_endpoint(start_gateway: Any, start_upstream: Any, http: Fetch, method: str,
                                                path: str, status: int, scheme: str) -> None:
    gateway = await start_gateway(config(start_upstream(upstream_app()).url, ADMIN_TOKEN))
    answer = await http(f"http://127.0.0.1:{gateway.admin_port}{path}", method=method,
                        headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
    assert answer.code == status


async def test_admin_token_lets_reload_through(start_gateway: Any, start_upstream: Any, http: Fetch,
                                               tmp_path: Any) -> None:
    from gateway.loader import load_config
    from gateway.server import GatewayServer

    path = tmp_path / "gateway.yaml"
    path.write_text(config(start_upstream(upstream_app()).url, ADMIN_TOKEN))
    server = GatewayServer(load_config(str(path)), config_path=str(path))
    await server.start()
    try:
        admin = f"http://127.0.0.1:{server.admin_port}/-/reload"
        refused = await http(admin, method="POST", body=b"")
        assert refused.code == 401
        answer = await http(admin, method="POST", body=b"", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.code == 200 and json.loads(answer.body)["status"] == "reloaded"
    finally:
        await server.shutdown()


async def test_admin_token_leaves_the_main_listener_alone(start_gateway: Any, start_upstream: Any,
                                                           http: Fetch) -> None:
    gateway = await start_gateway(config(start_upstream(upstream_app()).url, ADMIN_TOKEN))
    assert (await http(gateway.url + "/api/200")).code == 200
    assert (await http(gateway.url + "/-/health")).code == 200
    assert (await http(gateway.url + "/-/ready")).code == 200
    # the admin token is no credential on the main listener, and the listener does not ask for it
    assert (await http(gateway.url + "/api/200", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).code == 200
    assert (await http(gateway.url + "/-/metrics")).code == 404


async def test_without_admin_token_the_admin_api_stays_open(start_gateway: Any, start_upstream: Any,
                                                            http: Fetch) -> None:
    gateway = await start_gateway(config(start_upstream(upstream_app()).url))
    for method, path in DATA_ENDPOINTS[:5]:
        answer = await http(f"http://127.0.0.1:{gateway.admin_port}{path}", method=method,
                            headers={"Authorization": "Bearer anything"})
        assert answer.code == 200, path
