"""The upstream response parser's rules as a table (gateway/upstream/parser.py).

Every answer is fed whole and split in two at every byte boundary (at a stride past 2 KiB,
plus every boundary near the ends and the 64 KiB limit): the outcome must not depend on
how the bytes arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.errors import BadGateway
from gateway.upstream.parser import MAX_RESPONSE_HEAD_BYTES, Head, ResponseParser


@dataclass(frozen=True)
class Parsed:
    """What one feeding made of an answer."""

    status: int
    reason: str
    fields: list[tuple[str, str]]
    body: bytes
    keep_alive: bool
    leftover: bytes = b""
    needs_close: bool = False  # the body ended only when the connection closed
    heads: int = field(default=1, compare=False)


def parse(pieces: list[bytes], head_request: bool = False) -> Parsed | str:
    """Feed ``pieces`` in order, then close; the answer, or the 502's log message, or 'incomplete'."""
    parser = ResponseParser(head_request)
    heads: list[Head] = []
    body = b""
    try:
        for piece in pieces:
            parser.feed(piece)
            while (event := parser.step()) is not None:
                if isinstance(event, bytes):
                    assert heads, "body before head"
                    assert event, "an empty body piece"
                    body += event
                else:
                    heads.append(event)
    except BadGateway as exc:
        assert exc.message == "the upstream sent an invalid answer"
        return exc.log_message or ""
    assert len(heads) <= 1, "one answer parsed as two"
    needs_close = False
    if not parser.done:
        needs_close = parser.until_close
        if not parser.eof():
            return "incomplete"
    head = heads[0]
    assert head.keep_alive is parser.keep_alive or parser.leftover
    return Parsed(head.status, head.reason, list(head.fields), body, parser.keep_alive, parser.leftover, needs_close)


def boundaries(data: bytes) -> list[int]:
    if len(data) <= 2048:
        return list(range(len(data) + 1))
    near = {0, len(data), MAX_RESPONSE_HEAD_BYTES, data.find(b"\r\n\r\n")}
    points = set(range(0, len(data), 997))
    for point in near:
        points.update(range(max(0, point - 6), min(len(data), point + 6) + 1))
    return sorted(points)


OK = "HTTP/1.1 200 OK\r\n"
BIG = MAX_RESPONSE_HEAD_BYTES
# The head block's length is where its CRLFCRLF starts: pad X-Pad so it starts at exactly n.
_PAD_BASE = len(OK + "X-Pad: " + "\r\nContent-Length: 2")


def head_of(n: int) -> bytes:
    return (OK + "X-Pad: " + "p" * (n - _PAD_BASE) + "\r\nContent-Length: 2\r\n\r\nok").encode()


