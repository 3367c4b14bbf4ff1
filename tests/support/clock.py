"""A clock for code that takes ``clock: Callable[[], float]``: time moves only when a test moves it."""

from __future__ import annotations

__all__ = ["Clock"]


class Clock:
    """Returns ``now`` when called; a test sets ``now`` or calls :meth:`advance` to step time.

    The default start is arbitrary and positive; pass ``now`` where absolute values matter
    (a token's ``iat``/``exp``, a window that starts at 0).
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
