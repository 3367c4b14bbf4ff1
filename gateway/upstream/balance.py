"""Load balancers: which target of an upstream gets the next request.

One method, :meth:`Balancer.choose`, picks among the candidates the pool hands
it (the targets that are available now, minus those already tried). The
algorithm is chosen once, by name, when the pool is built
(:func:`make_balancer`):

``round_robin``
    Smooth weighted round robin, nginx's algorithm
    (``ngx_http_upstream_get_peer`` in
    https://github.com/nginx/nginx/blob/master/src/http/ngx_http_upstream_round_robin.c):
    every pick adds each candidate's weight to its running score, takes the
    highest score and subtracts the total weight from it. Weights 5, 1, 1 give
    ``a a b a c a a``: the heavy target is spread out, never sent a burst.
``least_conn``
    Fewest requests in flight relative to weight (``in_flight / weight``, as
    nginx's ``least_conn``); ties are broken at random, in proportion to weight.
``random``
    Weighted random.

The random source is injected so tests are deterministic. Balancers only read
``weight`` and ``in_flight`` from candidates, so they work on anything shaped
like a :class:`Candidate`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = [
    "BALANCERS",
    "Balancer",
    "Candidate",
    "LeastConnections",
    "RandomBalancer",
    "SmoothRoundRobin",
    "make_balancer",
]


class Candidate(Protocol):
    """What a balancer reads from a target."""

    @property
    def weight(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


T = TypeVar("T", bound=Candidate)


class Balancer(Protocol):
    """Picks one of a non-empty sequence of candidates."""

    def choose(self, candidates: Sequence[T]) -> T:
        """The chosen candidate. Raises ValueError when ``candidates`` is empty."""
        ...


def make_balancer(name: str, rng: random.Random) -> Balancer:
    """The balancer called ``name`` (one of :data:`BALANCERS`); ValueError for any other name."""
    if name == "round_robin":
        return SmoothRoundRobin()
    if name == "least_conn":
        return LeastConnections(rng)
    if name == "random":
        return RandomBalancer(rng)
    raise ValueError(f"unknown balance algorithm {name!r}; expected one of {', '.join(BALANCERS)}")


BALANCERS = ("round_robin", "least_conn", "random")


class SmoothRoundRobin:
    """nginx's smooth weighted round robin. Scores are kept per candidate object (by identity).

    A candidate left out of a pick (unavailable, or already tried) keeps its
    score and is not credited for that pick, as in nginx.
    """

    def __init__(self) -> None:
        self._scores: dict[object, int] = {}  # candidate -> current weight

    def choose(self, candidates: Sequence[T]) -> T:
        _require(candidates)
        total = 0
        best: T | None = None
        best_score = 0
        for candidate in candidates:
            score = self._scores.get(candidate, 0) + candidate.weight
            self._scores[candidate] = score
            total += candidate.weight
            if best is None or score > best_score:
                best, best_score = candidate, score
        if best is None:  # unreachable: _require() refused an empty sequence
            raise ValueError("no candidates")
        self._scores[best] = best_score - total
        return best


class LeastConnections:
    """Fewest in flight per unit of weight; weighted random among the ties."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, candidates: Sequence[T]) -> T:
        _require(candidates)
        best: list[T] = []
        for candidate in candidates:
            if not best:
                best = [candidate]
                continue
            # in_flight / weight compared without floats: a/wa < b/wb  <=>  a*wb < b*wa
            lhs = candidate.in_flight * best[0].weight
            rhs = best[0].in_flight * candidate.weight
            if lhs < rhs:
                best = [candidate]
            elif lhs == rhs:
                best.append(candidate)
        if len(best) == 1:
            return best[0]
        return _weighted_choice(self._rng, best)


class RandomBalancer:
    """Weighted random: each candidate is chosen with probability weight / total."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, candidates: Sequence[T]) -> T:
        _require(candidates)
        return _weighted_choice(self._rng, candidates)


def _require(candidates: Sequence[Candidate]) -> None:
    if not candidates:
        raise ValueError("no candidates to choose from")


def _weighted_choice(rng: random.Random, candidates: Sequence[T]) -> T:
    point = rng.random() * sum(candidate.weight for candidate in candidates)
    for candidate in candidates:
        point -= candidate.weight
        if point < 0:
            return candidate
    return candidates[-1]  # float rounding left a sliver at the end
