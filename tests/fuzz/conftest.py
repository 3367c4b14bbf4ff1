"""The fuzz tier's Hypothesis profiles and its module-scoped bench.

``make test`` runs the ``ci`` profile: ``FUZZ_EXAMPLES`` (default 200) examples per
target, derandomized, so a run is repeatable. ``make fuzz`` runs the ``fuzz``
profile: randomized, ``FUZZ_EXAMPLES`` (there 5000) examples per target. Either
way the number of cases sent is printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.wire import CASES, Bench

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
settings.register_profile("ci", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), derandomize=True,
                          **_COMMON)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")), derandomize=False,
                          **_COMMON)
settings.load_profile(os.environ.get("FUZZ_PROFILE", "ci"))

@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    bench = Bench()
    bench.start()
    yield bench
    bench.stop()
    late = bench.errors.records[bench.errors.reported:]
    assert not late, "ERROR logged after the last case:\n" + "\n".join(late)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total = sum(CASES.values())
    if total:
        parts = [f"{name}: {n}" for name, n in CASES.items()]
        terminalreporter.write_line(f"fuzz: {total} cases run ({', '.join(parts)})")
