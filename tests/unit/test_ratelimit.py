"""gateway.policies.ratelimit: GCRA in the memory store over a stepped clock, the headers, the keys."""

from __future__ import annotations

import asyncio

import pytest
from tornado.httputil import HTTPHeaders

from gateway.errors import BadRequest
from gateway.policies.gcra import Decision, GcraRule, gcra_parameters
from gateway.policies.ratelimit import LimitKey, MemoryStore, build_store
from tests.support.clock import Clock

# (seconds since the first hit, expected allowed, remaining, reset_seconds, retry_after_seconds)
# for 3 requests per 6 seconds: T = 2 s, a burst of 3.
THREE_PER_SIX = [
    (0.0, True, 2, 2.0, 0.0),
    (0.0, True, 1, 4.0, 0.0),
    (0.0, True, 0, 6.0, 0.0),
    (0.0, False, 0, 6.0, 2.0),  # the 4th in the burst waits one interval
    (1.0, False, 0, 5.0, 1.0),
    (1.999999, False, 0, 4.000001, 0.000001),
    (2.0, True, 0, 6.0, 0.0),  # one interval later, one more
    (2.0, False, 0, 6.0, 2.0),
    (5.0, True, 0, 5.0, 0.0),  # TAT was 8; the next hit fits, one slot still filling
    (11.0, True, 2, 2.0, 0.0),  # idle past the TAT: a whole budget again
]


@pytest.mark.parametrize("steps", [THREE_PER_SIX], ids=["3-per-6s"])
async def test_memory_store_over_a_stepped_clock(io_loop, steps):
    clock = Clock()
    start = clock.now
    store = MemoryStore(clock)
    for offset, allowed, remaining, reset, retry in steps:
        clock.now = start + offset
        decision = await store.hit("k", GcraRule(3, 6.0))
        assert decision == Decision(allowed, 3, remaining, reset, retry), f"at +{offset}s"


@pytest.mark.parametrize(
    ("limit", "window", "burst_allowed", "then_every"),
    [
        (1, 1.0, 1, 1.0),
        (5, 1.0, 5, 0.2),
        (10, 0.1, 10, 0.01),
        (3, 1.0, 3, 0.333334),  # T rounds up to a whole microsecond
        (100, 60.0, 100, 0.6),
    ],
)
async def test_memory_store_burst_then_steady_rate(io_loop, limit, window, burst_allowed, then_every):
    clock = Clock()
    store = MemoryStore(clock)
    results = [(await store.hit("k", GcraRule(limit, window))).allowed for _ in range(limit + 5)]
    assert results == [True] * burst_allowed + [False] * 5
    clock.now += then_every
    assert (await store.hit("k", GcraRule(limit, window))).allowed is True
    assert (await store.hit("k", GcraRule(limit, window))).allowed is False


async def test_memory_store_keys_and_rules_are_independent(io_loop):
    clock = Clock()
    store = MemoryStore(clock)
    assert (await store.hit("a", GcraRule(1, 10.0))).allowed is True
    assert (await store.hit("a", GcraRule(1, 10.0))).allowed is False
    assert (await store.hit("b", GcraRule(1, 10.0))).allowed is True


async def test_memory_store_is_exact_under_concurrency(io_loop):
    store = MemoryStore(Clock())
    decisions = await asyncio.gather(*(store.hit("k", GcraRule(50, 60.0)) for _ in range(200)))
    assert sum(decision.allowed for decision in decisions) == 50
    assert sorted(decision.remaining for decision in decisions if decision.allowed) == list(range(50))


async def test_memory_store_sweeps_expired_keys(io_loop):
    clock = Clock()
    store = MemoryStore(clock, min_sweep_size=100)
    for i in range(99):
        await store.hit(f"old-{i}", GcraRule(1, 1.0))
    assert len(store) == 99
    clock.now += 1.0  # every old key's budget is whole again
    await store.hit("new-0", GcraRule(1, 1.0))  # the 100th key triggers a sweep
    assert len(store) == 1
    for i in range(1, 150):
        await store.hit(f"new-{i}", GcraRule(1, 1.0))
    # Live keys are never swept: 150 live, the next sweep waits until 200.
    assert len(store) == 150
    assert (await store.hit("new-0", GcraRule(1, 1.0))).allowed is False


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
async def test_an_impossible_rule_is_refused_when_built(io_loop, limit, window):
    with pytest.raises(ValueError, match="rate limit needs requests >= 1 and window_seconds > 0"):
        await MemoryStore().hit("k", GcraRule(limit, window))


