"""The cache's pure logic as tables: Cache-Control both ways, Vary, freshness, keys, records, the LRU store."""

from __future__ import annotations

import asyncio

import pytest
from tornado.httputil import HTTPHeaders

from gateway.cache import build_cache_store
from gateway.cache.control import (
    RequestDirectives,
    delta_seconds,
    freshness,
    parse_cache_control,
    request_directives,
    vary_names,
)
from gateway.cache.entry import Entry, Variants, decode, encode, primary_key, variant_key, vary_values
from gateway.cache.store import MemoryStore
from tests.support.clock import Clock


@pytest.mark.parametrize(("values", "expected"), [
    (["max-age=60"], {"max-age": "60"}),
    (["Max-Age=60, No-Store"], {"max-age": "60", "no-store": None}),
    (["public", "max-age=5"], {"public": None, "max-age": "5"}),  # two lines
    (['private="Set-Cookie, X-A", max-age=3'], {"private": "Set-Cookie, X-A", "max-age": "3"}),  # quoted comma
    (["max-age=60, max-age=60"], {"max-age": "60"}),  # repeated, same value
    (["max-age=60, max-age=0"], {"max-age": "!"}),  # repeated, different: a conflict
    (["max-age=60", "max-age=30"], {"max-age": "!"}),
    ([" , ,max-age = 7 ,"], {"max-age": "7"}),
    (["no-cache, \x00bad, a b"], {"no-cache": None}),  # garbage names skipped
    ([""], {}),
    (['s-maxage="10"'], {"s-maxage": "10"}),
])
def test_parse_cache_control(values, expected) -> None:
    assert parse_cache_control(values) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("60", 60), ("007", 7), ("99999999999", 2 ** 31), ("1" * 40, 2 ** 31),
    (None, None), ("", None), ("-1", None), ("1.5", None), ("ten", None), ("!", None), ("٣", None),
])
def test_delta_seconds(value, expected) -> None:
    assert delta_seconds(value) == expected


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, RequestDirectives()),
    ({"Cache-Control": "no-store"}, RequestDirectives(no_store=True)),
    ({"Cache-Control": "no-cache"}, RequestDirectives(no_cache=True)),
    ({"Cache-Control": "max-age=30"}, RequestDirectives(max_age=30)),
    ({"Cache-Control": "max-age=x"}, RequestDirectives(max_age=0)),  # malformed: revalidate
    ({"Pragma": "no-cache"}, RequestDirectives(no_cache=True)),
    ({"Pragma": "no-cache", "Cache-Control": "max-age=5"}, RequestDirectives(max_age=5)),  # RFC 9111 §5.4
    ({"Cache-Control": "only-if-cached, max-stale=5"}, RequestDirectives()),  # not read
])
def test_request_directives(headers, expected) -> None:
    assert request_directives(HTTPHeaders(headers)) == expected


def test_repeated_request_cache_control_lines_are_read_together() -> None:
    headers = HTTPHeaders()
    headers.add("Cache-Control", "max-age=10")
    headers.add("Cache-Control", "no-store")
    assert request_directives(headers) == RequestDirectives(no_store=True, max_age=10)


DATE = "Wed, 02 Dec 2026 08:00:00 GMT"


