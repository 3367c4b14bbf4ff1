"""The circuit breaker of one upstream target (passive health).

A breaker counts CONSECUTIVE failed requests (connect errors, resets, timeouts,
5xx answers: the proxy decides what a failure is and reports it through
:meth:`UpstreamPool.end`). Its states::

    closed ──failure_threshold consecutive failures──▶ open
    open ──open_seconds later, one request let through──▶ half_open (the probe)
    half_open ──probe succeeded──▶ closed
    half_open ──probe failed──▶ open (for another open_seconds)

Exactly one probe is let through per half-open period. A probe whose result
never comes back (the caller lost it) does not wedge the breaker: after
another ``open_seconds`` a new probe is allowed. Results reported while the
breaker is open come from requests admitted before it opened and are ignored.

The clock is injected so tests step time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import CircuitBreakerConfig

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """One target's breaker. Not thread-safe: it lives on one IOLoop.

    ``on_change`` (optional) is called with the new state after every
    transition this object makes (``open``, ``half_open`` when the probe is
    handed out, ``closed``).
    """

    def __init__(
        self,
        config: CircuitBreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if config.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {config.failure_threshold}")
        if config.open_seconds < 0:
            raise ValueError(f"open_seconds must not be negative, not {config.open_seconds}")
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._failures = 0  # consecutive, while closed
        self._open_until = 0.0  # while open: when the probe may go
        self._probe_since = 0.0  # while half-open: when the probe went

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (open and due for, or running, its probe)."""
        if self._state == OPEN and self._clock() >= self._open_until:
            return HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures counted since the last success while closed."""
        return self._failures

    def would_allow(self) -> bool:
        """Whether :meth:`allow` would let a request through now; changes nothing."""
        now = self._clock()
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            return now >= self._open_until
        return now >= self._probe_since + self.config.open_seconds

    def allow(self) -> bool:
        """Let one request through (True) or not (False).

        When the breaker is due for its probe this call takes the one probe
        slot: it answers True once and False to everyone else until the probe's
        result is recorded (or the probe is given up, ``open_seconds`` later).
        """
        if self._state == CLOSED:
            return True
        if not self.would_allow():
            return False
        self._probe_since = self._clock()
        if self._state != HALF_OPEN:
            self._transition(HALF_OPEN)
        return True

    def record_success(self) -> None:
        """A request through this target succeeded: reset the count, or close after a probe."""
        if self._state == CLOSED:
            self._failures = 0
        elif self._state == HALF_OPEN:
            self._failures = 0
            self._transition(CLOSED)

    def record_failure(self) -> None:
        """A request through this target failed: count it, or re-open after a probe."""
        if self._state == CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open()
        elif self._state == HALF_OPEN:
            self._open()

    def record_no_verdict(self) -> None:
        """A request through this target ended for a reason that is not the target's (the client's fault,
        a cancellation): the count stays; a probe that ended so gives its slot back at once."""
        if self._state == HALF_OPEN:
            self._probe_since = self._clock() - self.config.open_seconds

    def _open(self) -> None:
        self._failures = 0
        self._open_until = self._clock() + self.config.open_seconds
        self._transition(OPEN)

    def _transition(self, state: str) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
