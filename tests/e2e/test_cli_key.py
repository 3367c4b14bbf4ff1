"""``gateway key`` and conf/examples/api-keys.yaml (issue 17 item 1): a printed key works as printed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.web import Application

from gateway.cli import main
from gateway.demo import EchoHandler
from gateway.loader import load_config
from tests.support.gateway_process import ROOT, GatewayProcess


def test_key_prints_a_key_and_its_consumer_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "--subject", "partner \"a\"", "--scope", "orders:read  orders:write"]) == 0
    key, line = capsys.readouterr().out.splitlines()
    assert len(key) == 43 and all(c.isalnum() or c in "-_" for c in key)
    entry = yaml.safe_load(line)
    assert entry == [{"subject": 'partner "a"', "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
                      "scopes": ["orders:read", "orders:write"]}]
    assert main(["key", "--subject", "b"]) == 0
    other, line = capsys.readouterr().out.splitlines()
    assert other != key and yaml.safe_load(line)[0]["scopes"] == []


@pytest.mark.parametrize("args, message", [
    (["key", "--subject", ""], "gateway key: --subject: must be non-empty, without control characters\n"),
    (["key", "--subject", "a\nb"], "gateway key: --subject: must be non-empty, without control characters\n"),
])
def test_key_mistakes_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)


def test_key_without_subject_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "key"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "the following arguments are required: --subject" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_printed_key_opens_a_route(start_upstream: Any, start_gateway: Any, http: Any) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "key", "--subject", "partner-z", "--scope",
                           "orders:read"], capture_output=True, text=True, timeout=30, check=True)
    key, line = done.stdout.splitlines()
    gw = await start_gateway(f"""
    auth:
      api_keys:
        claims_to_headers: {{sub: X-Consumer}}
        consumers:
        {line}
    upstreams: {{echo: {{targets: ["{echo.url}"]}}}}
    routes: [{{name: o, path: /o, upstream: echo, scopes: [orders:read]}}]
    """)
    resp = await http(gw.url + "/o", headers={"X-Api-Key": key})
    assert resp.code == 200 and json.loads(resp.body)["headers"]["X-Consumer"] == "partner-z"
    assert (await http(gw.url + "/o", headers={"X-Api-Key": key[:-1]})).code == 401


def test_the_example_loads_with_its_defaults() -> None:
    config = load_config(str(ROOT / "conf" / "examples" / "api-keys.yaml"), environ={})
    keys = config.auth.api_keys
    assert keys is not None
    assert [c.subject for c in keys.consumers] == ["partner-a", "partner-b"]
    assert keys.consumers[0].key_sha256 == hashlib.sha256(b"demo-key-partner-a-not-for-production").digest()


@pytest.mark.timeout(seconds=60)
async def test_the_example_serves_as_its_comments_say(tmp_path: Path, start_upstream: Any, http: Any) -> None:
    echo = start_upstream(Application([(r".*", EchoHandler)]))
    config = tmp_path / "api-keys.yaml"
    config.write_text((ROOT / "conf" / "examples" / "api-keys.yaml").read_text())
    process = GatewayProcess(config, env={"UPSTREAM_URL": echo.url, "GATEWAY_PORT": "0", "GATEWAY_ADMIN_PORT": "0",
                                          "PARTNER_B_KEY": "partner-b-key-from-the-environment"})
    await process.start()
    try:
        a = {"X-Api-Key": "demo-key-partner-a-not-for-production"}
        b = {"X-Api-Key": "partner-b-key-from-the-environment"}
        assert (await http(process.url + "/api/orders/")).code == 401
        resp = await http(process.url + "/api/orders/", headers=a)
        assert (resp.code, json.loads(resp.body)["headers"]["X-Consumer"]) == (200, "partner-a")
        assert (await http(process.url + "/api/orders/", headers=b)).code == 200
        assert (await http(process.url + "/api/orders/", headers={
            "X-Api-Key": "demo-key-partner-b-not-for-production"})).code == 401  # the environment's key won
        assert (await http(process.url + "/api/admin/", headers=b)).code == 403
        assert (await http(process.url + "/api/admin/", headers=a)).code == 200
        assert (await http(process.url + "/status")).code == 200
        assert await process.stop() == 0
    finally:
        process.kill()