@pytest.mark.parametrize(("fields", "shared", "seconds", "reason"), [
    ([], True, 30.0, ""),
    ([("Cache-Control", "max-age=10")], True, 10.0, ""),
    ([("Cache-Control", "max-age=100")], True, 30.0, ""),  # capped by ttl_seconds
    ([("Cache-Control", "max-age=10, s-maxage=20")], True, 20.0, ""),  # s-maxage over max-age
    ([("Cache-Control", "max-age=20, s-maxage=0")], True, None, "stale"),
    ([("Cache-Control", "max-age=0")], True, None, "stale"),
    ([("Cache-Control", "max-age=10"), ("Age", "4")], True, 6.0, ""),
    ([("Cache-Control", "max-age=10"), ("Age", "10")], True, None, "stale"),
    ([("Age", "junk")], True, 30.0, ""),
    ([("Cache-Control", "max-age=-1")], True, None, "malformed freshness"),
    ([("Cache-Control", "max-age=5, max-age=50")], True, None, "malformed freshness"),
    ([("Cache-Control", "no-store, max-age=10")], True, None, "no-store"),
    ([("cache-control", "No-Cache")], False, None, "no-cache"),
    ([("Cache-Control", 'no-cache="Set-Cookie"')], True, None, "no-cache"),
    ([("Cache-Control", "private, max-age=10")], True, None, "private"),
    ([("Cache-Control", "private, max-age=10")], False, 10.0, ""),  # a subject's own entry
    ([("Set-Cookie", "a=1")], False, None, "set-cookie"),
    ([("Expires", "Wed, 02 Dec 2026 08:00:12 GMT"), ("Date", DATE)], True, 12.0, ""),
    ([("Expires", "Wed, 02 Dec 2026 07:59:00 GMT"), ("Date", DATE)], True, None, "stale"),
    ([("Expires", "0"), ("Date", DATE)], True, None, "malformed freshness"),
    ([("Expires", "Wed, 02 Dec 2026 08:10:00 GMT"), ("Date", DATE)], True, 30.0, ""),
    ([("Expires", "Wed, 02 Dec 2026 07:00:00 GMT"), ("Date", DATE), ("Cache-Control", "max-age=5")], True, 5.0, ""),
])
def test_freshness(fields, shared, seconds, reason) -> None:
    verdict = freshness(fields, 30.0, shared_entry=shared)
    assert (verdict.seconds, verdict.reason) == (seconds, reason)


@pytest.mark.parametrize(("fields", "expected"), [
    ([], ()),
    ([("Vary", "Accept-Language")], ("accept-language",)),
    ([("Vary", "b, A"), ("vary", "a, C")], ("a", "b", "c")),
    ([("Vary", " , ")], ()),
    ([("Vary", "*")], None),
    ([("Vary", "Accept, *")], None),
    ([("Vary", "bad name")], None),
    ([("Vary", ",".join(f"h{i}" for i in range(8)))], tuple(sorted(f"h{i}" for i in range(8)))),
    ([("Vary", ",".join(f"h{i}" for i in range(9)))], None),
    ([("Vary", ",".join(["same"] * 1000))], ("same",)),
])
def test_vary_names(fields, expected) -> None:
    assert vary_names(fields) == expected


def test_keys_separate_every_part_and_never_collide_by_concatenation() -> None:
    base = ("pages", "h", "/a", "x=1", None)
    variants = [
        base, ("other", "h", "/a", "x=1", None), ("pages", "h2", "/a", "x=1", None), ("pages", "h", "/b", "x=1", None),
        ("pages", "h", "/a", "x=2", None), ("pages", "h", "/a", "x=1", "alice"), ("pages", "h", "/a", "x=1", ""),
        ("pages", "h", "/a?x=1", "", None), ("pages", "h", "/a", "x=1", "null"),
    ]
    keys = [primary_key(*parts) for parts in variants]
    assert len(set(keys)) == len(keys)
    assert primary_key(*base) == primary_key(*base)
    assert all(key.startswith("gateway:cache:") and len(key) == len("gateway:cache:") + 64 for key in keys)
    primary = keys[0]
    assert len({variant_key(primary, ("de",)), variant_key(primary, ("fr",)), variant_key(primary, ("de", "")),
                variant_key(primary, ("de,",)), variant_key(keys[1], ("de",))}) == 5


def test_vary_values_join_repeated_lines_and_tell_absent_from_empty() -> None:
    headers = HTTPHeaders()
    headers.add("Accept", "a")
    headers.add("Accept", "b")
    headers.add("X-Empty", "")
    assert vary_values(headers, ("accept", "x-empty", "x-absent")) == ("a, b", "", "\0")


