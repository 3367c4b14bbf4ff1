"""The strict HTTP/1.1 response parser: bytes in, one answer's events out, no I/O.

A :class:`ResponseParser` reads exactly one response. :meth:`ResponseParser.feed`
appends bytes; :meth:`ResponseParser.step` returns the next event: a :class:`Head`
once (interim 1xx answers are skipped), then body pieces as ``bytes``, then ``None``
(more bytes needed, or the answer is over: see ``done``). It never reads past the
answer: the bytes after it stay in ``leftover``. A close-delimited body ends with
:meth:`ResponseParser.eof`.

The rules (SPEC §4, README "answers are read strictly", tests/unit/test_http1_parser.py):
a status line ``HTTP/1.x NNN reason``; field lines a token, a colon and a value without
control characters; obs-fold joined to the previous value with one space (RFC 9112 §5.2);
a head over 64 KiB, a 101, Transfer-Encoding with Content-Length, unequal or non-numeric
lengths and a bad chunk raise :class:`~gateway.errors.BadGateway` (its ``log_message``
says why). Equal repeated lengths are folded into one ``Content-Length`` field; chunk
extensions and trailer fields are read and dropped.

Measured against llhttp (``httptools``, bench/parser_bench.py): see the README's
measured-choices table for why this parser stays hand-written.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import BadGateway
from ..headers import Fields
from ..tables import BODILESS_STATUSES

__all__ = ["Head", "ResponseParser", "MAX_RESPONSE_HEAD_BYTES", "MAX_CHUNK_LINE_BYTES"]

MAX_RESPONSE_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 1024
# The field lines of a response head (each with its CRLF): a token, a colon and a value without
# control characters, or a folded continuation (RFC 9112 obs-fold). Checked once per head.
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_LINES = re.compile(r"(?:(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:|[ \t])[\t\x20-\x7e\x80-\xff]*\r\n)*")

# Parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class Head(NamedTuple):
    """A final response head: what ``on_fields`` receives, and whether the connection may be reused."""

    status: int
    reason: str
    fields: Fields
    keep_alive: bool


def _malformed(why: str) -> BadGateway:
    return BadGateway("the upstream sent an invalid answer", log_message=why)


class ResponseParser:
    """One response, parsed strictly and incrementally (see the module docstring).

    ``done`` is True once the answer is complete; ``leftover`` then holds the bytes that came
    after it (an answer nobody asked for: the connection must not be reused). ``until_close``
    is True while the body is delimited by the connection closing.
    """

    __slots__ = ("head_request", "done", "keep_alive", "_state", "_remaining", "_buffer")

    def __init__(self, head_request: bool = False) -> None:
        self.head_request = head_request
        self.done = False
        self.keep_alive = False
        self._state = _HEAD
        self._remaining = 0
        self._buffer = b""

    @property
    def until_close(self) -> bool:
        return self._state == _UNTIL_CLOSE

    @property
    def leftover(self) -> bytes:
        """The bytes after a complete answer (empty before it is complete)."""
        return self._buffer if self.done else b""

    def feed(self, data: bytes) -> None:
        """Append bytes; after a complete answer they are ``leftover`` and the connection is not reusable."""
        if self.done and data:
            self.keep_alive = False
        self._buffer = self._buffer + data if self._buffer else data

    def eof(self) -> bool:
        """The upstream closed the connection: True if that completes the answer (a close-delimited body)."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            self.done = True
        return self.done

    def step(self) -> Head | bytes | None:
        """The next event from the buffered bytes: a :class:`Head`, a body piece, or None (more
        bytes needed, or ``done``). Raises :class:`~gateway.errors.BadGateway` on a malformed answer."""
        while True:
            state = self._state
            buffer = self._buffer
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0 or end > MAX_RESPONSE_HEAD_BYTES:
                    if end > MAX_RESPONSE_HEAD_BYTES or len(buffer) > MAX_RESPONSE_HEAD_BYTES + 3:
                        raise _malformed("response head too large")
                    return None
                self._buffer = buffer[end + 4:]
                head = self._head(buffer[:end])
                if head is not None:
                    return head
            elif state == _LENGTH or state == _CHUNK_DATA:
                if not buffer:
                    return None
                take = self._remaining
                chunk = buffer if len(buffer) <= take else buffer[:take]
                self._buffer = buffer[len(chunk):]
                self._remaining = take - len(chunk)
                if self._remaining == 0:
                    self._state = _DONE if state == _LENGTH else _CHUNK_END
                return chunk
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                # the same limit whether the line came whole or in pieces: a CRLF not yet here would end past it
                if end > MAX_CHUNK_LINE_BYTES or (end < 0 and len(buffer) > MAX_CHUNK_LINE_BYTES + 1):
                    raise _malformed("chunk size line too long")
                if end < 0:
                    return None
                size_text = buffer[:end].split(b";", 1)[0].strip()
                self._buffer = buffer[end + 2:]
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 16:
                    raise _malformed("bad chunk size")
                self._remaining = int(size_text, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return None
                if buffer[:2] != b"\r\n":
                    raise _malformed("chunk not followed by CRLF")
                self._buffer = buffer[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buffer.find(b"\r\n")
                limit = MAX_RESPONSE_HEAD_BYTES - self._remaining  # _remaining: the trailer bytes so far
                if end > limit or (end < 0 and len(buffer) > limit + 1):
                    raise _malformed("trailers too large")
                if end < 0:
                    return None
                self._remaining += end + 2
                self._buffer = buffer[end + 2:]
                if end == 0:  # the blank line after the (ignored) trailer fields
                    self._state = _DONE
            elif state == _UNTIL_CLOSE:
                if not buffer:
                    return None
                self._buffer = b""
                return buffer
            else:  # _DONE
                if not self.done:
                    self.done = True
                    if self._buffer:
                        self.keep_alive = False  # more bytes than the answer: the connection is not reusable
                return None

    def _head(self, block: bytes) -> Head | None:
        """Read a status line and header fields; choose how the body is framed. None for a 1xx."""
        text = block.decode("latin-1")
        status_line, _, field_lines = text.partition("\r\n")
        parsed = _STATUS_LINE.fullmatch(status_line)
        if parsed is None:
            raise _malformed(f"bad status line {status_line[:80]!r}")
        minor, code_text, reason = parsed.groups()
        status = int(code_text)
        if status < 200:
            if status == 101:
                raise _malformed("101 Switching Protocols is not supported")
            return None  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if field_lines:
            field_lines += "\r\n"
            if field_lines[0] in " \t" or not _FIELD_LINES.fullmatch(field_lines):
                raise _malformed("malformed header field")
        fields: Fields = []
        lengths: list[str] = []
        transfer_encoding = connection = ""
        for line in field_lines.split("\r\n")[:-1]:
            if line[0] in " \t":  # obsolete line folding: part of the previous value
                name, value = fields[-1]
                folded = line.strip(" \t")
                fields[-1] = (name, f"{value} {folded}" if value and folded else value or folded)
                continue
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            fields.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                lengths += value.split(",")
            elif lowered == "transfer-encoding":
                transfer_encoding += "," + value
            elif lowered == "connection":
                connection += "," + value.lower()
        keep_alive = minor == "1" and "close" not in connection
        if self.head_request or status in BODILESS_STATUSES:
            self._state = _DONE
        elif transfer_encoding:
            if lengths:
                raise _malformed("both Transfer-Encoding and Content-Length")
            if transfer_encoding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_CLOSE
                keep_alive = False
        elif lengths:
            distinct = {v.strip() for v in lengths}
            length_text = distinct.pop()
            if distinct or not length_text.isdigit() or not length_text.isascii() or len(length_text) > 18:
                raise _malformed("bad Content-Length")
            if len(lengths) > 1:  # one value downstream, however many came
                fields = [f for f in fields if f[0].lower() != "content-length"] + [("Content-Length", length_text)]
            self._remaining = int(length_text)
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._state = _UNTIL_CLOSE
            keep_alive = False
        self.keep_alive = keep_alive
        return Head(status, reason or "", fields, keep_alive)
