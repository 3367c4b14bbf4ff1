"""What gateway.http.response relies on of Tornado's RequestHandler beyond its public API, pinned:
if a Tornado release renames these, this fails before the wire tests do (setup.cfg pins the range)."""

from __future__ import annotations

import inspect

import pytest
import tornado
from tornado.web import RequestHandler

from gateway.http.response import ResponseWriter


@pytest.mark.parametrize("method, names", [
    (RequestHandler.clear, ("self._headers", "self._write_buffer", "self._status_code", "self._reason")),
    (RequestHandler.flush, ("self._headers", "self._write_buffer", "self._headers_written", "self._status_code",
                            "self._reason")),
    (RequestHandler.finish, ("self._finished", "self._headers_written")),
    (RequestHandler._execute, ("self._finished", "self.request._body_future")),
    (RequestHandler.on_connection_close, ("self.request._body_future",)),
])
def test_tornado_still_has_the_attributes_the_writer_sets(method: object, names: tuple[str, ...]) -> None:
    source = inspect.getsource(method)  # type: ignore[arg-type]
    assert [name for name in names if name not in source] == []


def test_the_writer_replaces_tornados_defaults() -> None:
    assert tornado.version_info[:2] >= (6, 4)
    assert ResponseWriter.clear is not RequestHandler.clear
    assert ResponseWriter.compute_etag is not RequestHandler.compute_etag
    assert ResponseWriter._log is not RequestHandler._log
