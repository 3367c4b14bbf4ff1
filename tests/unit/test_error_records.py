"""The suite's ExpectLog discipline (tests/support/logs.py): which ERROR records fail a test."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.logs import ErrorRecords


@pytest.fixture
def records(error_records: ErrorRecords) -> Iterator[ErrorRecords]:
    """A collector of its own; what the test logs is taken back from the suite's (tests/conftest.py)."""
    collector = ErrorRecords()
    collector.attach()
    yield collector
    collector.detach()
    error_records.records = [record for record in error_records.records if record not in collector.records]


# (what is logged: (logger, level, message), what is expected: (logger, pattern, required), problems)
CASES: list[tuple[list[tuple[str, int, str]], list[tuple[str, str, bool]], list[str]]] = [
    ([], [], []),
    ([("gateway", logging.WARNING, "slow"), ("gateway", logging.INFO, "ok")], [], []),
    ([("gateway.upstream.health", logging.ERROR, "boom")], [], ["unexpected ERROR from gateway.upstream.health"]),
    ([("tornado.general", logging.CRITICAL, "bad")], [], ["unexpected CRITICAL from tornado.general"]),
    ([("asyncio", logging.ERROR, "Task exception was never retrieved")], [], ["unexpected ERROR from asyncio"]),
    ([("tornado.access", logging.ERROR, "500 GET /x")], [], []),  # an upstream's answer, not an error
    ([("other", logging.ERROR, "not watched")], [], []),
    ([("gateway.upstream.health", logging.ERROR, "boom 1"), ("gateway", logging.ERROR, "boom 2")],
     [("gateway", r"^boom \d$", True)], []),  # a logger's children, every matching record
    ([("gateway", logging.ERROR, "boom")], [("gateway.proxy", "boom", True)],
     ["unexpected ERROR from gateway", "expected an ERROR from gateway.proxy matching 'boom', none was logged"]),
    ([("gatewayx", logging.ERROR, "boom")], [("gateway", "boom", False)], []),  # not a child: not watched
    ([("gateway", logging.ERROR, "boom")], [("gateway", "bang", True)],
     ["unexpected ERROR from gateway", "expected an ERROR from gateway matching 'bang', none was logged"]),
    ([], [("gateway", "maybe", False)], []),
]


@pytest.mark.parametrize(("logged", "expected", "problems"), CASES)
def test_problems(records: ErrorRecords, logged: list[tuple[str, int, str]], expected: list[tuple[str, str, bool]],
                  problems: list[str]) -> None:
    for logger, pattern, required in expected:
        records.expect(logger, pattern, required=required)
    for logger, level, message in logged:
        logging.getLogger(logger).log(level, message)
    found = records.problems()
    assert [problem.split(" (")[0] if problem.startswith("unexpected") else problem for problem in found] == problems


def test_a_problem_names_the_place_and_the_exception(records: ErrorRecords) -> None:
    try:
        raise ValueError("x")
    except ValueError:
        logging.getLogger("gateway").exception("request_id=%s internal error", "r-1")
    (problem,) = records.problems()
    assert re.fullmatch(r"unexpected ERROR from gateway \(/\S+/tests/unit/test_error_records\.py:\d+\): "
                        r"request_id=r-1 internal error \[ValueError\]", problem), problem


@pytest.mark.expect_errors("gateway.proxy", r"^declared by the marker$")
def test_the_marker_declares_an_error(expect_errors: Any) -> None:
    expect_errors("tornado", r"^and by the fixture$")
    logging.getLogger("gateway.proxy").error("declared by the marker")
    logging.getLogger("tornado.general").error("and by the fixture")
