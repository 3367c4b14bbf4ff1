"""Tornado's ``ExpectLog`` discipline for the whole suite: an ERROR nobody expected fails the test.

:class:`ErrorRecords` is a logging handler put on the ``gateway``, ``tornado`` and
``asyncio`` loggers for the length of one test (tests/conftest.py's autouse
``error_records``). It keeps every record at ERROR or above, except Tornado's
access log (``tornado.access`` logs a 5xx answer of a test upstream at ERROR: an
answer, not an error). At the end of the test, a record that no expectation
matches fails it, and so does an expectation that matched nothing (unless it
was declared ``required=False``: an error that a race may or may not produce).

A test declares what it expects with the ``expect_errors`` fixture::

    def test_x(expect_errors):
        expect_errors("gateway", r"upstream .* refused")

or, for a whole test or module, the marker
``@pytest.mark.expect_errors("gateway", r"pattern", required=False)``.
``logger`` matches that logger and its children; ``pattern`` is searched
(:func:`re.search`) in the record's message.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

__all__ = ["ErrorRecords", "Expected", "WATCHED_LOGGERS"]

WATCHED_LOGGERS = ("gateway", "tornado", "asyncio")
NOT_ERRORS = ("tornado.access",)


def _under(name: str, logger: str) -> bool:
    return name == logger or name.startswith(logger + ".")


@dataclass
class Expected:
    """Records of ``logger`` (or a child) whose message contains a match of ``pattern``."""

    logger: str
    pattern: re.Pattern[str]
    required: bool = True
    seen: int = field(default=0)

    def matches(self, record: logging.LogRecord) -> bool:
        return _under(record.name, self.logger) and self.pattern.search(record.getMessage()) is not None


class ErrorRecords(logging.Handler):
    """Collects ERROR and above from :data:`WATCHED_LOGGERS` between :meth:`attach` and :meth:`detach`."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.expected: list[Expected] = []

    def expect(self, logger: str, pattern: str, *, required: bool = True) -> None:
        """Declare that ``logger`` may log an error matching ``pattern`` (must, when ``required``)."""
        self.expected.append(Expected(logger, re.compile(pattern), required))

    def emit(self, record: logging.LogRecord) -> None:
        if not any(_under(record.name, name) for name in NOT_ERRORS):
            self.records.append(record)

    def attach(self) -> None:
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def problems(self) -> list[str]:
        """What makes the test fail: each unexpected record, each required expectation never met."""
        found: list[str] = []
        for record in self.records:
            matched = [expected for expected in self.expected if expected.matches(record)]
            for expected in matched:
                expected.seen += 1
            if not matched:
                found.append(f"unexpected {record.levelname} from {record.name} "
                             f"({record.pathname}:{record.lineno}): {record.getMessage()}"
                             + (f" [{record.exc_info[0].__name__}]" if record.exc_info and record.exc_info[0] else ""))
        found += [f"expected an ERROR from {expected.logger} matching {expected.pattern.pattern!r}, none was logged"
                  for expected in self.expected if expected.required and not expected.seen]
        return found
