"""Operators' plugins (SPEC §7) through a running gateway: answers, header changes both ways,
order, a raising plugin, a slow one, load errors (in process and through `gateway check`)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler, websocket_connect

from gateway.config import ConfigError
from gateway.tokens import mint_token
from tests.support.raw import exchange, parse
from tests.support.ws import HANDSHAKE

ROOT = Path(__file__).resolve().parents[2]
SECRET = "plugin-tests-hs256-secret-of-32-bytes-or-more"

PLUGINS = '''\
import asyncio
from gateway.plugin import AsyncHTTPClient, Plugin, Reply, http_client

class Answer(Plugin):
    async def on_request(self, request):
        if request.path.endswith("/json"):
            return Reply(201, {"made": "here", "query": request.query}, {"X-Made-By": "plugin"})
        if request.path.endswith("/error"):
            return Reply.error(402, "pay_up", "payment required", {"X-Why": "money"})
        return None

class Append(Plugin):
    def __init__(self, config):
        self.mark = config["mark"]

    async def on_request(self, request):
        request.headers.add("X-Trail", self.mark)
        request.headers.pop("X-Drop-Me", None)
        return None

    def on_response(self, request, response):
        response.headers.add("X-Trail", self.mark)

class Who(Plugin):
    async def on_request(self, request):
        request.headers["X-Who"] = repr((request.method, request.route, request.client_ip, request.subject,
                                         request.claims.get("sub") if request.claims else None))

class Raise(Plugin):
    async def on_request(self, request):
        if "X-Boom" in request.headers:
            raise RuntimeError("plugin bug")

    def on_response(self, request, response):
        if response.status == 200 and "X-Boom-Later" in request.headers:
            raise RuntimeError("plugin bug, later")

class Slow(Plugin):
    async def on_request(self, request):
        await asyncio.sleep(0.06)

class Lookup(Plugin):
    """Asks another service, through the gateway's own client, both ways."""

    def __init__(self, config):
        self.url = config["url"]

    async def on_request(self, request):
        client = http_client()
        if client is not AsyncHTTPClient() or type(client).__name__ != "PooledHTTPClient":
            raise RuntimeError(f"not the gateway's client: {client!r}")
        found = await client.fetch(self.url + "/lookup?who=" + request.path)
        request.headers["X-Looked-Up"] = found.body.decode()

    async def on_response(self, request, response):
        found = await AsyncHTTPClient().fetch(self.url + "/lookup?who=answer", raise_error=False)
        response.headers["X-Looked-Up"] = found.body.decode()

class Waits(Plugin):
    """An on_response that waits (a lookup, say): the answer's head goes out once it is done."""

    async def on_response(self, request, response):
        if asyncio.current_task() is None:
            raise RuntimeError("on_response ran outside a task of its own")
        await asyncio.wait_for(asyncio.sleep(0.05), 5)
        if "X-Boom-After-Wait" in request.headers:
            raise RuntimeError("plugin bug, after a wait")
        response.headers.add("X-Trail", "waited")
