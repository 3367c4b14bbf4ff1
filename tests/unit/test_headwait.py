"""gateway.headwait.expired: which sweep closes a wait for a head, with sweeps run late by the loop."""

from __future__ import annotations

import pytest

from gateway.headwait import expired

SECONDS, INTERVAL = 75.0, 75.0 / 8


@pytest.mark.parametrize("first_late, now_late, sweeps, closes", [
    (0.0, 0.0, 8, True),        # on time: the sweep `seconds` after the first sighting
    (0.004, 0.001, 8, True),    # the first sighting ran later than that sweep: was missed (soak), now kept
    (0.0, 0.3, 8, True),
    (0.3, 0.0, 7, False),       # never one interval early, however late the first sighting ran
    (0.0, INTERVAL / 2 - 0.01, 7, False),
    (0.0, 0.0, 9, True),
])
def test_the_sweep_seconds_after_the_first_sighting_closes_the_wait(first_late: float, now_late: float,
                                                                    sweeps: int, closes: bool) -> None:
    since = 1000.0 + first_late
    now = 1000.0 + sweeps * INTERVAL + now_late
    assert expired(now, since, SECONDS, INTERVAL) is closes