def test_records_round_trip_and_garbage_is_a_miss() -> None:
    entry = Entry((("Content-Type", "text/plain"), ("Link", "</a>"), ("Link", "</b>")), b"\x00\xffbody",
                  1000.5, 3, 1030.5, ("accept",), "gateway:cache:v:1")
    again = decode(encode(entry))
    assert isinstance(again, Entry)
    assert (again.fields, again.body, again.stored_at, again.initial_age, again.expires_at, again.vary,
            again.variant) == (entry.fields, entry.body, 1000.5, 3, 1030.5, ("accept",), "gateway:cache:v:1")
    names = decode(encode(Variants(("a", "b"))))
    assert isinstance(names, Variants) and names.names == ("a", "b")
    for garbage in (b"", b"GWC1", b"GWC1\x00\x00\x00\xffxx", b"GWC1\x00\x00\x00\x02{}", b"GWV1[1]", b"GWV1\xff",
                    b"hello", encode(entry)[:20]):
        assert decode(garbage) is None


def test_age_adds_the_time_kept_to_the_upstreams_age() -> None:
    entry = Entry((), b"", 100.0, 5, 200.0)
    assert [entry.age(now) for now in (100.0, 100.9, 112.2, 99.0)] == [5, 5, 17, 5]


def entry(size: int) -> Entry:
    return Entry((), b"x" * size, 0.0, 0, 1e12)


def test_memory_store_is_bounded_least_recently_used_first_out() -> None:
    clock = Clock(1000.0)
    store = MemoryStore(max_bytes=3 * entry(100).size, clock=clock)
    for key in ("a", "b", "c"):
        store.put_now(key, entry(100), 60)
    assert store.get_now("a") is not None  # a is now the most recently used
    store.put_now("d", entry(100), 60)
    assert [key for key in "abcd" if store.get_now(key) is not None] == ["a", "c", "d"]
    assert store.size_bytes == 3 * entry(100).size
    store.put_now("big", entry(10_000), 60)  # larger than the whole store: not kept, nothing evicted
    assert store.get_now("big") is None and len(store) == 3
    store.put_now("a", entry(200), 60)  # replaced: its old size is given back first
    assert store.size_bytes <= store.max_bytes and store.get_now("a") is not None


def test_memory_store_expires_records() -> None:
    clock = Clock(1000.0)
    store = MemoryStore(max_bytes=10_000, clock=clock)
    store.put_now("a", entry(10), 5)
    clock.advance(4.9)
    assert store.get_now("a") is not None
    clock.advance(0.1)
    assert store.get_now("a") is None
    assert (len(store), store.size_bytes) == (0, 0)


def test_build_cache_store_refuses_unknown_urls() -> None:
    assert isinstance(build_cache_store("memory", max_bytes=1024), MemoryStore)
    with pytest.raises(ValueError, match="unknown cache_store"):
        build_cache_store("memcached://x", max_bytes=1024)


def test_memory_store_coroutines() -> None:
    store = MemoryStore(max_bytes=10_000)
    asyncio.run(store.put("k", entry(1), 60))
    assert asyncio.run(store.get("k")) is not None
    asyncio.run(store.close())
    assert len(store) == 0


def test_only_a_route_with_cache_gets_the_step_and_last() -> None:
    from gateway.loader import parse_config
    from gateway.runtime import Runtime

    text = """
upstreams: {up: {targets: ["http://127.0.0.1:9"]}}
routes:
  - {name: plain, path: /plain, upstream: up, rate_limit: {requests: 5, window_seconds: 1, key: ip}}
  - {name: cached, path: /cached, upstream: up, rate_limit: {requests: 5, window_seconds: 1, key: ip}, cache: {}}
"""
    runtime = Runtime(parse_config(text))
    assert [step.name for step in runtime.plans["plain"].steps] == ["rate_limit", "body"]
    assert [step.name for step in runtime.plans["cached"].steps] == ["rate_limit", "body", "cache"]
    assert runtime.cache_store is None  # built by start(), in the running loop