'''


class Echo(RequestHandler):
    """Answers with the headers it received, as JSON."""

    SUPPORTED_METHODS = ("GET", "POST")  # type: ignore[assignment]

    def get(self, *args: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"headers": [[k, v] for k, v in self.request.headers.get_all()]}))

    post = get


def upstream_saw(body: bytes, name: str) -> list[str]:
    return [v for k, v in json.loads(body)["headers"] if k.lower() == name.lower()]


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.py"
    path.write_text(PLUGINS)
    return path


@pytest.fixture
def gateway(io_loop: Any, start_upstream: Any, start_gateway: Any, plugin_file: Path) -> Any:
    up = start_upstream(Application([(r".*", Echo)]))
    return io_loop.run_sync(lambda: start_gateway(f"""
    auth:
      jwt: {{algorithms: [HS256], secret: "{SECRET}"}}
    upstreams: {{up: {{targets: ["{up.url}"]}}, dead: {{targets: ["http://127.0.0.1:9"]}}}}
    plugins:
      - {{name: answer, class: "{plugin_file}:Answer"}}
      - {{name: a, class: "{plugin_file}:Append", config: {{mark: a}}}}
      - {{name: b, class: "{plugin_file}:Append", config: {{mark: b}}}}
      - {{name: who, class: "{plugin_file}:Who"}}
      - {{name: raise, class: "{plugin_file}:Raise"}}
      - {{name: slow, class: "{plugin_file}:Slow"}}
      - {{name: waits, class: "{plugin_file}:Waits"}}
    routes:
      - {{name: answers, path: /answer, upstream: up, auth: none, plugins: [a, answer, b]}}
      - {{name: ordered, path: /ordered, upstream: up, auth: none, plugins: [b, a]}}
      - {{name: open, path: /open, upstream: up, auth: none, plugins: [who]}}
      - {{name: private, path: /private, upstream: up, auth: required, plugins: [who]}}
      - {{name: raising, path: /raise, upstream: up, auth: none, plugins: [a, raise]}}
      - {{name: slow, path: /slow, upstream: up, auth: none, plugins: [slow]}}
      - {{name: waits, path: /waits, upstream: up, auth: none, plugins: [waits, a, answer]}}
      - {{name: waits-down, path: /waits-down, upstream: dead, auth: none, plugins: [waits]}}
      - {{name: down, path: /down, upstream: dead, auth: none, plugins: [a]}}
    """))


async def test_a_plugin_answers_with_a_reply(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/answer/json?x=1", headers={"X-Drop-Me": "1"})
    assert resp.code == 201
    assert json.loads(resp.body) == {"made": "here", "query": "x=1"}
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Made-By"] == "plugin"
    assert resp.headers["X-Request-Id"]
    # a (before the answer) let it through: its on_response runs; b (after it) never ran
    assert resp.headers.get_list("X-Trail") == ["a"]


async def test_a_plugin_answers_an_error_in_the_spec_format(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/answer/error", headers={"X-Drop-Me": "1"})
    assert resp.code == 402
    assert json.loads(resp.body) == {"error": "pay_up", "message": "payment required", "status": 402,
                                     "request_id": resp.headers["X-Request-Id"]}
    assert (resp.headers["Content-Type"], resp.headers["Cache-Control"], resp.headers["X-Why"]) == (
        "application/json", "no-store", "money")


async def test_header_changes_reach_the_upstream_and_the_client_in_route_order(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/answer/x", headers={"X-Drop-Me": "1", "X-Keep": "1"})
    assert resp.code == 200
    assert upstream_saw(resp.body, "X-Trail") == ["a", "b"]
    assert upstream_saw(resp.body, "X-Drop-Me") == []
    assert upstream_saw(resp.body, "X-Keep") == ["1"]
    assert resp.headers.get_list("X-Trail") == ["a", "b"]

    resp = await http(gateway.url + "/ordered", headers={"X-Drop-Me": "1"})
    assert upstream_saw(resp.body, "X-Trail") == ["b", "a"]
    assert resp.headers.get_list("X-Trail") == ["b", "a"]


async def test_gateway_made_answers_pass_through_on_response(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/down", headers={"X-Drop-Me": "1"})
    assert resp.code == 502
    assert resp.headers.get_list("X-Trail") == ["a"]


async def test_a_plugin_on_a_route_without_auth_sees_no_subject(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/open", headers={"Authorization": "Bearer whatever"})
    assert upstream_saw(resp.body, "X-Who") == [repr(("GET", "open", "127.0.0.1", None, None))]

    token = mint_token(key=SECRET, algorithm="HS256", subject="alice", scopes=None, ttl_seconds=60,
                       audience=None, issuer=None, extra_claims={})
    resp = await http(gateway.url + "/private", headers={"Authorization": f"Bearer {token}"})
    assert upstream_saw(resp.body, "X-Who") == [repr(("GET", "private", "127.0.0.1", "alice", "alice"))]
    resp = await http(gateway.url + "/private")
    assert resp.code == 401  # auth runs before the plugins


@pytest.mark.expect_errors("gateway", r"^request_id=boom-1 plugin raise raised in on_request$")
async def test_a_raising_plugin_is_a_logged_500_and_the_gateway_goes_on(gateway: Any, http: Any, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway"):
        resp = await http(gateway.url + "/raise", headers={"X-Boom": "1", "X-Request-Id": "boom-1", "X-Drop-Me": "1"})
    assert resp.code == 500
    assert json.loads(resp.body) == {"error": "internal_error", "message": "internal error", "status": 500,
                                     "request_id": "boom-1"}
    assert resp.headers.get_list("X-Trail") == ["a"]  # the plugin before it still stamps the answer
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in logged] == ["request_id=boom-1 plugin raise raised in on_request"]
    assert logged[0].exc_info is not None and str(logged[0].exc_info[1]) == "plugin bug"
    caplog.clear()

    resp = await http(gateway.url + "/raise", headers={"X-Drop-Me": "1"})
    assert resp.code == 200
    assert caplog.records == []


@pytest.mark.expect_errors("gateway", r"^request_id=boom-2 plugin raise raised in on_response$")
async def test_a_plugin_raising_on_the_response_is_a_500_before_the_answer_starts(gateway: Any, http: Any,
                                                                                   caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway"):
        resp = await http(gateway.url + "/raise", headers={"X-Boom-Later": "1", "X-Request-Id": "boom-2",
                                                           "X-Drop-Me": "1"})
    assert resp.code == 500
    assert json.loads(resp.body)["error"] == "internal_error"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "request_id=boom-2 plugin raise raised in on_response"]
    assert (await http(gateway.url + "/raise", headers={"X-Drop-Me": "1"})).code == 200


async def test_an_on_response_that_waits_holds_the_head_until_it_is_done(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/waits", headers={"X-Drop-Me": "1"})  # relayed
    assert resp.code == 200
    assert upstream_saw(resp.body, "X-Trail") == ["a"]
    assert resp.headers.get_list("X-Trail") == ["waited", "a"]  # in route order, the one after it too
    resp = await http(gateway.url + "/waits", method="POST", body=b"x" * 100_000, headers={"X-Drop-Me": "1"})
    assert (resp.code, resp.headers.get_list("X-Trail")) == (200, ["waited", "a"])
    resp = await http(gateway.url + "/waits/json", headers={"X-Drop-Me": "1"})  # a later plugin's reply
    assert (resp.code, json.loads(resp.body)["made"]) == (201, "here")
    assert resp.headers.get_list("X-Trail") == ["waited", "a"]
    resp = await http(gateway.url + "/waits-down")  # a gateway-made error
    assert (resp.code, json.loads(resp.body)["error"]) == (502, "bad_gateway")
    assert resp.headers.get_list("X-Trail") == ["waited"]
    seen = plugin_histogram(gateway, "waits")
    assert seen["_count"] == 4 and seen["_sum"] >= 4 * 0.049  # timed to its end, not to its first wait


@pytest.mark.expect_errors("gateway", r"^request_id=waits-1 plugin waits raised in on_response$")
async def test_an_on_response_raising_after_a_wait_is_a_logged_500(gateway: Any, http: Any, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway"):
        resp = await http(gateway.url + "/waits", headers={"X-Request-Id": "waits-1", "X-Boom-After-Wait": "1"})
    assert resp.code == 500
    assert json.loads(resp.body) == {"error": "internal_error", "message": "internal error", "status": 500,
                                     "request_id": "waits-1"}
    assert resp.headers.get_list("X-Trail") == []  # once a plugin failed, no plugin changes this request's answers
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "request_id=waits-1 plugin waits raised in on_response"
    assert str(record.exc_info[1]) == "plugin bug, after a wait"  # type: ignore[index]
    assert (await http(gateway.url + "/waits")).code == 200


async def test_a_client_gone_while_on_response_waits_costs_nothing(gateway: Any, http: Any) -> None:
    for path in ("/waits", "/waits-down", "/waits/json"):  # relayed, a 502, a later plugin's reply
        await leave_while_waiting(gateway.port, b"GET %s HTTP/1.1\r\nHost: gw\r\n\r\n" % path.encode())
    assert gateway.holder.in_flight == 0
    assert (await http(gateway.url + "/waits")).code == 200


class Lookups(RequestHandler):
    def get(self) -> None:
        self.finish(b"found " + self.get_argument("who").encode())


async def test_a_plugin_calls_out_through_the_gateways_client(start_upstream: Any, start_gateway: Any,
                                                              plugin_file: Path, http: Any) -> None:
    up = start_upstream(Application([(r"/lookup", Lookups), (r".*", Echo)]))
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    plugins: [{{name: lookup, class: "{plugin_file}:Lookup", config: {{url: "{up.url}"}}}}]
    routes: [{{name: r, path: /r, upstream: up, auth: none, plugins: [lookup]}}]
    """)
    resp = await http(gw.url + "/r/x")
    assert resp.code == 200
    assert upstream_saw(resp.body, "X-Looked-Up") == ["found /r/x"]
    assert resp.headers["X-Looked-Up"] == "found answer"


class Busy(RequestHandler):
    def get(self) -> None:
        self.set_status(503)
        self.finish(b"busy")


async def test_a_cached_answer_and_a_held_retry_answer_wait_for_on_response(start_upstream: Any, start_gateway: Any,
                                                                           plugin_file: Path, http: Any) -> None:
    """The two answers that reach the client other than as they arrive: a cache hit, replayed, and an
    upstream's 503 kept back for a retry that could not go out, relayed after all."""
    up = start_upstream(Application([(r"/busy.*", Busy), (r".*", Echo)]))
    pool = (f'{{targets: ["{up.url}"], retry: {{attempts: 2, backoff_seconds: 0.01, on_statuses: [503]}}, '
            f'circuit_breaker: {{failure_threshold: 1, open_seconds: 30}}}}')
    gw = await start_gateway(f"""
    upstreams: {{up: {pool}, again: {pool}}}
    plugins: [{{name: waits, class: "{plugin_file}:Waits"}}]
    routes:
      - {{name: cached, path: /cached, upstream: up, auth: none, cache: {{ttl_seconds: 30}}, plugins: [waits]}}
      - {{name: busy, path: /busy, upstream: up, auth: none, plugins: [waits]}}
      - {{name: busy-gone, path: /busy-gone, upstream: again, auth: none, plugins: [waits]}}
    """)
    miss, hit = await http(gw.url + "/cached"), await http(gw.url + "/cached")
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert miss.headers.get_list("X-Trail") == hit.headers.get_list("X-Trail") == ["waited"]
    assert hit.body == miss.body
    busy = await http(gw.url + "/busy")  # its 503 opened the only target's circuit: no retry can go out
    assert (busy.code, busy.body, busy.headers.get_list("X-Trail")) == (503, b"busy", ["waited"])
    await leave_while_waiting(gw.port, b"GET /busy-gone HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert gw.holder.in_flight == 0


async def leave_while_waiting(port: int, request: bytes) -> None:
    """Send ``request`` and hang up while Waits holds its answer's head; then let every plugin call end
    and collect, so that a write left unretrieved on the closed connection would be logged (an ERROR)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    await asyncio.sleep(0.02)  # the upstream answered within this; Waits takes 0.05 s
    writer.close()
    await asyncio.sleep(0.1)
    gc.collect()
    await asyncio.sleep(0)


class EchoSocket(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def test_a_websocket_handshake_waits_for_on_response_too(start_upstream: Any, start_gateway: Any,
                                                                plugin_file: Path) -> None:
    up = start_upstream(Application([(r"/ws/refused", Busy), (r".*", EchoSocket)]))
    gw = await start_gateway(f"""
    upstreams: {{up: {{targets: ["{up.url}"]}}}}
    plugins: [{{name: waits, class: "{plugin_file}:Waits"}}]
    routes: [{{name: ws, path: /ws, upstream: up, auth: none, websocket: true, plugins: [waits]}}]
    """)
    conn = await websocket_connect(f"ws://127.0.0.1:{gw.port}/ws", connect_timeout=5)
    try:
        assert conn.headers.get_list("X-Trail") == ["waited"]  # on the 101
        await conn.write_message("hello")
        assert await asyncio.wait_for(conn.read_message(), 5) == "hello"
    finally:
        conn.close()
    # an upstream that refuses the handshake: its answer is relayed, stamped the same way
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"GET /ws/refused HTTP/1.1\r\n" + HANDSHAKE + b"\r\n")
        status, headers, _ = parse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    finally:
        writer.close()
    assert (status, headers.get("x-trail"), body) == (503, "waited", b"busy")
    await leave_while_waiting(gw.port, b"GET /ws/refused HTTP/1.1\r\n" + HANDSHAKE + b"\r\n")
    # a handshake refused on its head with its body unread: the answer waits, says close, and the
    # body is never read as a next request
    raw = await exchange(gw.port, b"GET /ws HTTP/1.1\r\n" + HANDSHAKE + b"Content-Length: 27\r\n\r\n"
                                  b"GET /ws HTTP/1.1\r\nHost: gw\r\n\r\n")
    status, headers, rest = parse(raw)
    assert (status, headers["connection"], headers.get("x-trail")) == (400, "close", "waited")
    assert rest == b'{"error":"bad_request","message":"a WebSocket handshake has no body","status":400,' \
                   b'"request_id":"%s"}' % headers["x-request-id"].encode()  # one answer, then the close


def plugin_histogram(gateway: Any, plugin: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(gateway.metrics.exposition().decode()):
        if family.name == "gateway_plugin_duration_seconds":
            for sample in family.samples:
                if sample.labels.get("plugin") == plugin:
                    key = sample.name[len(family.name):] + (f"le={sample.labels['le']}" if "le" in sample.labels else "")
                    out[key] = sample.value
    return out


async def test_a_slow_plugin_shows_in_the_histogram(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/slow")
    assert resp.code == 200
    seen = plugin_histogram(gateway, "slow")
    assert seen["_count"] == 1
    assert seen["_sum"] >= 0.06
    assert seen["_bucketle=0.05"] == 0
    assert seen["_bucketle=0.5"] == 1  # 0.06 s and a little: a wide bucket, as a GC pause may add ~0.1 s
    await asyncio.gather(*(http(gateway.url + "/slow") for _ in range(3)))
    assert plugin_histogram(gateway, "slow")["_count"] == 4
    # both calls are timed: Append has an on_request and an on_response
    await http(gateway.url + "/ordered", headers={"X-Drop-Me": "1"})
    assert plugin_histogram(gateway, "a")["_count"] == 2


# --- load errors ----------------------------------------------------------------------------------

async def test_a_plugin_load_error_stops_the_gateway_in_process(start_gateway: Any, plugin_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        await start_gateway(f"""
        upstreams: {{up: {{targets: ["http://127.0.0.1:9"]}}}}
        plugins:
          - {{name: a, class: "{plugin_file}:Append"}}
        routes:
          - {{name: r, path: /r, upstream: up, plugins: [a]}}
        """)
    assert caught.value.problems == ["plugins[0].config: Append refused its config: KeyError: 'mark'"]


def test_gateway_check_exits_2_on_a_plugin_load_error(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "p.py").write_text("import not_a_module_anywhere\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent("""\
        upstreams: {up: {targets: ["http://127.0.0.1:9"]}}
        plugins:
          - {name: p, class: plugins/p.py:P}
          - {name: q, class: "no_such_package.mod:Q"}
        routes:
          - {name: r, path: /r, upstream: up, plugins: [p, q, z]}
        """))
    gateway = Path(sys.executable).with_name("gateway")
    argv = [str(gateway)] if gateway.exists() else [sys.executable, "run.py"]
    result = subprocess.run([*argv, "check", "-c", str(config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, env=dict(os.environ))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "plugins[0].class: cannot import 'plugins/p.py': ModuleNotFoundError: No module named 'not_a_module_anywhere'",
        "plugins[1].class: cannot import 'no_such_package.mod': No module named 'no_such_package'",
        "routes[0].plugins: unknown plugin 'z' (plugins: p, q)",
        f"3 problem(s) in {config}",
    ]


@pytest.mark.expect_errors("gateway", r"^reload of .* refused, the running config stays:\nplugins\[0\]\.config: Append refused its config: KeyError: .mark.$")
async def test_a_reload_builds_plugins_anew(start_upstream: Any, start_gateway: Any, http: Any,
                                            tmp_path: Path) -> None:
    up = start_upstream(Application([(r".*", Echo)]))
    plugin = tmp_path / "mark.py"
    plugin.write_text(PLUGINS)
    config = tmp_path / "gateway.yaml"
    text = textwrap.dedent(f"""\
        server: {{host: 127.0.0.1, port: 0}}
        admin: {{host: 127.0.0.1, port: 0}}
        upstreams: {{up: {{targets: ["{up.url}"]}}}}
        plugins:
          - {{name: a, class: mark.py:Append, config: {{mark: MARK}}}}
        routes:
          - {{name: r, path: /r, upstream: up, plugins: [a]}}
        """)
    config.write_text(text.replace("MARK", "one"))
    from gateway.loader import load_config
    from gateway.server import GatewayServer

    server = GatewayServer(load_config(str(config)))
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/r"
        assert (await http(url, headers={"X-Drop-Me": "1"})).headers.get_list("X-Trail") == ["one"]
        config.write_text(text.replace("MARK", "two"))
        await server.reload()
        assert (await http(url, headers={"X-Drop-Me": "1"})).headers.get_list("X-Trail") == ["two"]
        config.write_text(text.replace("MARK", "two").replace("config: {mark: two}", "config: {}"))
        with pytest.raises(ConfigError):
            await server.reload()  # refused: the running plugins stay
        assert (await http(url, headers={"X-Drop-Me": "1"})).headers.get_list("X-Trail") == ["two"]
    finally:
        await server.shutdown()