@pytest.mark.parametrize(
    ("limit", "window", "interval", "burst"),
    [(1, 1.0, 1_000_000, 1_000_000), (3, 1.0, 333_334, 1_000_002), (50, 60.0, 1_200_000, 60_000_000),
     (10, 0.1, 10_000, 100_000), (2_000_000, 1.0, 1, 2_000_000)],
)
def test_gcra_parameters_are_whole_microseconds(limit, window, interval, burst):
    assert gcra_parameters(limit, window) == (interval, burst)


@pytest.mark.parametrize(
    ("decision", "headers"),
    [
        (Decision(True, 100, 99, 0.6, 0.0),
         {"RateLimit-Limit": "100", "RateLimit-Remaining": "99", "RateLimit-Reset": "1"}),
        (Decision(True, 3, 0, 6.0, 0.0),
         {"RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "6"}),
        (Decision(False, 3, 0, 5.000001, 0.000001),
         {"RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "6", "Retry-After": "1"}),
        (Decision(False, 10, 0, 60.0, 6.0),
         {"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "60", "Retry-After": "6"}),
        (Decision(True, 5, 5, 0.0, 0.0),
         {"RateLimit-Limit": "5", "RateLimit-Remaining": "5", "RateLimit-Reset": "0"}),
    ],
)
def test_decision_headers(decision, headers):
    assert decision.headers() == headers


API_KEY_DIGEST = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"  # sha256("secret")


@pytest.mark.parametrize(
    ("key", "subject", "headers", "expected"),
    [
        ("subject", "alice", {}, "orders:sub:alice"),
        ("subject", None, {}, "orders:ip:203.0.113.7"),
        ("subject", "", {}, "orders:ip:203.0.113.7"),
        ("ip", "alice", {}, "orders:ip:203.0.113.7"),
        ("header:X-Api-Key", "alice", {"X-Api-Key": "secret"}, f"orders:hdr:x-api-key:{API_KEY_DIGEST}"),
        ("header:X-Api-Key", None, {"x-api-key": "secret"}, f"orders:hdr:x-api-key:{API_KEY_DIGEST}"),
        ("header:x-api-key", None, {"X-API-KEY": "secret"}, f"orders:hdr:x-api-key:{API_KEY_DIGEST}"),
        ("header:X-Api-Key", "alice", {}, "orders:ip:203.0.113.7"),
        ("header:X-Api-Key", "alice", {"X-Api-Key": ""}, "orders:ip:203.0.113.7"),
    ],
)
def test_limit_key(key, subject, headers, expected):
    assert LimitKey("orders", key)(subject, "203.0.113.7", headers) == expected
    # The same from the request's own HTTPHeaders, as the proxy passes them.
    assert LimitKey("orders", key)(subject, "203.0.113.7", HTTPHeaders(headers)) == expected


def test_limit_key_separates_routes():
    assert LimitKey("a", "ip")(None, "10.0.0.1", {}) != LimitKey("b", "ip")(None, "10.0.0.1", {})


@pytest.mark.parametrize(
    ("key", "header"), [("subject", None), ("ip", None), ("header:X-Api-Key", "X-Api-Key")])
def test_limit_key_names_the_header_it_reads(key, header):
    assert LimitKey("orders", key).header == header


@pytest.mark.parametrize("key", ["cookie", "header:", "IP"])
def test_limit_key_refuses_an_unknown_kind_at_load(key):
    with pytest.raises(ValueError, match="unknown rate limit key"):
        LimitKey("orders", key)


@pytest.mark.parametrize(
    "lines",
    [
        [("X-Api-Key", "secret"), ("X-Api-Key", "other")],
        [("X-Api-Key", "secret"), ("x-api-key", "secret")],  # the same value twice is still two lines
        [("X-Api-Key", ""), ("X-API-KEY", "secret")],
    ],
)
def test_a_repeated_key_header_is_a_bad_request(lines):
    headers = HTTPHeaders()
    for name, value in lines:
        headers.add(name, value)
    with pytest.raises(BadRequest, match="the X-Api-Key header is repeated"):
        LimitKey("orders", "header:X-Api-Key")(None, "10.0.0.1", headers)


def test_a_repeated_header_the_key_does_not_read_is_no_concern():
    headers = HTTPHeaders()
    headers.add("X-Other", "a")
    headers.add("X-Other", "b")
    assert LimitKey("orders", "ip")(None, "10.0.0.1", headers) == "orders:ip:10.0.0.1"
    assert LimitKey("orders", "header:X-Api-Key")("alice", "10.0.0.1", headers) == "orders:ip:10.0.0.1"


async def test_build_store_memory(io_loop):
    store = build_store("memory", fail_open=True)
    assert isinstance(store, MemoryStore)
    await store.close()


@pytest.mark.parametrize("url", ["", "Memory", "http://127.0.0.1:6379", "redis"])
def test_build_store_refuses_unknown_urls(url):
    with pytest.raises(ValueError, match="unknown rate_limit_store"):
        build_store(url, fail_open=True)
