"""Operations end to end on a real `run.py serve` child process with real signals (SPEC §5):
metrics that move, the access-log line, the admin API, hot reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.simple_httpclient import HTTPStreamClosedError
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from gateway.accesslog import FIELDS
from tests.conftest import Fetch
from tests.support.gateway_process import GatewayProcess
from tests.support.tokens import SECRET
from tests.support.tokens import token as support_token


def answering(text: str, delay: float = 0.0, started: asyncio.Event | None = None) -> Application:
    """An upstream answering ``text`` (after ``delay``) to any request; POST answers 201 with the body's length."""

    class Handler(RequestHandler):
        async def get(self, *_: str) -> None:
            if started is not None:
                started.set()
            if delay:
                await asyncio.sleep(delay)
            self.finish(text)

        def post(self, *_: str) -> None:
            self.set_status(201)
            self.finish(f"{text}:{len(self.request.body)}")

    return Application([(r".*", Handler)])


def stopped_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


def config(upstream: str, *, extra_upstreams: str = "", extra_routes: str = "", drain: float = 5.0) -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: {drain}}}
    admin: {{host: 127.0.0.1, port: 0}}
    logging: {{level: info, format: json}}
    auth:
      jwt: {{algorithms: [HS256], secret: {SECRET}}}
    upstreams:
      backend: {{targets: ["{upstream}"]}}
    {extra_upstreams}
    routes:
      - {{name: api, path: /api, upstream: backend, auth: optional}}
    {extra_routes}
    """


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


async def scrape(http: Fetch, gateway: GatewayProcess, in_flight: int = 0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gateway's metrics once ``in_flight`` requests are left: a client may read the
    last byte of an answer a moment before the gateway counts the request as done."""
    for _ in range(100):
        response = await http(gateway.admin_url + "/-/metrics")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        found = samples(response.body.decode())
        if found[("gateway_in_flight_requests", ())] == in_flight:
            break
        await asyncio.sleep(0.02)
    return found


def operational_lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gateway.stderr]


@pytest.mark.timeout(seconds=30)
async def test_metrics_move_with_requests_retries_and_rate_limits(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("ok"))
    dead = f"http://127.0.0.1:{stopped_port()}"
    gateway = await gateway_process(config(
        upstream.url,
        extra_upstreams=f"  flaky: {{targets: [\"{dead}\", \"{upstream.url}\"], retry: {{attempts: 2}}}}",
        extra_routes="""
      - {name: flaky, path: /flaky, upstream: flaky, auth: none}
      - {name: limited, path: /limited, upstream: backend, auth: none, rate_limit: {requests: 1, window_seconds: 60, key: ip}}
    """))
    for _ in range(2):
        assert (await http(gateway.url + "/api/x")).code == 200
    assert (await http(gateway.url + "/nowhere")).code == 404
    assert (await http(gateway.url + "/api/x", method="POST", body=b"abc")).code == 201
    for _ in range(4):
        assert (await http(gateway.url + "/flaky")).code == 200
    assert [(await http(gateway.url + "/limited")).code for _ in range(3)] == [200, 429, 429]

    m = await scrape(http, gateway)
    assert m[("gateway_requests_total", (("method", "GET"), ("route", "api"), ("status", "200")))] == 2
    assert m[("gateway_requests_total", (("method", "POST"), ("route", "api"), ("status", "201")))] == 1
    assert m[("gateway_requests_total", (("method", "GET"), ("route", ""), ("status", "404")))] == 1
    assert m[("gateway_requests_total", (("method", "GET"), ("route", "limited"), ("status", "429")))] == 2
    assert m[("gateway_request_duration_seconds_count", (("route", "api"),))] == 3
    assert m[("gateway_upstream_duration_seconds_count", (("target", upstream.url), ("upstream", "backend")))] == 4
    tries_at_dead = m[("gateway_upstream_duration_seconds_count", (("target", dead), ("upstream", "flaky")))]
    assert tries_at_dead >= 1  # round robin over two targets: some requests start at the dead one
    assert m[("gateway_retries_total", (("upstream", "flaky"),))] == tries_at_dead  # each of those was retried
    assert m[("gateway_upstream_duration_seconds_count", (("target", upstream.url), ("upstream", "flaky")))] == 4
    assert m[("gateway_rate_limited_total", (("route", "limited"),))] == 2
    assert m[("gateway_in_flight_requests", ())] == 0
    assert m[("gateway_target_healthy", (("target", upstream.url), ("upstream", "backend")))] == 1
    assert m[("gateway_circuit_open", (("target", upstream.url), ("upstream", "backend")))] == 0


