"""What gateway.http.response relies on of Tornado's RequestHandler beyond its public API, pinned:
if a Tornado release renames these, this fails before the wire tests do (setup.cfg pins the range)."""

from __future__ import annotations

import inspect

import pytest
import tornado
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import BaseIOStream
from tornado.web import RequestHandler, _HandlerDelegate

from gateway.http.response import ResponseWriter


@pytest.mark.parametrize("method, names", [
    (RequestHandler.clear, ("self._headers", "self._write_buffer", "self._status_code", "self._reason")),
    (RequestHandler.flush, ("self._headers", "self._write_buffer", "self._headers_written", "self._status_code",
                            "self._reason")),
    (RequestHandler.finish, ("self._finished", "self._headers_written")),
    # ResponseWriter.__init__ is RequestHandler.__init__ without the template namespace (self.ui)
    (RequestHandler.__init__, ("self.application = application", "self.request = request",
                               "self._headers_written = False", "self._finished = False", "self._auto_finish = True",
                               "self._prepared_future = None", "self.ui = ", "self.clear()",
                               "self.on_connection_close", "self.initialize(**kwargs)")),
    # ResponseWriter.finish skips the empty flush and does the rest of Tornado's finish() itself
    (RequestHandler.finish, ("self.request.connection.set_close_callback(None)", "self.flush(include_footers=True)",
                             "self.request.connection.finish()", "self.on_finish()", "self._break_cycles()")),
    (RequestHandler._execute, ("self._finished", "self.request._body_future")),
    (RequestHandler.on_connection_close, ("self.request._body_future",)),
    # gateway.http.app._ProxyDelegate stands in for _HandlerDelegate + _execute: the same attributes
    (RequestHandler.flush, ("self._transforms",)),
    (_HandlerDelegate.headers_received, ("self.request._body_future = Future()",)),
    (_HandlerDelegate.finish, ("self.request._body_future",)),
    # gateway.headwait sweeps the connections waiting for a head instead of a timeout per head
    (HTTPServer.handle_stream, ("self._connections.add(conn)",)),
    (HTTPServer.__init__ if "header_timeout" in inspect.getsource(HTTPServer.__init__) else HTTPServer.initialize,
     ("header_timeout=",)),
    (HTTP1Connection._read_message_inner, ("self.params.header_timeout is None", "await header_future")),
    (HTTP1ServerConnection.__init__, ("self.stream = stream",)),
    (BaseIOStream.read_until_regex, ("self._read_regex =", "self._start_read()")),
    (BaseIOStream._start_read, ("self._read_future =",)),
])
def test_tornado_still_has_the_attributes_the_writer_sets(method: object, names: tuple[str, ...]) -> None:
    source = inspect.getsource(method)  # type: ignore[arg-type]
    assert [name for name in names if name not in source] == []


def test_the_writer_replaces_tornados_defaults() -> None:
    assert tornado.version_info[:2] >= (6, 4)
    assert ResponseWriter.clear is not RequestHandler.clear
    assert ResponseWriter.compute_etag is not RequestHandler.compute_etag
    assert ResponseWriter._log is not RequestHandler._log
    assert ResponseWriter.finish is not RequestHandler.finish
    assert ResponseWriter.__init__ is not RequestHandler.__init__
