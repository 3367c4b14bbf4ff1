"""The example plugins shipped in conf/plugins/ (SPEC §7), through a running gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.web import Application, RequestHandler

from gateway.config import ConfigError

PLUGINS = Path(__file__).resolve().parents[2] / "conf" / "plugins"


class Echo(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Served-By", "the-upstream")
        self.finish(json.dumps(dict(self.request.headers)))


def config(upstream: str, tenant: str = "{}", stamp: str = "{headers: {X-Served-By: edge-1}}") -> str:
    return f"""
    upstreams: {{up: {{targets: ["{upstream}"]}}, dead: {{targets: ["http://127.0.0.1:9"]}}}}
    plugins:
      - {{name: tenant, class: "{PLUGINS}/require_tenant.py:RequireTenant", config: {tenant}}}
      - {{name: stamp, class: "{PLUGINS}/stamp.py:Stamp", config: {stamp}}}
    routes:
      - {{name: orders, path: /orders, upstream: up, plugins: [tenant, stamp]}}
      - {{name: down, path: /down, upstream: dead, plugins: [stamp]}}
    """


@pytest.fixture
def gateway(io_loop: Any, start_upstream: Any, start_gateway: Any) -> Any:
    up = start_upstream(Application([(r"/orders.*", Echo)]))
    return io_loop.run_sync(lambda: start_gateway(config(up.url)))


async def test_require_tenant_refuses_a_request_without_the_header(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/orders")
    assert resp.code == 400
    assert json.loads(resp.body) == {"error": "missing_tenant", "message": "X-Tenant is required", "status": 400,
                                     "request_id": resp.headers["X-Request-Id"]}
    assert "X-Tenant-Served" not in resp.headers
    # stamp comes after tenant in the route's list: the request never reached it, so neither
    # is its on_response due on this answer
    assert "X-Served-By" not in resp.headers


async def test_require_tenant_passes_the_tenant_on_and_back(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/orders", headers={"X-Tenant": "ACME"})
    assert resp.code == 200
    seen = json.loads(resp.body)
    assert (seen["X-Tenant"], seen["X-Tenant-Id"]) == ("ACME", "acme")
    assert resp.headers["X-Tenant-Served"] == "acme"
    assert resp.headers.get_list("X-Served-By") == ["edge-1"]  # the upstream's own is replaced


async def test_stamp_also_stamps_the_gateways_own_answers(gateway: Any, http: Any) -> None:
    resp = await http(gateway.url + "/down")
    assert resp.code == 502
    assert resp.headers["X-Served-By"] == "edge-1"


async def test_stamp_only_on_listed_statuses(io_loop: Any, start_upstream: Any, start_gateway: Any, http: Any) -> None:
    up = start_upstream(Application([(r"/orders.*", Echo)]))
    gw = await start_gateway(config(up.url, stamp="{headers: {X-Served-By: edge-1}, statuses: [200]}"))
    assert "X-Served-By" not in (await http(gw.url + "/down")).headers
    assert (await http(gw.url + "/orders", headers={"X-Tenant": "a"})).headers["X-Served-By"] == "edge-1"


@pytest.mark.parametrize(("tenant", "stamp", "problem"), [
    ("{header: ''}", "{headers: {A: b}}", "plugins[0].config: RequireTenant refused its config: "
                                         "ValueError: header must be a non-empty string"),
    ("{hedaer: X}", "{headers: {A: b}}", "plugins[0].config: RequireTenant refused its config: "
                                        "ValueError: unknown key(s): hedaer"),
    ("{}", "{}", "plugins[1].config: Stamp refused its config: KeyError: 'headers'"),
    ("{}", "{headers: {A: b}, statuses: ok}", "plugins[1].config: Stamp refused its config: "
                                             "ValueError: statuses must be a list of status codes"),
])
async def test_example_plugins_refuse_a_bad_config(start_gateway: Any, tenant: str, stamp: str,
                                                   problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await start_gateway(config("http://127.0.0.1:9", tenant, stamp))
    assert caught.value.problems == [problem]