CASES: list[tuple[str, bytes, bool, Parsed | str]] = [
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", False,
     Parsed(200, "OK", [("Content-Type", "text/plain"), ("Content-Length", "5")], b"hello", True)),
    ("bytes after the body are left over", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
     b"Content-Length: 3\r\n\r\nnot", False,
     Parsed(200, "OK", [("Content-Length", "2")], b"ok", False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnot")),
    ("content-length 0", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False,
     Parsed(200, "OK", [("Content-Length", "0")], b"", True)),
    ("1xx skipped", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
     b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", False,
     Parsed(201, "Created", [("Content-Length", "2")], b"ok", True)),
    ("chunked with extensions and trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5;name=value\r\nhello\r\n6 ; a=b;c\r\n world\r\nA\r\n0123456789\r\n0;last\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n",
     False, Parsed(200, "OK", [("Transfer-Encoding", "chunked")], b"hello world0123456789", True)),
    ("chunked, bytes after it left over", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX",
     False, Parsed(200, "OK", [("Transfer-Encoding", "chunked")], b"ok", False, b"X")),
    ("chunked last in a list", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", False,
     Parsed(200, "OK", [("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "Chunked")], b"ok", True)),
    ("close-delimited", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", False,
     Parsed(200, "OK", [("Content-Type", "text/plain")], b"until the end", False, needs_close=True)),
    ("transfer-encoding not chunked: until close", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", False,
     Parsed(200, "OK", [("Transfer-Encoding", "gzip")], b"zz", False, needs_close=True)),
    ("HTTP/1.0 is not reused", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False,
     Parsed(200, "OK", [("Content-Length", "2")], b"ok", False)),
    ("connection: close", b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 2\r\n\r\nok", False,
     Parsed(200, "OK", [("Connection", "Keep-Alive, Close"), ("Content-Length", "2")], b"ok", False)),
    ("equal lengths folded to one", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\ncontent-length: 2, 2\r\n\r\nok",
     False, Parsed(200, "OK", [("X-A", "a"), ("Content-Length", "2")], b"ok", True)),
    ("obs-fold joined with a space", b"HTTP/1.1 200 OK\r\nX-A: one\r\n   two\r\n\tthree \r\nContent-Length: 2\r\n\r\nok",
     False, Parsed(200, "OK", [("X-A", "one two three"), ("Content-Length", "2")], b"ok", True)),
    ("obs-fold onto an empty value", b"HTTP/1.1 200 OK\r\nX-A:\r\n two\r\nContent-Length: 0\r\n\r\n", False,
     Parsed(200, "OK", [("X-A", "two"), ("Content-Length", "0")], b"", True)),
    ("values trimmed of SP and HTAB only", b"HTTP/1.1 200 OK\r\nX-A: \t\xa0v\xa0 \r\nContent-Length: 0\r\n\r\n", False,
     Parsed(200, "OK", [("X-A", "\xa0v\xa0"), ("Content-Length", "0")], b"", True)),
    ("HEAD: no body whatever the length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True,
     Parsed(200, "OK", [("Content-Length", "5")], b"", True)),
    ("204 has no body", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", False,
     Parsed(204, "No Content", [("Content-Length", "5")], b"", True)),
    ("304 has no body", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", False,
     Parsed(304, "Not Modified", [("Transfer-Encoding", "chunked")], b"", True)),
    ("no reason phrase", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", False,
     Parsed(200, "", [("Content-Length", "0")], b"", True)),
    ("head of exactly 64 KiB", head_of(BIG), False,
     Parsed(200, "OK", [("X-Pad", "p" * (BIG - _PAD_BASE)), ("Content-Length", "2")], b"ok", True)),
    ("head over 64 KiB", head_of(BIG + 1), False, "response head too large"),
    ("no end of head within 64 KiB", (OK + "X-Pad: " + "p" * BIG).encode(), False, "response head too large"),
    ("three-digit status only", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", False,
     "bad status line 'HTTP/1.1 2000 OK'"),
    ("not HTTP/1.x", b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", False, "bad status line 'HTTP/2 200 OK'"),
    ("not HTTP at all", b"ICY 200 OK\r\n\r\n", False, "bad status line 'ICY 200 OK'"),
    ("control character in the reason", b"HTTP/1.1 200 O\x00K\r\n\r\n", False, "bad status line 'HTTP/1.1 200 O\\x00K'"),
    ("no space after the version", b"HTTP/1.1  200 OK\r\n\r\n", False, "bad status line 'HTTP/1.1  200 OK'"),
    ("space in a field name", b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", False, "malformed header field"),
    ("space before the colon", b"HTTP/1.1 200 OK\r\nX-A : x\r\n\r\n", False, "malformed header field"),
    ("line without a colon", b"HTTP/1.1 200 OK\r\nJustText\r\n\r\n", False, "malformed header field"),
    ("control character in a value", b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n", False, "malformed header field"),
    ("bare LF in a value", b"HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 0\r\n\r\n", False, "malformed header field"),
    ("bare CR in a value", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", False, "malformed header field"),
    ("fold before any field", b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", False, "malformed header field"),
    ("transfer-encoding with content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n2\r\nok\r\n0\r\n\r\n", False, "both Transfer-Encoding and Content-Length"),
    ("unequal lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", False,
     "bad Content-Length"),
    ("unequal lengths in one field", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!", False, "bad Content-Length"),
    ("negative length", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", False, "bad Content-Length"),
    ("signed length", b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", False, "bad Content-Length"),
    ("empty length", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", False, "bad Content-Length"),
    ("non-ASCII digit in a length", b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok", False, "bad Content-Length"),
    ("length of 19 digits", b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000000\r\n\r\n", False,
     "bad Content-Length"),
    ("101 refused", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", False,
     "101 Switching Protocols is not supported"),
    ("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", False,
     "bad chunk size"),
    ("empty chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n", False, "bad chunk size"),
    ("signed chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n", False,
     "bad chunk size"),
    ("chunk size of 17 digits", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 16 + b"2\r\nok\r\n",
     False, "bad chunk size"),
    ("chunk size line too long", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;" + b"e" * 1100, False,
     "chunk size line too long"),
    ("chunk size line too long, CRLF and all", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;"
     + b"e" * 1100 + b"\r\nok\r\n0\r\n\r\n", False, "chunk size line too long"),
    ("trailers over 64 KiB in all", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
     + b"X-T: " + b"t" * 995 + b"\r\n" * 1 + (b"X-T: " + b"t" * 995 + b"\r\n") * 70 + b"\r\n", False,
     "trailers too large"),
    ("chunk without its CRLF", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok!\r\n0\r\n\r\n", False,
     "chunk not followed by CRLF"),
    ("body shorter than its length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", False, "incomplete"),
    ("chunked cut off", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", False, "incomplete"),
    ("head cut off", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", False, "incomplete"),
]


@pytest.mark.parametrize("wire, head_request, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parser(wire: bytes, head_request: bool, expected: Parsed | str) -> None:
    assert parse([wire], head_request) == expected
    for cut in boundaries(wire):
        assert parse([wire[:cut], wire[cut:]], head_request) == expected, f"split at byte {cut}"


def test_byte_by_byte() -> None:
    """Every case once more, one byte per feed (the small ones)."""
    for name, wire, head_request, expected in CASES:
        if len(wire) <= 2048:
            assert parse([wire[i:i + 1] for i in range(len(wire))], head_request) == expected, name