@pytest.mark.timeout(seconds=30)
async def test_in_flight_gauge_counts_a_slow_request(start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    started = asyncio.Event()
    upstream = start_upstream(answering("slow", delay=1.0, started=started))
    gateway = await gateway_process(config(upstream.url))
    slow = asyncio.ensure_future(http(gateway.url + "/api/slow"))
    await asyncio.wait_for(started.wait(), 5)
    assert (await scrape(http, gateway, in_flight=1))[("gateway_in_flight_requests", ())] == 1
    assert (await slow).code == 200
    assert (await scrape(http, gateway))[("gateway_in_flight_requests", ())] == 0


@pytest.mark.timeout(seconds=30)
async def test_jwks_refreshes_are_counted_by_result(start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    class Broken(RequestHandler):
        def get(self) -> None:
            self.set_status(500)

    jwks = start_upstream(Application([(r"/jwks.json", Broken)]))
    upstream = start_upstream(answering("ok"))
    text = config(upstream.url).replace(
        f"jwt: {{algorithms: [HS256], secret: {SECRET}}}",
        f"jwt: {{algorithms: [RS256], jwks_url: \"{jwks.url}/jwks.json\"}}")
    gateway = await gateway_process(text)
    m = await scrape(http, gateway)
    assert m[("gateway_jwks_refresh_total", (("result", "failure"),))] >= 1


@pytest.mark.timeout(seconds=30)
async def test_access_log_line_has_every_field_and_no_secret(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("created"))
    gateway = await gateway_process(config(upstream.url))
    token = support_token("alice")
    response = await http(
        gateway.url + "/api/items?api_key=query-secret-value", method="POST", body=b"hello",
        headers={"Authorization": f"Bearer {token}", "Cookie": "session=cookie-secret-value",
                 "X-Request-Id": "log-test-1", "X-Forwarded-For": "203.0.113.9"})
    assert response.code == 201
    assert response.body == b"created:5"
    entry = await gateway.access_line("log-test-1")
    assert tuple(entry) == FIELDS
    assert entry["ts"].endswith("Z") and entry["ts"][10] == "T" and len(entry["ts"]) == 24
    duration = entry.pop("duration_ms")
    assert 0 < duration < 5000
    del entry["ts"]
    assert entry == {
        "request_id": "log-test-1", "client": "127.0.0.1", "method": "POST", "path": "/api/items",
        "route": "api", "upstream": "backend", "target": upstream.url, "status": 201,
        "bytes_in": 5, "bytes_out": len(b"created:5"), "subject": "alice",
    }
    no_route = await http(gateway.url + "/nowhere", headers={"X-Request-Id": "log-test-2"})
    entry = await gateway.access_line("log-test-2")
    assert (entry["route"], entry["upstream"], entry["target"], entry["status"], entry["subject"]) == (
        None, None, None, 404, None)
    assert entry["bytes_out"] == len(no_route.body)
    stdout = "".join(gateway.stdout) + "".join(gateway.stderr)
    for secret in (token, SECRET, "cookie-secret-value", "query-secret-value"):
        assert secret not in stdout
    assert all(json.loads(line)["level"] for line in gateway.stderr)  # format: json on stderr too


@pytest.mark.timeout(seconds=30)
async def test_admin_routes_upstreams_and_unknown_paths(start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("ok"))
    gateway = await gateway_process(config(upstream.url))
    routes = json.loads((await http(gateway.admin_url + "/-/routes")).body)
    assert [(r["name"], r["path"], r["target"]) for r in routes["routes"]] == [("api", "/api", "backend")]
    upstreams = json.loads((await http(gateway.admin_url + "/-/upstreams")).body)
    assert upstreams["pid"] == gateway.pid
    assert upstreams["upstreams"] == {"backend": {"balance": "round_robin", "ready": True, "targets": [
        {"url": upstream.url, "weight": 1, "healthy": True, "circuit": "closed", "in_flight": 0}]}}
    missing = await http(gateway.admin_url + "/-/nothing")
    assert missing.code == 404
    assert json.loads(missing.body)["error"] == "no_route"  # SPEC §4's JSON, as on the main listener
    assert (await http(gateway.admin_url + "/-/reload")).code == 405  # GET: reload is a POST
    assert (await http(gateway.url + "/-/health")).code == 200
    assert (await http(gateway.url + "/-/ready")).code == 200
    assert (await http(gateway.url + "/-/metrics")).code == 404  # not on the main listener


@pytest.mark.timeout(seconds=30)
async def test_sighup_reload_lets_the_request_in_flight_finish_on_the_old_config(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    started = asyncio.Event()
    old = start_upstream(answering("old", delay=1.0, started=started))
    new = start_upstream(answering("new"))
    gateway = await gateway_process(config(old.url))
    slow = asyncio.ensure_future(http(gateway.url + "/api/slow", headers={"X-Request-Id": "slow-1"}))
    await asyncio.wait_for(started.wait(), 5)
    gateway.write_config(config(new.url))
    gateway.signal(signal.SIGHUP)
    await gateway.wait_for_log("configuration reloaded")
    assert not slow.done()
    after = await http(gateway.url + "/api/x")
    assert (after.code, after.body) == (200, b"new")
    before = await slow
    assert (before.code, before.body) == (200, b"old")
    assert (await gateway.access_line("slow-1"))["target"] == old.url


@pytest.mark.timeout(seconds=30)
async def test_post_reload_answers_json_and_keeps_unchanged_pools(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("ok"))
    dead = f"http://127.0.0.1:{stopped_port()}"
    text = config(
        upstream.url,
        extra_upstreams=f"  broken: {{targets: [\"{dead}\"], circuit_breaker: {{failure_threshold: 1, open_seconds: 60}}}}",
        extra_routes="  - {name: broken, path: /broken, upstream: broken, auth: none}")
    gateway = await gateway_process(text)
    assert (await http(gateway.url + "/broken")).code == 502
    assert (await http(gateway.url + "/broken")).code == 503  # the circuit is open
    gateway.write_config(text.replace("name: api, path: /api,", "name: api, path: /v2,"))
    response = await http(gateway.admin_url + "/-/reload", method="POST", body=b"")
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {"status": "reloaded", "source": str(gateway.config_path)}
    assert (await http(gateway.url + "/v2/x")).code == 200
    assert (await http(gateway.url + "/api/x")).code == 404
    upstreams = json.loads((await http(gateway.admin_url + "/-/upstreams")).body)["upstreams"]
    assert upstreams["broken"]["targets"][0]["circuit"] == "open"  # the pool carried over with its breaker
    assert (await http(gateway.url + "/broken")).code == 503
    m = await scrape(http, gateway)
    assert m[("gateway_circuit_open", (("target", dead), ("upstream", "broken")))] == 1


@pytest.mark.timeout(seconds=30)
async def test_bad_reload_is_refused_logged_and_the_old_config_stays(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("ok"))
    good = config(upstream.url)
    gateway = await gateway_process(good)
    gateway.write_config(good.replace("upstream: backend", "upstream: bakcend"))
    response = await http(gateway.admin_url + "/-/reload", method="POST", body=b"")
    assert response.code == 400
    answer = json.loads(response.body)
    assert answer["error"] == "invalid_config"
    assert answer["problems"] == ["routes[0].upstream: unknown upstream 'bakcend'"]
    assert (await http(gateway.url + "/api/x")).body == b"ok"

    gateway.write_config("server: [not, a, mapping\n")
    gateway.signal(signal.SIGHUP)
    await gateway.wait_for_log("reload of .* refused", count=2)
    assert (await http(gateway.url + "/api/x")).body == b"ok"
    refusals = [e for e in operational_lines(gateway) if "refused" in e["message"]]
    assert [e["level"] for e in refusals] == ["error", "error"]
    assert "unknown upstream 'bakcend'" in refusals[0]["message"]
    assert gateway.proc is not None and gateway.proc.poll() is None


@pytest.mark.timeout(seconds=30)
async def test_sigterm_drains_a_slow_request_then_exits_0(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    started = asyncio.Event()
    upstream = start_upstream(answering("finished", delay=1.0, started=started))
    gateway = await gateway_process(config(upstream.url, drain=10))
    slow = asyncio.ensure_future(http(gateway.url + "/api/slow"))
    await asyncio.wait_for(started.wait(), 5)
    gateway.signal(signal.SIGTERM)
    await gateway.wait_for_log("shutting down")
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        await http(gateway.url + "/api/x")
    response = await slow
    assert (response.code, response.body) == (200, b"finished")
    assert await gateway.wait(10) == 0


@pytest.mark.timeout(seconds=30)
async def test_sigterm_gives_up_on_a_request_after_drain_seconds(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    started = asyncio.Event()
    upstream = start_upstream(answering("too late", delay=5.0, started=started))
    gateway = await gateway_process(config(upstream.url, drain=0.3))
    slow = asyncio.ensure_future(http(gateway.url + "/api/slow", headers={"X-Request-Id": "cut-1"}))
    await asyncio.wait_for(started.wait(), 5)
    gateway.signal(signal.SIGINT)
    assert await gateway.wait(5) == 0
    with pytest.raises(HTTPStreamClosedError):  # closed unanswered when the drain time ran out
        await slow
    await gateway.wait_for_log(r"drain time \(server.drain_seconds: 0.3s\) ran out with 1 request\(s\) in flight: "
                               "the gateway is closing their connections, unanswered")
    entry = await gateway.access_line("cut-1")
    assert (entry["status"], entry["route"]) == (503, "api")  # the gateway cut it, not the client (499)


@pytest.mark.timeout(seconds=30)
async def test_a_client_that_hangs_up_is_logged_as_499(start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    started = asyncio.Event()
    upstream = start_upstream(answering("late", delay=1.0, started=started))
    gateway = await gateway_process(config(upstream.url))
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /api/slow HTTP/1.1\r\nHost: gw\r\nX-Request-Id: hang-up-1\r\n\r\n")
    await writer.drain()
    await started.wait()
    writer.close()
    entry = await gateway.access_line("hang-up-1")
    assert (entry["status"], entry["route"], entry["bytes_out"]) == (499, "api", 0)
    found = await scrape(http, gateway)
    assert found[("gateway_requests_total", (("method", "GET"), ("route", "api"), ("status", "499")))] == 1


@pytest.mark.timeout(seconds=30)
async def test_a_reload_keeps_rate_limit_budgets(start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("ok"))
    limited = "  - {name: limited, path: /limited, upstream: backend, auth: none, " \
              "rate_limit: {requests: 2, window_seconds: 60, key: ip}}"
    gateway = await gateway_process(config(upstream.url, extra_routes=limited))
    assert [(await http(gateway.url + "/limited")).code for _ in range(2)] == [200, 200]
    reloaded = await http(gateway.admin_url + "/-/reload", method="POST", body=b"")
    assert reloaded.code == 200
    assert (await http(gateway.url + "/limited")).code == 429


@pytest.mark.timeout(seconds=30)
async def test_requests_let_through_by_fail_open_are_counted(
        start_upstream: Any, gateway_process: Any, http: Fetch) -> None:
    upstream = start_upstream(answering("ok"))
    limited = "  - {name: limited, path: /limited, upstream: backend, auth: none, " \
              "rate_limit: {requests: 1, window_seconds: 60, key: ip}}"
    text = config(upstream.url, extra_routes=limited).rstrip() + \
        f"\n    rate_limit_store: redis://127.0.0.1:{stopped_port()}/0\n    rate_limit_fail_open: true\n"
    gateway = await gateway_process(text)
    assert [(await http(gateway.url + "/limited")).code for _ in range(3)] == [200, 200, 200]
    found = await scrape(http, gateway)
    assert found[("gateway_rate_limit_fail_open_total", ())] == 3
