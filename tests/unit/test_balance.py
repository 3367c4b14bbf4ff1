"""Balancers (gateway.upstream.balance): smooth WRR sequences, least_conn, weighted random."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from itertools import groupby

import pytest

from gateway.upstream.balance import (
    BALANCERS,
    LeastConnections,
    RandomBalancer,
    SmoothRoundRobin,
    make_balancer,
)


@dataclass(eq=False)
class Peer:
    name: str
    weight: int = 1
    in_flight: int = 0


def peers(weights: list[int], in_flight: list[int] | None = None) -> list[Peer]:
    loads = in_flight or [0] * len(weights)
    return [Peer("abcdefgh"[i], w, n) for i, (w, n) in enumerate(zip(weights, loads, strict=True))]


def picks(balancer: object, candidates: list[Peer], n: int) -> str:
    return "".join(balancer.choose(candidates).name for _ in range(n))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([1], "aaaa"),
        ([1, 1, 1], "abcabcabc"),
        ([2, 1], "abaaba"),
        ([3, 1], "aabaaaba"),  # ties go to the first candidate, as in nginx
        ([5, 1, 1], "aabacaaaabacaa"),  # nginx's documented example
        ([1, 5, 1], "bbabcbbbbabcbb"),
        ([4, 2, 1], "abacabaabacaba"),
    ],
)
def test_smooth_round_robin_sequences(weights: list[int], expected: str) -> None:
    assert picks(SmoothRoundRobin(), peers(weights), len(expected)) == expected


@pytest.mark.parametrize(
    ("weights", "counts", "longest_run"),
    [
        ([5, 1, 1], {"a": 5000, "b": 1000, "c": 1000}, 4),
        ([1, 1, 1, 1, 1, 1, 1], {name: 1000 for name in "abcdefg"}, 1),
        ([3, 2, 2], {"a": 3000, "b": 2000, "c": 2000}, 2),
        ([6, 1], {"a": 6000, "b": 1000}, 6),
    ],
)
def test_smooth_round_robin_spread_over_7000_picks(
    weights: list[int], counts: dict[str, int], longest_run: int
) -> None:
    sequence = picks(SmoothRoundRobin(), peers(weights), 7000)
    assert Counter(sequence) == counts
    assert max(len(list(run)) for _, run in groupby(sequence)) == longest_run


def test_smooth_round_robin_skips_a_candidate_left_out() -> None:
    balancer = SmoothRoundRobin()
    a, b, c = peers([1, 1, 1])
    assert [balancer.choose([a, b, c]).name for _ in range(2)] == ["a", "b"]
    assert [balancer.choose([a, b]).name for _ in range(3)] == ["a", "b", "a"]
    assert [balancer.choose([a, b, c]).name for _ in range(3)] == ["c", "b", "c"]


@pytest.mark.parametrize(
    ("weights", "in_flight", "expected"),
    [
        ([1, 1, 1], [2, 0, 1], "b"),
        ([1, 1, 1], [0, 3, 3], "a"),
        ([1, 1, 1], [4, 4, 3], "c"),
        ([3, 1], [2, 1], "a"),  # 2/3 < 1/1: weights scale the load
        ([1, 3], [1, 2], "b"),
        ([5, 1], [9, 1], "b"),  # 9/5 > 1/1
        ([5, 1], [4, 1], "a"),  # 4/5 < 1/1
    ],
)
def test_least_conn_takes_the_lowest_load_per_weight(
    weights: list[int], in_flight: list[int], expected: str
) -> None:
    balancer = LeastConnections(random.Random(1))
    assert picks(balancer, peers(weights, in_flight), 50) == expected * 50


@pytest.mark.parametrize(
    ("weights", "in_flight", "shares"),
    [
        ([1, 1, 1], [0, 0, 7], {"a": 0.5, "b": 0.5}),
        ([3, 1], [0, 0], {"a": 0.75, "b": 0.25}),
        ([2, 1], [2, 1], {"a": 2 / 3, "b": 1 / 3}),  # 2/2 == 1/1: a tie, broken by weight
    ],
)
def test_least_conn_breaks_ties_at_random_by_weight(
    weights: list[int], in_flight: list[int], shares: dict[str, float]
) -> None:
    sequence = picks(LeastConnections(random.Random(42)), peers(weights, in_flight), 10000)
    counts = Counter(sequence)
    assert set(counts) == set(shares)
    for name, share in shares.items():
        assert counts[name] / 10000 == pytest.approx(share, abs=0.02)


def test_least_conn_follows_in_flight_as_it_changes() -> None:
    balancer = LeastConnections(random.Random(3))
    candidates = peers([1, 1, 1])
    chosen = []
    for _ in range(9):  # no request ends: each pick goes to the least loaded
        target = balancer.choose(candidates)
        target.in_flight += 1
        chosen.append(target.name)
    assert Counter(chosen) == {"a": 3, "b": 3, "c": 3}
    assert [p.in_flight for p in candidates] == [3, 3, 3]


@pytest.mark.parametrize(
    ("weights", "shares"),
    [
        ([1, 1], {"a": 0.5, "b": 0.5}),
        ([5, 1, 1], {"a": 5 / 7, "b": 1 / 7, "c": 1 / 7}),
        ([1, 9], {"a": 0.1, "b": 0.9}),
    ],
)
def test_weighted_random_spread_within_tolerance(weights: list[int], shares: dict[str, float]) -> None:
    counts = Counter(picks(RandomBalancer(random.Random(7)), peers(weights), 70000))
    assert set(counts) == set(shares)
    for name, share in shares.items():
        assert counts[name] / 70000 == pytest.approx(share, abs=0.01)


def test_weighted_random_is_repeatable_with_a_seeded_rng() -> None:
    candidates = peers([5, 1, 1])
    first = picks(RandomBalancer(random.Random(99)), candidates, 200)
    second = picks(RandomBalancer(random.Random(99)), candidates, 200)
    assert first == second
    assert first != "a" * 200


@pytest.mark.parametrize(
    ("name", "cls"),
    [("round_robin", SmoothRoundRobin), ("least_conn", LeastConnections), ("random", RandomBalancer)],
)
def test_make_balancer_by_name(name: str, cls: type) -> None:
    assert type(make_balancer(name, random.Random(0))) is cls


def test_make_balancer_refuses_an_unknown_name() -> None:
    assert BALANCERS == ("round_robin", "least_conn", "random")
    with pytest.raises(ValueError, match="unknown balance algorithm 'ip_hash'"):
        make_balancer("ip_hash", random.Random(0))


@pytest.mark.parametrize("name", BALANCERS)
def test_no_candidates_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="no candidates"):
        make_balancer(name, random.Random(0)).choose([])
