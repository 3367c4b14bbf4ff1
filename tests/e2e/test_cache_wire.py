"""The response cache on the wire (SPEC §8), memory store: hits, misses, Cache-Control both ways,
Vary, per-subject entries, coalescing, bounds, and hostile input.

Every test runs a real gateway in front of a real Tornado upstream (:class:`Origin`) that
counts the requests reaching it and answers with the headers the test asks for, so "served
without an upstream call" is asserted by the count. tests/e2e/test_cache_redis.py runs the
shared store.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from gateway.cache.store import MemoryStore
from tests.support.cache_origin import Origin, cache_counts, config, serve, wait_for
from tests.support.garbage import cyclic_garbage
from tests.support.raw import AccessLines
from tests.support.tokens import bearer


def store_of(gateway: Any) -> MemoryStore:
    store = gateway.holder.runtime.cache_store
    assert isinstance(store, MemoryStore)
    return store


# --- hits and misses ---

async def test_a_second_get_is_a_hit_served_without_the_upstream(start_upstream, start_gateway, http) -> None:
    origin = Origin([("Content-Type", "text/plain"), ("ETag", '"v1"'), ("Link", "</a>"), ("Link", "</b>")])
    gateway = await serve(start_upstream, start_gateway, origin)
    lines = AccessLines(gateway)
    first = await http(gateway.url + "/pages/a?x=1", headers={"X-Request-Id": "first"})
    second = await http(gateway.url + "/pages/a?x=1", headers={"X-Request-Id": "second"})
    assert (first.code, first.body, first.headers["X-Cache"]) == (200, b"call 1 /pages/a?x=1", "MISS")
    assert (second.code, second.body, second.headers["X-Cache"]) == (200, b"call 1 /pages/a?x=1", "HIT")
    assert "Age" not in first.headers
    assert second.headers["Age"] == "0"
    assert second.headers["Content-Length"] == str(len(b"call 1 /pages/a?x=1"))
    assert second.headers["ETag"] == '"v1"' and second.headers["Content-Type"] == "text/plain"
    assert second.headers.get_list("Link") == ["</a>", "</b>"]
    assert second.headers["X-Request-Id"] == "second"  # stamped per request, not kept in the entry
    assert origin.calls == 1
    entries = lines.by_id()
    assert (entries["first"][0]["upstream"], entries["first"][0]["target"]) == ("origin", origin_target(gateway))
    assert (entries["second"][0]["upstream"], entries["second"][0]["target"], entries["second"][0]["status"]) == (
        None, "cache", 200)
    assert cache_counts(gateway) == {"miss": 1.0, "hit": 1.0}


def origin_target(gateway: Any) -> str:
    return gateway.holder.runtime.config.upstreams["origin"].targets[0].url


async def test_age_grows_and_an_entry_expires_after_ttl_seconds(start_upstream, start_gateway, http) -> None:
    origin = Origin([("Age", "5")])  # the upstream's own Age starts the entry's
    gateway = await serve(start_upstream, start_gateway, origin, cache="{ttl_seconds: 7.5}")
    await http(gateway.url + "/pages/a")
    store = store_of(gateway)
    assert (await http(gateway.url + "/pages/a")).headers["Age"] == "5"
    await asyncio.sleep(1.1)
    assert (await http(gateway.url + "/pages/a")).headers["Age"] == "6"
    await asyncio.sleep(1.5)  # past 7.5 - 5 = 2.5 s of freshness
    late = await http(gateway.url + "/pages/a")
    assert (late.headers["X-Cache"], late.body, late.headers["Age"]) == ("MISS", b"call 2 /pages/a", "5")
    assert origin.calls == 2 and len(store) == 1


async def test_head_is_served_from_the_get_entry_and_a_head_miss_keeps_nothing(
        start_upstream, start_gateway, http) -> None:
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin)
    head_miss = await http(gateway.url + "/pages/h", method="HEAD")
    assert (head_miss.code, head_miss.headers["X-Cache"], head_miss.body) == (200, "MISS", b"")
    assert (await http(gateway.url + "/pages/h")).headers["X-Cache"] == "MISS"  # the HEAD kept nothing
    head_hit = await http(gateway.url + "/pages/h", method="HEAD")
    assert (head_hit.code, head_hit.headers["X-Cache"], head_hit.body) == (200, "HIT", b"")
    assert head_hit.headers["Content-Length"] == str(len(b"call 2 /pages/h"))
    assert origin.calls == 2


async def test_the_key_is_path_and_query_byte_for_byte(start_upstream, start_gateway, http) -> None:
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin)
    for uri in ("/pages/a?x=1&y=2", "/pages/a?y=2&x=1", "/pages/a", "/pages/b?x=1&y=2"):
        assert (await http(gateway.url + uri)).headers["X-Cache"] == "MISS", uri
    assert (await http(gateway.url + "/pages/a?")).headers["X-Cache"] == "HIT"  # forwarded as /pages/a
    assert origin.calls == 4
    assert (await http(gateway.url + "/pages/a?y=2&x=1")).body == b"call 2 /pages/a?y=2&x=1"


async def test_other_methods_and_statuses_are_not_cached(start_upstream, start_gateway, http) -> None:
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin)
    post = await http(gateway.url + "/pages/a", method="POST", body=b"{}")
    assert post.code == 200 and "X-Cache" not in post.headers
    get_with_body = await http(gateway.url + "/pages/a", method="GET", body=b"x", allow_nonstandard_methods=True)
    assert "X-Cache" not in get_with_body.headers
    origin.status = 404
    assert (await http(gateway.url + "/pages/a")).headers["X-Cache"] == "MISS"
    assert (await http(gateway.url + "/pages/a")).headers["X-Cache"] == "MISS"  # a 404 is not kept
    assert origin.calls == 4
    assert cache_counts(gateway) == {"miss": 2.0}  # POSTs never reach the cache


# --- Cache-Control both ways ---

@pytest.mark.parametrize(("headers", "kept"), [
    ([("Cache-Control", "no-store")], False),
    ([("Cache-Control", "no-cache")], False),
    ([("Cache-Control", "private, max-age=60")], False),  # an anonymous route's entry serves everyone
    ([("Cache-Control", "max-age=0")], False),
    ([("Cache-Control", "max-age=ten")], False),
    ([("Cache-Control", "public, max-age=60")], True),
    ([("Cache-Control", "s-maxage=0, max-age=60")], False),  # s-maxage wins
    ([("Cache-Control", "s-maxage=60, max-age=0")], True),
    ([("Set-Cookie", "session=1")], False),
    ([("Vary", "*")], False),
    ([("Vary", ", ".join(f"X-H{i}" for i in range(40)))], False),  # a hostile Vary: too many variants
    ([("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")], False),
    ([("Expires", "garbage")], False),
    ([], True),
])
async def test_the_upstreams_cache_control_is_honoured(start_upstream, start_gateway, http, headers, kept) -> None:
    origin = Origin(headers)
    gateway = await serve(start_upstream, start_gateway, origin)
    await http(gateway.url + "/pages/a")
    second = await http(gateway.url + "/pages/a")
    assert second.headers["X-Cache"] == ("HIT" if kept else "MISS")
    assert origin.calls == (1 if kept else 2)


async def test_max_age_is_capped_by_ttl_seconds(start_upstream, start_gateway, http) -> None:
    origin = Origin([("Cache-Control", "max-age=3600")])
    gateway = await serve(start_upstream, start_gateway, origin, cache="{ttl_seconds: 0.5}")
    await http(gateway.url + "/pages/a")
    assert (await http(gateway.url + "/pages/a")).headers["X-Cache"] == "HIT"
    await asyncio.sleep(0.6)
    assert (await http(gateway.url + "/pages/a")).headers["X-Cache"] == "MISS"


async def test_a_requests_no_store_bypasses_and_no_cache_refreshes(start_upstream, start_gateway, http) -> None:
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin)
    bypass = await http(gateway.url + "/pages/a", headers={"Cache-Control": "no-store"})
    assert (bypass.headers["X-Cache"], bypass.body) == ("BYPASS", b"call 1 /pages/a")
    assert (await http(gateway.url + "/pages/a")).headers["X-Cache"] == "MISS"  # the bypass kept nothing
    assert (await http(gateway.url + "/pages/a")).body == b"call 2 /pages/a"
    refreshed = await http(gateway.url + "/pages/a", headers={"Cache-Control": "no-cache"})
    assert (refreshed.headers["X-Cache"], refreshed.body) == ("MISS", b"call 3 /pages/a")
    after = await http(gateway.url + "/pages/a")
    assert (after.headers["X-Cache"], after.body) == ("HIT", b"call 3 /pages/a")  # the entry was refreshed
    pragma = await http(gateway.url + "/pages/a", headers={"Pragma": "no-cache"})
    assert (pragma.headers["X-Cache"], pragma.body) == ("MISS", b"call 4 /pages/a")
    assert (await http(gateway.url + "/pages/a", headers={"Cache-Control": "max-age=0"})).body == b"call 5 /pages/a"
    assert (await http(gateway.url + "/pages/a", headers={"Cache-Control": "max-age=60"})).body == b"call 5 /pages/a"
    assert cache_counts(gateway) == {"bypass": 1.0, "miss": 4.0, "hit": 3.0}


async def test_an_upstreams_x_cache_is_replaced_by_the_gateways(start_upstream, start_gateway, http) -> None:
    origin = Origin([("X-Cache", "HIT from cdn")])
    gateway = await serve(start_upstream, start_gateway, origin)
    assert (await http(gateway.url + "/pages/a")).headers.get_list("X-Cache") == ["MISS"]
    assert (await http(gateway.url + "/pages/a")).headers.get_list("X-Cache") == ["HIT"]


# --- Vary and subjects ---

async def test_vary_keeps_one_entry_per_value(start_upstream, start_gateway, http) -> None:
    origin = Origin([("Vary", "Accept-Language")])
    gateway = await serve(start_upstream, start_gateway, origin)
    de = await http(gateway.url + "/pages/a", headers={"Accept-Language": "de"})
    fr = await http(gateway.url + "/pages/a", headers={"Accept-Language": "fr"})
    none = await http(gateway.url + "/pages/a")
    assert [r.headers["X-Cache"] for r in (de, fr, none)] == ["MISS", "MISS", "MISS"]
    for language, body in (("de", b"call 1 /pages/a"), ("fr", b"call 2 /pages/a"), (None, b"call 3 /pages/a")):
        again = await http(gateway.url + "/pages/a", headers={"Accept-Language": language} if language else {})
        assert (again.headers["X-Cache"], again.body) == ("HIT", body)
    assert origin.calls == 3


async def test_each_subject_has_its_own_entries_unless_shared(start_upstream, start_gateway, http) -> None:
    origin = Origin([("Cache-Control", "private, max-age=60")])  # private: kept in a subject's own entry
    gateway = await serve(start_upstream, start_gateway, origin, auth="required")
    alice = await http(gateway.url + "/pages/me", headers=bearer("alice"))
    bob = await http(gateway.url + "/pages/me", headers=bearer("bob"))
    alice_again = await http(gateway.url + "/pages/me", headers=bearer("alice"))
    bob_again = await http(gateway.url + "/pages/me", headers=bearer("bob"))
    assert [r.headers["X-Cache"] for r in (alice, bob, alice_again, bob_again)] == ["MISS", "MISS", "HIT", "HIT"]
    assert (alice_again.body, bob_again.body) == (b"call 1 /pages/me", b"call 2 /pages/me")
    assert (await http(gateway.url + "/pages/me")).code == 401  # auth still runs before the cache


async def test_a_shared_route_serves_one_entry_to_every_caller_but_never_a_private_one(
        start_upstream, start_gateway, http) -> None:
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin, auth="required", cache="{shared: true}")
    await http(gateway.url + "/pages/all", headers=bearer("alice"))
    bob = await http(gateway.url + "/pages/all", headers=bearer("bob"))
    assert (bob.headers["X-Cache"], bob.body) == ("HIT", b"call 1 /pages/all")
    origin.headers = [("Cache-Control", "private")]
    await http(gateway.url + "/pages/private", headers=bearer("alice"))
    assert (await http(gateway.url + "/pages/private", headers=bearer("alice"))).headers["X-Cache"] == "MISS"


async def test_an_authorized_request_on_a_route_without_auth_bypasses(start_upstream, start_gateway, http) -> None:
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin)
    await http(gateway.url + "/pages/a")
    with_credentials = await http(gateway.url + "/pages/a", headers={"Authorization": "Basic dTpw"})
    assert (with_credentials.headers["X-Cache"], with_credentials.body) == ("BYPASS", b"call 2 /pages/a")


async def test_policy_steps_still_run_on_a_hit(start_upstream, start_gateway, http) -> None:
    origin = Origin()
    route_extra = "    rate_limit: {requests: 2, window_seconds: 60, key: ip}\n"
    gateway = await serve(start_upstream, start_gateway, origin, route_extra=route_extra)
    answers = [await http(gateway.url + "/pages/a") for _ in range(3)]
    assert [a.code for a in answers] == [200, 200, 429]
    assert answers[1].headers["X-Cache"] == "HIT" and answers[1].headers["RateLimit-Remaining"] == "0"
    assert "X-Cache" not in answers[2].headers
    assert origin.calls == 1


# --- coalescing ---

async def burst(url: str, count: int, headers: list[dict[str, str]] | None = None) -> list[HTTPResponse]:
    """``count`` GETs at once (the shared test client runs only 10 at a time)."""
    client = SimpleAsyncHTTPClient(force_instance=True, max_clients=count)
    try:
        return list(await asyncio.gather(*(
            client.fetch(url, raise_error=False, headers=headers[i] if headers else None) for i in range(count))))
    finally:
        client.close()

async def test_concurrent_misses_go_upstream_once(start_upstream, start_gateway, http) -> None:
    origin = Origin(delay=0.3)
    gateway = await serve(start_upstream, start_gateway, origin)
    answers = await burst(gateway.url + "/pages/slow", 20)
    assert origin.calls == 1
    assert {(a.code, a.body) for a in answers} == {(200, b"call 1 /pages/slow")}
    assert sorted(a.headers["X-Cache"] for a in answers) == ["HIT"] * 19 + ["MISS"]
    assert cache_counts(gateway) == {"miss": 1.0, "hit": 19.0}
    assert gateway.holder.runtime.plans["pages"].steps[-1].leaders == {}


async def test_waiters_go_upstream_themselves_when_the_leaders_answer_is_not_kept(
        start_upstream, start_gateway, http) -> None:
    origin = Origin([("Cache-Control", "no-store")], delay=0.3)
    gateway = await serve(start_upstream, start_gateway, origin)
    started = time.monotonic()
    answers = await burst(gateway.url + "/pages/slow", 20)
    assert {a.code for a in answers} == {200}
    assert sorted(a.body for a in answers) == sorted(f"call {n} /pages/slow".encode() for n in range(1, 21))
    assert origin.calls == 20
    assert time.monotonic() - started < 5.0  # let go at the leader's head, not after a wait timeout


async def test_waiters_take_the_leaders_answer_only_for_their_own_variant(
        start_upstream, start_gateway, http) -> None:
    origin = Origin([("Vary", "Accept-Language")], delay=0.3)
    gateway = await serve(start_upstream, start_gateway, origin)
    answers = await burst(gateway.url + "/pages/v", 4, [{"Accept-Language": lang} for lang in ("de", "de", "de", "fr")])
    assert origin.calls == 2
    bodies = [a.body for a in answers]
    assert bodies[0] == bodies[1] == bodies[2] and bodies[3] != bodies[0]


# --- bounds and hostile input ---

async def test_an_answer_over_max_entry_bytes_streams_through_uncached(start_upstream, start_gateway, http) -> None:
    declared = Origin(size=5000)
    gateway = await serve(start_upstream, start_gateway, declared, cache="{max_entry_bytes: 4096}")
    for _ in range(2):
        answer = await http(gateway.url + "/pages/big")
        assert (answer.code, len(answer.body), answer.headers["X-Cache"]) == (200, 5000, "MISS")
    assert declared.calls == 2
    chunked = Origin(size=5000, chunks=5)  # no Content-Length: found too large as it arrives
    gateway = await serve(start_upstream, start_gateway, chunked, cache="{max_entry_bytes: 4096}")
    for _ in range(2):
        answer = await http(gateway.url + "/pages/big")
        assert (answer.code, len(answer.body), answer.headers["X-Cache"]) == (200, 5000, "MISS")
    assert chunked.calls == 2
    assert len(store_of(gateway)) == 0


async def test_many_distinct_queries_stay_within_cache_max_bytes(start_upstream, start_gateway, http) -> None:
    origin = Origin(size=1000)
    gateway = await serve(start_upstream, start_gateway, origin, cache="{max_entry_bytes: 2048}",
                          extra="cache_max_bytes: 20000\n")
    store = store_of(gateway)
    for n in range(100):
        await http(gateway.url + f"/pages/q?n={n}")
        assert store.size_bytes <= 20000
    assert 10 <= len(store) <= 20
    assert (await http(gateway.url + "/pages/q?n=99")).headers["X-Cache"] == "HIT"  # the newest are kept
    assert (await http(gateway.url + "/pages/q?n=0")).headers["X-Cache"] == "MISS"  # the oldest went first


async def test_a_client_that_leaves_mid_answer_leaves_no_partial_entry(start_upstream, start_gateway, http) -> None:
    origin = Origin(size=4000, chunks=4, gap=0.2)
    gateway = await serve(start_upstream, start_gateway, origin)
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(f"GET /pages/gone HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode())
        await asyncio.get_running_loop().run_in_executor(None, sock.recv, 100)  # the head and a first chunk
        waiter = asyncio.ensure_future(http(gateway.url + "/pages/gone"))  # waits for the leader's answer
        await wait_for(lambda: gateway.holder.in_flight == 2)
        assert origin.calls == 1
    answer = await waiter  # the leader's client left: the waiter went upstream itself
    assert (answer.code, len(answer.body)) == (200, 4000)
    again = await http(gateway.url + "/pages/gone")
    assert (again.headers["X-Cache"], again.body) == ("HIT", answer.body)  # the whole answer, never the partial
    assert (origin.calls, origin.cut) == (2, 1)
    await wait_for(lambda: gateway.holder.in_flight == 0)


async def test_a_client_that_leaves_during_a_hit_is_not_an_error(start_upstream, start_gateway, http) -> None:
    origin = Origin(size=1024 * 1024)
    gateway = await serve(start_upstream, start_gateway, origin, cache="{max_entry_bytes: 2000000}")
    assert len((await http(gateway.url + "/pages/huge")).body) == 1024 * 1024
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /pages/huge HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode())
            await asyncio.get_running_loop().run_in_executor(None, sock.recv, 100)
    await wait_for(lambda: gateway.holder.in_flight == 0)
    assert (await http(gateway.url + "/pages/huge")).headers["X-Cache"] == "HIT"
    assert origin.calls == 1


async def test_a_reload_keeps_the_entries(start_upstream, start_gateway, http, tmp_path) -> None:
    origin = Origin()
    upstream = start_upstream(origin.app)
    path = tmp_path / "gateway.yaml"
    text = "server: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n" + config(upstream.url)
    path.write_text(text)
    from gateway.loader import load_config
    from gateway.server import GatewayServer

    gateway = GatewayServer(load_config(str(path)))
    await gateway.start()
    try:
        url = f"http://127.0.0.1:{gateway.port}"
        await http(url + "/pages/a")
        path.write_text(text.replace("ttl_seconds: 30", "ttl_seconds: 40"))
        await gateway.reload(str(path))
        assert (await http(url + "/pages/a")).headers["X-Cache"] == "HIT"
    finally:
        await gateway.shutdown()


async def test_a_hit_gets_the_routes_response_rules_and_cors_like_a_miss(start_upstream, start_gateway, http) -> None:
    origin = Origin([("X-Internal", "secret"), ("Cache-Control", "max-age=60")])
    route_extra = ("    response_headers: {set: {X-Served-By: gateway}, remove: [X-Internal]}\n"
                   "    cors: {allow_origins: ['https://app.example']}\n")
    gateway = await serve(start_upstream, start_gateway, origin, route_extra=route_extra)
    miss = await http(gateway.url + "/pages/a", headers={"Origin": "https://app.example"})
    hit = await http(gateway.url + "/pages/a", headers={"Origin": "https://app.example"})
    for answer in (miss, hit):
        assert "X-Internal" not in answer.headers
        assert answer.headers["X-Served-By"] == "gateway"
        assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert answer.headers["Cache-Control"] == "max-age=60"
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")


async def test_misses_and_hits_leave_no_cyclic_garbage(start_upstream, start_gateway) -> None:
    """The exchange holds the handler's relay callbacks while a miss is relayed: they are let go
    when the request ends, so reference counting frees every request of a cache route."""
    origin = Origin()
    gateway = await serve(start_upstream, start_gateway, origin)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)

    async def one(query: str) -> str:
        writer.write(f"GET /pages/g?{query} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
        fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
        await reader.readexactly(int(fields["Content-Length"]))
        return fields["X-Cache"]

    try:
        for n in range(3):
            await one(f"warm={n}")
            await one(f"warm={n}")

        async def twenty() -> list[str]:
            return [await one(f"n={n // 2}") for n in range(20)]  # each query a miss, then a hit

        seen, garbage = await cyclic_garbage(twenty)
    finally:
        writer.close()
        await writer.wait_closed()
    assert seen == ["MISS", "HIT"] * 10
    assert garbage == []
