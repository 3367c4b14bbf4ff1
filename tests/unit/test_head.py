"""gateway.http.head.write_head against Tornado's own HTTP1Connection.write_headers: for each answer,
the same bytes on a real socket, the same framing state after, the same additions to the headers and
the same errors, then the same bytes for the rest of the answer (write, finish)."""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any

import pytest
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine, ResponseStartLine
from tornado.iostream import IOStream

from gateway.http.head import write_head

# (request method, version, request headers, status, reason, response fields, first chunk, more chunks)
CASES = {
    "length": ("GET", "HTTP/1.1", {}, 200, "OK", [("Content-Length", "10")], b"hello", [b"world"]),
    "chunked": ("GET", "HTTP/1.1", {}, 200, "OK", [("Content-Type", "text/plain")], b"hello", [b"wor", b"ld"]),
    "chunked, empty first chunk": ("GET", "HTTP/1.1", {}, 200, "OK", [], b"", [b"late"]),
    "http/1.0 until close": ("GET", "HTTP/1.0", {}, 200, "OK", [("X-A", "1")], b"hello", [b"world"]),
    "http/1.0 keep-alive": ("GET", "HTTP/1.0", {"Connection": "Keep-Alive"}, 200, "OK", [("Content-Length", "2")],
                            b"ok", []),
    "head": ("HEAD", "HTTP/1.1", {}, 200, "OK", [("Content-Length", "5")], b"", []),
    "204": ("GET", "HTTP/1.1", {}, 204, "No Content", [("X-A", "1")], b"", []),
    "304 keeps its length": ("GET", "HTTP/1.1", {}, 304, "Not Modified", [("Content-Length", "10"), ("ETag", '"x"')],
                             b"", []),
    "101": ("GET", "HTTP/1.1", {}, 101, "Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade")],
            b"", []),
    "repeated field": ("GET", "HTTP/1.1", {}, 200, "OK", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                                          ("Content-Length", "0")], b"", []),
    "disconnect on finish": ("POST", "HTTP/1.1", {}, 413, "Payload Too Large", [("Content-Length", "2")], b"no", []),
    "more than the length": ("GET", "HTTP/1.1", {}, 200, "OK", [("Content-Length", "2")], b"hello", []),
    "less than the length": ("GET", "HTTP/1.1", {}, 200, "OK", [("Content-Length", "9")], b"hello", []),
    "CR in a value": ("GET", "HTTP/1.1", {}, 200, "OK", [("X-A", "a\rb"), ("Content-Length", "0")], b"", []),
    "LF then CR in a value": ("GET", "HTTP/1.1", {}, 200, "OK", [("X-A", "a\n\rb")], b"", []),
    "LF in a name": ("GET", "HTTP/1.1", {}, 200, "OK", [("X\nA", "1")], b"", []),
    "CRLF in the reason": ("GET", "HTTP/1.1", {}, 200, "OK\r\nX-Evil: 1", [], b"", []),
    "not latin-1": ("GET", "HTTP/1.1", {}, 200, "OK", [("X-A", "\u20ac")], b"", []),
}


async def _answer(case: tuple[Any, ...], ours: bool) -> tuple[bytes, tuple[Any, ...], list[Any], list[str]]:
    """Write the case's answer on a real socket pair; the bytes the peer read, the state after the
    head, the headers after it, and the errors raised along the way (by type)."""
    method, version, request_fields, status, reason, fields, chunk, more = case
    near, far = socket.socketpair()
    far.setblocking(False)
    stream = IOStream(near)
    connection = HTTP1Connection(stream, False, HTTP1ConnectionParameters())
    request_headers = HTTPHeaders({"Host": "gw", **request_fields})
    start_line = RequestStartLine(method, "/", version)
    connection._request_start_line, connection._request_headers = start_line, request_headers
    if case[0] == "POST":
        connection._disconnect_on_finish = True  # answered before the body was read
    request = HTTPServerRequest(connection=connection, start_line=start_line, headers=request_headers)
    headers = HTTPHeaders()
    for name, value in fields:
        headers.add(name, value) if name in headers else headers.__setitem__(name, value)
    errors: list[str] = []
    state: tuple[Any, ...] = ()
    try:
        if ours:
            write_head(connection, request, status, reason, headers, chunk)
        else:
            connection.write_headers(ResponseStartLine("HTTP/1.1", status, reason), headers, chunk)
        state = (connection._chunking_output, connection._expected_content_remaining)
        for piece in more:
            connection.write(piece)
        connection.finish()
    except Exception as exc:  # what each raises is compared, by type
        errors.append(type(exc).__name__)
    await asyncio.sleep(0.01)
    received = b""
    try:
        while True:
            data = far.recv(65536)
            if not data:
                break
            received += data
    except BlockingIOError:
        pass
    finally:
        stream.close()
        far.close()
    return received, state, list(headers.get_all()), errors


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_the_head_is_tornados(io_loop: Any, case: tuple[Any, ...]) -> None:
    tornados = await _answer(case, ours=False)
    assert await _answer(case, ours=True) == tornados


async def test_the_cases_cover_every_outcome(io_loop: Any) -> None:
    """Chunked and not, a length left and none, each error Tornado raises: the cases above cannot all
    pass by agreeing on nothing."""
    results = {name: await _answer(case, ours=False) for name, case in CASES.items()}
    assert results["chunked"][0].endswith(b"3\r\nwor\r\n2\r\nld\r\n0\r\n\r\n")
    assert results["chunked"][1] == (True, None)
    assert results["length"][1] == (False, 5)
    assert b"Connection: close\r\n" in results["disconnect on finish"][0]
    assert b"Connection: Keep-Alive\r\n" in results["http/1.0 keep-alive"][0]
    assert results["more than the length"][3] == ["HTTPOutputError"]
    assert results["less than the length"][3] == ["HTTPOutputError"]
    assert {results[name][3][0] for name in ("CR in a value", "LF then CR in a value", "LF in a name",
                                              "CRLF in the reason")} == {"ValueError"}
    assert results["not latin-1"][3] == ["UnicodeEncodeError"]


@pytest.mark.parametrize("source, names", [
    (HTTP1Connection.__init__, ("self._chunking_output = False", "self._expected_content_remaining",
                                "self._disconnect_on_finish = False")),
    (HTTP1Connection.write_headers, ("self._chunking_output = (", "self._disconnect_on_finish",
                                     "self._expected_content_remaining = parse_int", 'headers["Connection"] = "close"',
                                     'headers["Connection"] = "Keep-Alive"', "CR_OR_LF_RE")),
    (HTTP1Connection.write, ("pre-encoded header block", "self._format_chunk(chunk)")),
    # gateway.http.response sets it to close after an answer to a request refused with its body unread
    (HTTP1Connection._finish_request, ("if not self.is_client and self._disconnect_on_finish:", "self.close()")),
])
def test_tornado_still_has_what_write_head_relies_on(source: Any, names: tuple[str, ...]) -> None:
    text = inspect.getsource(source)
    assert [name for name in names if name not in text] == []
