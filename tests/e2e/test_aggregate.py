"""Aggregate routes (SPEC §4 Aggregation): parallel fan-out, JSON merge, partial failure."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.web import Application, RequestHandler

from tests.support.tokens import SECRET, bearer


class UserHandler(RequestHandler):
    async def get(self, user_id: str) -> None:
        delay = float(self.get_query_argument("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        self.write({"id": user_id, "path": self.request.path, "x_user_id": self.request.headers.get("X-User-Id"),
                    "request_id": self.request.headers.get("X-Request-Id"),
                    "traceparent": self.request.headers.get("traceparent")})


class OrdersHandler(RequestHandler):
    def get(self) -> None:
        self.write({"user": self.get_query_argument("user"), "limit": self.get_query_argument("limit"),
                    "raw_query": self.request.query})


class SlowHandler(RequestHandler):
    async def get(self, *args: str) -> None:
        await asyncio.sleep(float(self.application.settings["delay"]))
        self.write({"slow": True})


class NotJsonHandler(RequestHandler):
    def get(self, *args: str) -> None:
        self.set_header("Content-Type", "text/html")
        self.write("<html>oops</html>")


def config(users: str, orders: str, extra: str = "", route_extra: str = "", parts: str | None = None) -> str:
    parts = parts or """
          - {name: user, upstream: users, path: "/users/{id}"}
          - {name: orders, upstream: orders, path: "/orders?user={id}&limit=5"}"""
    return f"""
    auth:
      jwt: {{secret: "{SECRET}", claims_to_headers: {{sub: X-User-Id}}}}
    upstreams:
      users: {{targets: ["{users}"], request_timeout: 5}}
      orders: {{targets: ["{orders}"], request_timeout: 5}}
      {extra}
    routes:
      - name: overview
        path: /api/users/{{id}}/overview
        {route_extra}
        aggregate:{parts}
    """


@pytest.fixture
def backends(start_upstream):
    users = start_upstream(Application([(r"/users/(.*)", UserHandler)]))
    orders = start_upstream(Application([(r"/orders", OrdersHandler)]))
    return users, orders


async def test_parts_merged_with_identity_and_trace_headers(backends, start_gateway, http) -> None:
    users, orders = backends
    gw = await start_gateway(config(users.url, orders.url))
    resp = await http(gw.url + "/api/users/42/overview", headers={**bearer("alice"), "X-Request-Id": "agg-1"})
    assert resp.code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Gateway-Completed"] == "true"
    body = json.loads(resp.body)
    assert body["orders"] == {"user": "42", "limit": "5", "raw_query": "user=42&limit=5"}
    assert body["user"]["id"] == "42"
    assert body["user"]["x_user_id"] == "alice"
    assert body["user"]["request_id"] == "agg-1"
    assert body["user"]["traceparent"].startswith("00-")


async def test_parameters_are_escaped_into_part_paths(backends, start_gateway, http) -> None:
    users, orders = backends
    gw = await start_gateway(config(users.url, orders.url))
    resp = await http(gw.url + "/api/users/a%20b%26c%3Dd/overview", headers=bearer("u-1"))
    body = json.loads(resp.body)
    assert resp.code == 200
    assert body["orders"]["raw_query"] == "user=a%20b%26c%3Dd&limit=5"
    assert body["orders"]["user"] == "a b&c=d"
    assert body["user"]["path"] == "/users/a%20b%26c%3Dd"  # escaped on the wire, one segment
    assert body["user"]["id"] == "a b&c=d"


@pytest.mark.timeout(seconds=10)
async def test_parts_run_in_parallel(start_upstream, start_gateway, http) -> None:
    slow_a = start_upstream(Application([(r"/(.*)", SlowHandler)], delay=1.0))
    slow_b = start_upstream(Application([(r"/(.*)", SlowHandler)], delay=1.0))
    gw = await start_gateway(config(slow_a.url, slow_b.url, parts="""
          - {name: a, upstream: users, path: "/a/{id}"}
          - {name: b, upstream: orders, path: "/b/{id}"}"""))
    started = time.perf_counter()
    resp = await http(gw.url + "/api/users/1/overview", headers=bearer("u-1"))
    elapsed = time.perf_counter() - started
    assert resp.code == 200
    assert json.loads(resp.body) == {"a": {"slow": True}, "b": {"slow": True}}
    assert elapsed < 1.6


@pytest.mark.timeout(seconds=10)
async def test_failed_slow_and_non_json_parts_are_null(backends, start_upstream, start_gateway, http) -> None:
    users, orders = backends
    slow = start_upstream(Application([(r"/(.*)", SlowHandler)], delay=3.0))
    html = start_upstream(Application([(r"/(.*)", NotJsonHandler)]))
    dead = start_upstream(Application([]))
    dead_url = dead.url
    await dead.close()
    gw = await start_gateway(config(users.url, orders.url, extra=f"""
      slow: {{targets: ["{slow.url}"], request_timeout: 5}}
      html: {{targets: ["{html.url}"]}}
      dead: {{targets: ["{dead_url}"]}}""", route_extra="timeout: 0.5", parts="""
          - {name: user, upstream: users, path: "/users/{id}"}
          - {name: slow, upstream: slow, path: "/s/{id}"}
          - {name: html, upstream: html, path: "/h/{id}"}
          - {name: dead, upstream: dead, path: "/d/{id}"}"""))
    started = time.perf_counter()
    resp = await http(gw.url + "/api/users/9/overview", headers=bearer("u-1"))
    assert time.perf_counter() - started < 1.5
    assert resp.code == 200
    assert resp.headers["X-Gateway-Completed"] == "false"
    body = json.loads(resp.body)
    assert body["user"]["id"] == "9"
    assert body["slow"] is None and body["html"] is None and body["dead"] is None


async def test_all_parts_failed_is_502(start_upstream, start_gateway, http) -> None:
    html = start_upstream(Application([(r"/(.*)", NotJsonHandler)]))
    gw = await start_gateway(config(html.url, html.url))
    resp = await http(gw.url + "/api/users/1/overview", headers=bearer("u-1"))
    assert resp.code == 502
    assert json.loads(resp.body)["error"] == "bad_gateway"


async def test_auth_and_methods_apply(backends, start_gateway, http) -> None:
    users, orders = backends
    gw = await start_gateway(config(users.url, orders.url, route_extra="scopes: [users:read]"))
    assert (await http(gw.url + "/api/users/1/overview")).code == 401
    assert (await http(gw.url + "/api/users/1/overview", headers=bearer("u-1", scopes="orders:read"))).code == 403
    assert (await http(gw.url + "/api/users/1/overview", headers=bearer("u-1", scopes="users:read"))).code == 200
    resp = await http(gw.url + "/api/users/1/overview", method="POST", body=b"{}", headers=bearer("u-1", scopes="users:read"))
    assert resp.code == 405
    assert resp.headers["Allow"] == "GET, HEAD"


def test_loader_refuses_a_part_naming_an_uncaptured_parameter() -> None:
    from gateway.config import ConfigError
    from gateway.loader import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config(config("http://127.0.0.1:1", "http://127.0.0.1:2", parts="""
          - {name: user, upstream: users, path: "/users/{uid}"}"""))
    assert err.value.problems == ["routes[0].aggregate[0].path: '{uid}' is not captured by the route's path"]
