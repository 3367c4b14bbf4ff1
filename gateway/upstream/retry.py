"""Retry policy of one upstream: whether a failed try may be tried again, and after how long.

The rules (SPEC §4, Retries):

* never more than ``RetryConfig.attempts`` tries in all, the first included;
* ``refused`` (the connection was refused: nothing was sent) -> any method may be
  retried;
* otherwise only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE), only after a
  ``"connect"`` or ``"timeout"`` failure or an answer whose status is in
  ``on_statuses``, and only when the request body can be sent again
  (``replayable``). A POST that reached the upstream is never sent twice;
* every retry must also win a token from the retry budget.

Retry budget (after Finagle's ``RetryBudget`` and Envoy's ``retry_budget``): over a
sliding window of ``window_seconds`` (10 s), retries may number at most
``budget_ratio`` (0.2) times the first tries recorded with :meth:`record_request`,
so during an outage retries add at most 20 % load instead of multiplying it by
``attempts``. A floor of ``min_retries_per_second`` (3/s, i.e. 30 per window) lets a
quiet upstream retry anyway: the allowance is ``max(floor, ratio * requests)``.

Backoff before try ``attempt + 1`` is exponential, ``backoff_seconds * 2 **
(attempt - 1)`` capped at ``max_backoff_seconds``, with jitter drawn from the
injected random source ("full jitter": uniform in [0, b], see
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). An upstream's ``Retry-After`` (delta-seconds
or HTTP-date) replaces it, capped at ``max_backoff_seconds``.
"""

from __future__ import annotations

import random
import re
import time
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from ..config import RetryConfig
from ..tables import IDEMPOTENT_METHODS

__all__ = ["RETRYABLE_FAILURES", "RetryBudget", "RetryPolicy"]

# What a failed try reports as ``failure`` (gateway.upstream.client.failure_kind): "connect" |
# "timeout" | "reset". A reset or a garbled answer may come after the upstream acted: not retried.
RETRYABLE_FAILURES = frozenset({"connect", "timeout"})
_DELTA_SECONDS = re.compile(r"[0-9]+")  # RFC 9110 §10.2.3: 1*DIGIT


class RetryPolicy:
    """Decides retries for one upstream. Clock and random source are injected."""

    def __init__(
        self,
        config: RetryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        window_seconds: float = 10.0,
        min_retries_per_second: float = 3.0,
    ) -> None:
        if config.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {config.attempts}")
        self.config = config
        self.budget = RetryBudget(
            config.budget_ratio,
            clock=clock,
            window_seconds=window_seconds,
            min_retries_per_second=min_retries_per_second,
        )
        self._rng = rng if rng is not None else random.Random()
        self._wall_clock = wall_clock  # for Retry-After dates only
        self._statuses = frozenset(config.on_statuses)

    def should_retry(
        self,
        *,
        method: str,
        attempt: int,
        refused: bool,
        failure: str | None,
        status: int | None,
        replayable: bool,
    ) -> bool:
        """Whether to make another try after try number ``attempt`` (1 after the first) failed.

        ``failure`` is what went wrong without an answer (``"connect"``,
        ``"timeout"``, ``"reset"``) or None; ``status`` is the
        answer's status or None. ``refused`` must only be set when no byte of the
        request (head or body) was sent, so the body is still intact.

        True also spends a token of the retry budget: the caller must then retry.
        """
        if attempt >= self.config.attempts:
            return False
        if not refused:
            if method.upper() not in IDEMPOTENT_METHODS or not replayable:
                return False
            if failure not in RETRYABLE_FAILURES and status not in self._statuses:
                return False
        return self.budget.try_spend()

    def backoff_seconds(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before the try after try number ``attempt`` (1 after the first).

        A valid ``retry_after`` (the upstream's ``Retry-After`` value) wins over the
        computed backoff; both are capped at ``max_backoff_seconds``, and neither is
        ever negative.
        """
        cap = self.config.max_backoff_seconds
        if retry_after is not None:
            delay = self._parse_retry_after(retry_after)
            if delay is not None:
                return min(delay, cap)
        base = min(self.config.backoff_seconds * 2 ** max(attempt - 1, 0), cap)
        return self._rng.uniform(0.0, base)

    def record_request(self) -> None:
        """Count a first try (not a retry) for the retry budget."""
        self.budget.record_request()

    def _parse_retry_after(self, value: str) -> float | None:
        value = value.strip()
        if _DELTA_SECONDS.fullmatch(value):
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, source unknown"
            return None
        return max(when.timestamp() - self._wall_clock(), 0.0)


class RetryBudget:
    """Retries allowed over a sliding window: ``max(floor, ratio * first tries)``.

    The window is kept as ten buckets of ``window_seconds / 10``, so it slides in
    steps of a tenth of the window.
    """

    BUCKETS = 10

    def __init__(
        self,
        ratio: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = 10.0,
        min_retries_per_second: float = 3.0,
    ) -> None:
        if ratio < 0:
            raise ValueError(f"budget_ratio must not be negative, not {ratio}")
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, not {window_seconds}")
        self.ratio = ratio
        self.floor = min_retries_per_second * window_seconds
        self._clock = clock
        self._bucket_seconds = window_seconds / self.BUCKETS
        self._buckets: deque[list[int]] = deque()  # [bucket index, first tries, retries], oldest first
        self._requests = 0  # sums over the buckets in the window
        self._retries = 0

    @property
    def requests(self) -> int:
        """First tries recorded within the window."""
        self._slide()
        return self._requests

    @property
    def retries(self) -> int:
        """Retries granted within the window."""
        self._slide()
        return self._retries

    def record_request(self) -> None:
        """Count one first try."""
        self._current()[1] += 1
        self._requests += 1

    def try_spend(self) -> bool:
        """Take one retry token: True when the window's allowance is not used up."""
        bucket = self._current()
        if self._retries + 1 > max(self.floor, self.ratio * self._requests):
            return False
        bucket[2] += 1
        self._retries += 1
        return True

    def _current(self) -> list[int]:
        index = self._slide()
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        return self._buckets[-1]

    def _slide(self) -> int:
        index = int(self._clock() // self._bucket_seconds)
        while self._buckets and self._buckets[0][0] <= index - self.BUCKETS:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        return index
