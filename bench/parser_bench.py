"""CPU per answer of the upstream response parser: ours (gateway/upstream/parser.py) next to llhttp.

Usage: python bench/parser_bench.py [--iterations 20000] [--repeats 7]

Both parsers get the same bytes, an nginx-like answer (8 header lines) with a 108-byte JSON
body and with a 64 KiB body, fed whole and fed in 16 KiB reads (what a socket hands over),
``iterations`` times; the best of ``repeats`` runs is printed in µs per answer. Each parser
does the same work for the gateway: status, reason, fields as ``(str, str)`` pairs, the body
pieces handed on, the end of the answer seen. The llhttp side (``httptools``, the parser
uvicorn uses) is the thinnest adapter that could do that, with none of the strictness rules
it would still need (the 64 KiB head limit, 1xx skipping, 101 refused, equal lengths folded):
it is the floor of an httptools-based parser, not a full one. ``httptools`` comes with the
``bench`` extra.

Also prints which of the README's strictness rules llhttp's defaults keep, answer by answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import httptools

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.errors import BadGateway  # noqa: E402
from gateway.upstream.parser import Head, ResponseParser  # noqa: E402

HEAD = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 07:00:00 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
        b"Connection: keep-alive\r\nETag: \"6763f2a1-6c\"\r\nAccept-Ranges: bytes\r\n\r\n")
SMALL_BODY = b'{"id": 12345, "name": "small answer", "tags": ["a", "b", "c"], "ok": true, "pad": "' + b"x" * 23 + b'"}'
LARGE_BODY = b"y" * 65536
assert len(SMALL_BODY) == 108


def ours(pieces: list[bytes]) -> int:
    """Parse one answer with ResponseParser; the body bytes seen."""
    parser = ResponseParser()
    seen = 0
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.step()) is not None:
            if isinstance(event, bytes):
                seen += len(event)
            else:
                status, reason, fields = event.status, event.reason, event.fields  # noqa: F841
    if not parser.done:
        raise RuntimeError("answer not complete")
    return seen


class _Llhttp:
    """The thinnest httptools adapter that hands the gateway what it needs."""

    __slots__ = ("fields", "reason", "status", "seen", "complete")

    def __init__(self) -> None:
        self.fields: list[tuple[str, str]] = []
        self.reason = ""
        self.status = 0
        self.seen = 0
        self.complete = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, chunk: bytes) -> None:
        self.seen += len(chunk)

    def on_message_complete(self) -> None:
        self.complete = True


def llhttp(pieces: list[bytes]) -> int:
    """Parse one answer with httptools.HttpResponseParser; the body bytes seen."""
    sink = _Llhttp()
    parser = httptools.HttpResponseParser(sink)
    for piece in pieces:
        parser.feed_data(piece)
    sink.status = parser.get_status_code()
    if not sink.complete:
        raise RuntimeError("answer not complete")
    return sink.seen


def best_us(parse: Callable[[list[bytes]], int], pieces: list[bytes], iterations: int, repeats: int) -> float:
    expected = sum(len(p) for p in pieces) - pieces[0].index(b"\r\n\r\n") - 4
    if parse(pieces) != expected:
        raise RuntimeError(f"{parse.__name__}: wrong body length")
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(iterations):
            parse(pieces)
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e6


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


RULES = [
    ("1xx skipped", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("101 refused", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
    ("TE with CL refused", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("unequal lengths refused", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
    ("equal lengths folded", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
    ("obs-fold joined", b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok"),
    ("head over 64 KiB refused", b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok"),
    ("bad status line refused", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"),
]


def llhttp_outcome(data: bytes) -> str:
    sink = _Llhttp()
    parser = httptools.HttpResponseParser(sink)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return "upgrade signalled"
    except httptools.HttpParserError as exc:
        return f"refused ({exc})"
    return f"accepted: {parser.get_status_code()} {sink.fields} body {sink.seen}"


def ours_outcome(data: bytes) -> str:
    parser = ResponseParser()
    parser.feed(data)
    heads: list[Head] = []
    try:
        while (event := parser.step()) is not None:
            if isinstance(event, Head):
                heads.append(event)
    except BadGateway as exc:
        return f"refused ({exc.log_message})"
    return f"accepted: {heads[0].status} {heads[0].fields}"


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--iterations", type=int, default=20000)
    options.add_argument("--repeats", type=int, default=7)
    args = options.parse_args()
    print(f"python {sys.version.split()[0]}, httptools {httptools.__version__}; best of {args.repeats} x "
          f"{args.iterations} answers, µs per answer")
    print(f"{'answer':<28}{'ours':>10}{'llhttp':>10}{'ours/llhttp':>13}")
    for name, body in (("108 B JSON, whole", SMALL_BODY), ("64 KiB, whole", LARGE_BODY),
                       ("64 KiB, 16 KiB reads", LARGE_BODY)):
        answer = HEAD % len(body) + body
        pieces = split(answer, 16384) if "reads" in name else [answer]
        iterations = args.iterations if len(body) < 1000 else max(1, args.iterations // 4)
        a = best_us(ours, pieces, iterations, args.repeats)
        b = best_us(llhttp, pieces, iterations, args.repeats)
        print(f"{name:<28}{a:>10.2f}{b:>10.2f}{a / b:>13.2f}")
    print("\nstrictness rules, llhttp defaults next to ours:")
    for rule, data in RULES:
        print(f"- {rule}\n    llhttp: {llhttp_outcome(data)[:110]}\n    ours:   {ours_outcome(data)[:110]}")


if __name__ == "__main__":
    main()
