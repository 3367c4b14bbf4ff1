"""`server.processes: 2` on a real child process: two workers on one port, shared metrics,
signals forwarded to every worker, exit 0 after both drained, metrics directory removed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.web import Application, RequestHandler

from tests.conftest import Fetch
from tests.support.gateway_process import GatewayProcess
from tests.support.wait import wait_for


def config(upstream: str, path: str = "/api") -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, processes: 2, drain_seconds: 5}}
    admin: {{host: 127.0.0.1, port: 0}}
    logging: {{level: info, format: text}}
    upstreams:
      backend: {{targets: ["{upstream}"]}}
    routes:
      - {{name: api, path: {path}, upstream: backend}}
    """


class Slow(RequestHandler):
    def initialize(self, slow_started: list[bool] | None = None) -> None:
        self.slow_started = slow_started

    async def get(self, *_: str) -> None:
        if self.get_argument("slow", None):
            if self.slow_started is not None:
                self.slow_started.append(True)
            await asyncio.sleep(1.0)
        self.finish("ok")


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


async def pids_answering(http: Fetch, url: str, want: int, tries: int = 30) -> set[int]:
    """Worker pids seen answering ``/-/upstreams`` on the shared admin port, over new connections."""
    seen: set[int] = set()
    for _ in range(tries):
        answers = await asyncio.gather(*(http(url + "/-/upstreams") for _ in range(10)))
        seen.update(json.loads(a.body)["pid"] for a in answers)
        if len(seen) >= want:
            break
        await asyncio.sleep(0.02)
    return seen


def requests_total(text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "gateway_requests_total")


@pytest.mark.timeout(seconds=60)
async def test_two_workers_share_one_port_reload_together_and_stop_together(
        start_upstream: Any, http: Fetch, tmp_path: Path) -> None:
    slow_started: list[bool] = []
    upstream = start_upstream(Application([(r".*", Slow, {"slow_started": slow_started})]))
    temp = tmp_path / "tmp"
    temp.mkdir()
    gateway = GatewayProcess(tmp_path / "gateway.yaml", env={"TMPDIR": str(temp)})
    gateway.write_config(config(upstream.url))
    try:
        await gateway.start()
        await gateway.wait_for_log(r"worker \d+ serving", count=2)
        workers = {int(m.group(1)) for m in map(re.compile(r"worker (\d+) serving").search, gateway.stderr) if m}
        assert len(workers) == 2
        assert {parent_of(pid) for pid in workers} == {gateway.pid}
        assert [p.name for p in temp.iterdir()][0].startswith("gateway-metrics-")

        # Both answer on the shared listeners.
        assert await pids_answering(http, gateway.admin_url, 2) == workers
        answers = await asyncio.gather(*(http(gateway.url + "/api/x") for _ in range(40)))
        assert [a.code for a in answers] == [200] * 40
        # Any worker's scrape counts the requests of both (prometheus_client's multi-process collector).
        # A client may read the last byte a moment before the worker counts the request: settle first.
        for _ in range(100):
            if requests_total((await http(gateway.admin_url + "/-/metrics")).body.decode()) == 40:
                break
            await asyncio.sleep(0.02)
        for _ in range(4):
            assert requests_total((await http(gateway.admin_url + "/-/metrics")).body.decode()) == 40

        # SIGHUP to the supervisor reaches every worker.
        gateway.write_config(config(upstream.url, path="/v2"))
        gateway.signal(signal.SIGHUP)
        await gateway.wait_for_log("configuration reloaded", count=2)
        answers = await asyncio.gather(*(http(gateway.url + "/v2/x") for _ in range(20)))
        assert [a.code for a in answers] == [200] * 20
        # POST /-/reload on one worker is passed on to all of them.
        gateway.write_config(config(upstream.url, path="/v3"))
        response = await http(gateway.admin_url + "/-/reload", method="POST", body=b"")
        assert json.loads(response.body)["status"] == "reloaded"
        await gateway.wait_for_log("configuration reloaded", count=5)  # that worker twice, the other once
        answers = await asyncio.gather(*(http(gateway.url + "/v3/x") for _ in range(20)))
        assert [a.code for a in answers] == [200] * 20

        # SIGTERM: both drain (a slow request finishes), the supervisor exits 0 and cleans up.
        slow = asyncio.ensure_future(http(gateway.url + "/v3/x?slow=1"))
        await wait_for(lambda: slow_started, 10.0)  # in flight through a worker before the SIGTERM
        gateway.signal(signal.SIGTERM)
        assert (await slow).code == 200
        assert await gateway.wait(15) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists()
        assert list(temp.iterdir()) == []
        assert "all workers stopped" in gateway.stderr[-1]
    finally:
        gateway.kill()


@pytest.mark.timeout(seconds=60)
async def test_a_crashed_worker_is_replaced(start_upstream: Any, http: Fetch, tmp_path: Path) -> None:
    upstream = start_upstream(Application([(r".*", Slow)]))
    gateway = GatewayProcess(tmp_path / "gateway.yaml")
    gateway.write_config(config(upstream.url))
    try:
        await gateway.start()
        await gateway.wait_for_log(r"worker \d+ serving", count=2)
        victim = int((await gateway.wait_for_log(r"worker (\d+) serving")).group(1))
        os.kill(victim, signal.SIGKILL)
        await gateway.wait_for_log(rf"worker {victim} exited with -9; starting another")
        await gateway.wait_for_log(r"worker \d+ serving", count=3)
        answers = await asyncio.gather(*(http(gateway.url + "/api/x") for _ in range(20)))
        assert [a.code for a in answers] == [200] * 20
        assert await gateway.stop() == 0
    finally:
        gateway.kill()
