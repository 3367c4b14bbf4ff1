"""The response cache on a real redis-server: shared by every instance, and a Redis that is down
is a miss, counted, never an error and never slow.

Two in-process gateways share one throwaway ``redis-server`` (tests/support/redis_server.py)
in front of a real upstream that counts what reaches it (tests/support/cache_origin.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from gateway.cache.redis_store import TIMEOUT_SECONDS
from tests.support.cache_origin import Origin, cache_counts, config, wait_for

if TYPE_CHECKING:  # imported by pytest_plugins below
    from tests.support.redis_server import RedisServer

pytest_plugins = ["tests.support.redis_server"]
pytestmark = pytest.mark.redis

LOGGER = "gateway.cache.redis_store"
# A request with Redis down pays at most the store's timeout per call (two: the lookup, no write) plus
# scheduling noise on a busy machine; never an upstream-sized wait.
DOWN_ANSWER_SECONDS = 2 * TIMEOUT_SECONDS + 1.0
# What a load balancer in front of both instances passes on: one Host (which is part of the key).
HOST = {"Host": "api.example.test"}


async def two_gateways(start_upstream: Any, start_gateway: Any, origin: Origin, redis_url: str,
                       cache: str = "{ttl_seconds: 30}") -> tuple[Any, Any]:
    upstream = start_upstream(origin.app)
    text = config(upstream.url, cache, extra=f"cache_store: {redis_url}\n")
    return await start_gateway(text), await start_gateway(text)


async def test_the_second_gateway_serves_the_first_ones_entry(
        start_upstream, start_gateway, http, redis_url) -> None:
    origin = Origin([("Vary", "Accept-Language"), ("Link", "</a>"), ("Link", "</b>")])
    first, second = await two_gateways(start_upstream, start_gateway, origin, redis_url)
    miss = await http(first.url + "/pages/a?x=1", headers={**HOST, "Accept-Language": "de"})
    assert miss.headers["X-Cache"] == "MISS"
    await asyncio.sleep(0.1)  # the entry is written to Redis after the answer
    hit = await http(second.url + "/pages/a?x=1", headers={**HOST, "Accept-Language": "de"})
    assert (hit.headers["X-Cache"], hit.body, hit.headers.get_list("Link")) == ("HIT", miss.body, ["</a>", "</b>"])
    other = await http(second.url + "/pages/a?x=1", headers={**HOST, "Accept-Language": "fr"})
    assert other.headers["X-Cache"] == "MISS"
    assert origin.calls == 2
    assert cache_counts(first) == {"miss": 1.0} and cache_counts(second) == {"hit": 1.0, "miss": 1.0}


async def test_redis_expires_the_entries(start_upstream, start_gateway, http, redis_url) -> None:
    origin = Origin()
    first, _ = await two_gateways(start_upstream, start_gateway, origin, redis_url, cache="{ttl_seconds: 0.5}")
    await http(first.url + "/pages/a", headers=HOST)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.sleep(0.1)
        keys = await client.keys("gateway:cache:*")
        assert len(keys) == 1 and 0 < await client.pttl(keys[0]) <= 500
        await asyncio.sleep(0.6)
        assert await client.keys("gateway:cache:*") == []
    finally:
        await client.aclose()
    assert (await http(first.url + "/pages/a", headers=HOST)).headers["X-Cache"] == "MISS"


async def test_garbage_in_redis_is_a_miss(start_upstream, start_gateway, http, redis_url) -> None:
    origin = Origin()
    first, _ = await two_gateways(start_upstream, start_gateway, origin, redis_url)
    await http(first.url + "/pages/a", headers=HOST)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await asyncio.sleep(0.1)
        for key in await client.keys("gateway:cache:*"):
            await client.set(key, b"GWC1\xff\xff\xff\xffnot a record")
    finally:
        await client.aclose()
    answer = await http(first.url + "/pages/a", headers=HOST)
    assert (answer.code, answer.headers["X-Cache"], answer.body) == (200, "MISS", b"call 2 /pages/a")


async def test_a_redis_that_is_down_is_a_counted_miss_and_comes_back(
        start_upstream, start_gateway, http, redis_server: RedisServer, caplog) -> None:
    origin = Origin()
    first, second = await two_gateways(start_upstream, start_gateway, origin, redis_server.url)
    await http(first.url + "/pages/a", headers=HOST)
    await asyncio.sleep(0.1)
    assert (await http(second.url + "/pages/a", headers=HOST)).headers["X-Cache"] == "HIT"
    caplog.set_level(logging.INFO, logger=LOGGER)
    redis_server.kill()
    for _ in range(3):
        started = time.monotonic()
        answer = await http(first.url + "/pages/a", headers=HOST)
        assert time.monotonic() - started < DOWN_ANSWER_SECONDS
        assert (answer.code, answer.headers["X-Cache"]) == (200, "MISS")
    assert cache_counts(first) == {"miss": 1.0, "unavailable": 3.0}
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()  # once per outage

    redis_server.start()
    await http(first.url + "/pages/a", headers=HOST)  # a miss again (the new Redis is empty); it is written back
    await asyncio.sleep(0.1)
    again = await http(second.url + "/pages/a", headers=HOST)
    assert again.headers["X-Cache"] == "HIT"
    assert any(r.name == LOGGER and "answers again" in r.getMessage() for r in caplog.records)


async def test_a_hung_redis_costs_a_request_the_timeout_not_more(
        start_upstream, start_gateway, http, redis_server: RedisServer) -> None:
    origin = Origin()
    first, _ = await two_gateways(start_upstream, start_gateway, origin, redis_server.url)
    redis_server.pause()  # connections are accepted, nothing answers
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(http(first.url + f"/pages/{n}") for n in range(5)))
        assert time.monotonic() - started < DOWN_ANSWER_SECONDS
        assert {(a.code, a.headers["X-Cache"]) for a in answers} == {(200, "MISS")}
    finally:
        redis_server.resume()
    assert cache_counts(first) == {"unavailable": 5.0}


async def test_concurrent_misses_coalesce_per_instance(start_upstream, start_gateway, http, redis_url) -> None:
    origin = Origin(delay=0.3)
    first, second = await two_gateways(start_upstream, start_gateway, origin, redis_url)
    # Interleaved: the test client runs 10 at once, so both instances miss together.
    answers = await asyncio.gather(*(http(gateway.url + "/pages/slow", headers=HOST) for _ in range(10)
                                     for gateway in (first, second)))
    assert {(a.code, a.body) for a in answers} <= {(200, b"call 1 /pages/slow"), (200, b"call 2 /pages/slow")}
    assert origin.calls == 2  # one per instance


async def test_a_client_that_leaves_during_a_lookup_leaves_no_leader_behind(
        start_upstream, start_gateway, http, redis_server: RedisServer) -> None:
    origin = Origin()
    first, _ = await two_gateways(start_upstream, start_gateway, origin, redis_server.url)
    redis_server.pause()  # the lookup hangs until its timeout
    try:
        with socket.create_connection(("127.0.0.1", first.port)) as sock:
            sock.sendall(b"GET /pages/a HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
            await asyncio.sleep(0.05)
        await wait_for(lambda: first.holder.in_flight == 0)
        await asyncio.sleep(TIMEOUT_SECONDS + 0.1)  # the lookup gave up after the client left
    finally:
        redis_server.resume()
    assert first.holder.runtime.plans["pages"].steps[-1].leaders == {}
    started = time.monotonic()
    answer = await http(first.url + "/pages/a", headers=HOST)
    assert (answer.code, answer.headers["X-Cache"]) == (200, "MISS")
    assert time.monotonic() - started < DOWN_ANSWER_SECONDS  # no wait for a leader that would never answer
    assert origin.calls == 1
