"""An answer's head, written the way ``HTTP1Connection.write_headers`` writes it, for less.

Tornado formats each field on its own (two ``native_str`` calls, an ``encode`` and a
CR/LF regex per line, through two generators): ~4 % of a proxied request's CPU. Here the
head is formatted as one string and checked at once (exactly one CR and one LF per line
means no field smuggles a line break), then handed, with the first body chunk, to
``HTTP1Connection.write()``: its documented way to send a pre-encoded header block. The
connection's framing state for the rest of the answer (chunked or not, the bytes a
Content-Length still allows) is then set as ``write_headers`` would have set it, so
``write()`` and ``finish()`` go on as usual. Same bytes, same state, same errors: pinned
against Tornado's own ``write_headers`` by tests/unit/test_head.py, on the private
attributes listed there (verified on Tornado 6.6.1; setup.cfg allows 6.4-6.6).
"""

from __future__ import annotations

from tornado import httputil
from tornado.concurrent import Future
from tornado.http1connection import HTTP1Connection, parse_int

__all__ = ["write_head"]


def write_head(connection: HTTP1Connection, request: httputil.HTTPServerRequest, status: int, reason: str,
               headers: httputil.HTTPHeaders, chunk: bytes) -> Future[None]:
    """Write the status line, ``headers`` and the first body ``chunk`` of the answer to ``request``
    in one write; the same additions to ``headers`` as Tornado's (Connection, Transfer-Encoding)."""
    version, method = request.version, request.method
    chunking = (version == "HTTP/1.1" and method != "HEAD" and status not in (204, 304)
                and not 100 <= status < 200 and "Content-Length" not in headers)
    if version == "HTTP/1.1" and connection._disconnect_on_finish:
        headers["Connection"] = "close"
    if version == "HTTP/1.0" and request.headers.get("Connection", "").lower() == "keep-alive":
        headers["Connection"] = "Keep-Alive"
    if chunking:
        headers["Transfer-Encoding"] = "chunked"
    if method == "HEAD" or status == 304:
        remaining: int | None = 0
    elif "Content-Length" in headers:
        remaining = parse_int(headers["Content-Length"])
    else:
        remaining = None
    lines = [f"HTTP/1.1 {status:d} {reason}\r\n", *[f"{name}: {value}\r\n" for name, value in headers.get_all()]]
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):  # one of each per line, none inside
        bad = next(line for line in lines if line.count("\n") != 1 or line.count("\r") != 1)
        raise ValueError(f"Illegal characters (CR or LF) in header: {bad[:-2].encode('latin1')!r}")
    head = text.encode("latin1") + b"\r\n"
    if connection.stream.closed():
        return connection.write(b"")  # Tornado's own answer: a future failed with StreamClosedError
    if remaining is not None:
        remaining -= len(chunk)
        if remaining < 0:
            connection.stream.close()
            raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
    if chunking and chunk:
        head += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    elif chunk:
        head += chunk
    written = connection.write(head)  # the connection's framing is still off: the bytes go as they are
    connection._chunking_output = chunking
    connection._expected_content_remaining = remaining
    return written
