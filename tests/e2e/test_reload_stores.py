"""A reload that replaces a store (here the Redis rate-limit store: fail_open changed) closes the old
one only once the requests admitted with it are over: a hit in flight across the reload is answered
from Redis, not cut (503 with fail_open false). Found by `make soak`. A real redis-server, paused
with CLIENT PAUSE so that the hit is in flight while the reload happens."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from tornado.web import Application, RequestHandler

pytest_plugins = ["tests.support.redis_server"]
pytestmark = pytest.mark.redis

CONFIG = """
server: {{host: 127.0.0.1, port: 0, drain_seconds: 5}}
admin: {{host: 127.0.0.1, port: 0}}
rate_limit_store: {redis}
rate_limit_fail_open: {fail_open}
upstreams:
  up: {{targets: ["{url}"]}}
routes:
  - {{name: all, path: /, upstream: up, auth: none, rate_limit: {{requests: 1000, window_seconds: 60, key: ip}}}}
"""


class Hello(RequestHandler):
    def get(self) -> None:
        self.write(b"hello")


async def test_a_hit_in_flight_across_a_reload_that_replaces_the_store_is_answered(
        start_upstream: Any, start_gateway: Any, http: Any, redis_url: str, tmp_path: Path) -> None:
    url = start_upstream(Application([("/.*", Hello)])).url
    gw = await start_gateway(CONFIG.format(redis=redis_url, fail_open="false", url=url))
    assert (await http(f"{gw.url}/warm")).code == 200  # the store's connection is made
    replacement = tmp_path / "gateway.yaml"
    replacement.write_text(CONFIG.format(redis=redis_url, fail_open="true", url=url))
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "300", "ALL")  # under the store's 0.5 s timeout
        in_flight = asyncio.ensure_future(http(f"{gw.url}/during"))
        await asyncio.sleep(0.1)  # the request's hit is waiting on the paused Redis
        await gw.reload(str(replacement))
        answer = await in_flight
    finally:
        await admin.aclose()
    assert (answer.code, answer.body) == (200, b"hello")
    assert (await http(f"{gw.url}/after")).code == 200  # served by the new store
