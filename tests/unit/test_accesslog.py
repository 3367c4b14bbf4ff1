"""The access-log line: every field, in order, exact timestamps, one write per line, no raise."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from gateway.accesslog import FIELDS, AccessLog

ENTRY = dict(
    request_id="r-1", client="203.0.113.9", method="GET", path="/api/orders/7", route="orders",
    upstream="orders", target="http://127.0.0.1:9001", status=200, bytes_in=0, bytes_out=123,
    duration_seconds=0.0123456, subject="alice",
)


def test_line_has_every_field_in_order() -> None:
    out = io.StringIO()
    AccessLog(out).write(**ENTRY, now=1714564800.25)  # type: ignore[arg-type]
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert line == (
        '{"ts":"2024-05-01T12:00:00.250Z","request_id":"r-1","client":"203.0.113.9","method":"GET",'
        '"path":"/api/orders/7","route":"orders","upstream":"orders","target":"http://127.0.0.1:9001",'
        '"status":200,"bytes_in":0,"bytes_out":123,"duration_ms":12.346,"subject":"alice"}\n'
    )
    assert tuple(json.loads(line)) == FIELDS


def test_unknown_values_are_null() -> None:
    out = io.StringIO()
    AccessLog(out).write(**{**ENTRY, "route": "", "upstream": None, "target": None, "subject": None})  # type: ignore[arg-type]
    entry = json.loads(out.getvalue())
    assert (entry["route"], entry["upstream"], entry["target"], entry["subject"]) == (None, None, None, None)


@pytest.mark.parametrize(("now", "expected"), [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1.5, "1970-01-01T00:00:01.500Z"),
    (1714564800.999, "2024-05-01T12:00:00.999Z"),
    (1714564801.0, "2024-05-01T12:00:01.000Z"),
])
def test_timestamps_are_utc_with_milliseconds(now: float, expected: str) -> None:
    log = AccessLog(io.StringIO())
    assert log.timestamp(now) == expected
    assert log.timestamp(now) == expected  # the cached second gives the same answer


def test_strange_paths_stay_one_json_line() -> None:
    out = io.StringIO()
    AccessLog(out).write(**{**ENTRY, "path": '/a"b\n\\c\u00e9'})  # type: ignore[arg-type]
    assert out.getvalue().count("\n") == 1
    assert json.loads(out.getvalue())["path"] == '/a"b\n\\c\u00e9'


def test_each_line_is_one_write_on_the_descriptor() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as stream, os.fdopen(read_fd, "rb") as reader:
        log = AccessLog(stream)
        log.write(**ENTRY)  # type: ignore[arg-type]
        log.write(**{**ENTRY, "request_id": "r-2"})  # type: ignore[arg-type]
        stream.close()
        lines = reader.read().decode().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r-1", "r-2"]


@pytest.mark.expect_errors("gateway", r"^access log: cannot write to stdout \(\[Errno 32\] Broken pipe\)")
def test_a_failing_stdout_is_reported_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # writing now fails with EPIPE
    with os.fdopen(write_fd, "w") as stream:
        log = AccessLog(stream)
        with caplog.at_level(logging.ERROR, logger="gateway"):
            log.write(**ENTRY)  # type: ignore[arg-type]
            log.write(**ENTRY)  # type: ignore[arg-type]
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "access log: cannot write to stdout ([Errno 32] Broken pipe)"]
