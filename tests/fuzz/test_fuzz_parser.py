"""Property tests of the upstream response parser (gateway/upstream/parser.py), in process.

Answers are generated (1xx preambles, status lines, fields with obs-fold, every framing,
bytes after the answer), then sometimes mutated byte by byte, or are plain random bytes,
and are fed in random splits. Every case keeps:

- only :class:`~gateway.errors.BadGateway` is raised, nothing else;
- the outcome does not depend on how the bytes arrive (the same as when fed whole);
- one answer at most: a parser hands on one head, never a second;
- nothing is read past the answer: what follows it is ``leftover``, untouched, and the
  connection is then not reusable.

A generated answer that was not mutated must moreover parse to exactly its body and leave
exactly the bytes that followed it (or be refused, when its framing is one the rules refuse).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadGateway
from gateway.upstream.parser import Head, ResponseParser
from tests.fuzz.wire import count

BODILESS = (204, 304)
TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
VALUE = st.binary(max_size=24).map(lambda b: bytes(c for c in b if c == 9 or c >= 32 and c != 127))
# Bytes a parser gets wrong: line ends, separators, signs, hex digits, and latin-1 characters that
# Python's str.isdigit() or str.strip() take for digits or spaces.
ODD_BYTES = b"\r\n\t ,;:-+09afAF\x00\x7f\x80\x85\xa0\xb2\xb3\xb9\xff"
FRAMING_NAMES = ("content-length", "transfer-encoding", "connection")


@dataclass(frozen=True)
class Outcome:
    """What a parser made of some bytes: its heads, body, leftover, and end state or error."""

    heads: tuple[Head, ...]
    body: bytes
    leftover: bytes
    done: bool
    keep_alive: bool
    error: str | None


@dataclass(frozen=True)
class Answer:
    wire: bytes
    head_request: bool
    body: bytes | None  # the body it must parse to, when generated and not mutated (None: no oracle)
    after: bytes  # the bytes after the answer
    refused: bool  # generated with framing the rules refuse (and a body to frame)


def run(pieces: list[bytes], head_request: bool) -> Outcome:
    """Feed ``pieces``; the outcome. Anything raised but BadGateway fails the test."""
    parser = ResponseParser(head_request)
    heads: list[Head] = []
    body = b""
    error = None
    try:
        for piece in pieces:
            parser.feed(piece)
            while (event := parser.step()) is not None:
                if isinstance(event, bytes):
                    assert event and heads, "an empty body piece, or a body before the head"
                    body += event
                else:
                    heads.append(event)
    except BadGateway as exc:
        error = exc.log_message
    if error is None and not parser.done:
        parser.eof()
    return Outcome(tuple(heads), body, parser.leftover, parser.done, parser.keep_alive, error)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    """A generated answer, with what it must parse to."""
    parts = [draw(st.sampled_from((b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")))
             for _ in range(draw(st.integers(0, 2)))]
    status = draw(st.sampled_from((200, 201, 204, 304, 404, 500, 599, 299)))
    version = draw(st.sampled_from((b"1.1", b"1.0")))
    reason = draw(st.sampled_from((b" OK", b"", b" ", b" Some Reason", b" \xe9t\xe9")))
    lines = [b"HTTP/" + version + b" %d" % status + reason]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(TOKEN)
        if name.lower() in FRAMING_NAMES:
            continue
        lines.append(name.encode() + b":" + draw(st.sampled_from((b"", b" ", b"\t"))) + draw(VALUE))
        if draw(st.booleans()) and draw(st.booleans()):
            lines.append(draw(st.sampled_from((b" ", b"\t", b"   "))) + draw(VALUE))  # obs-fold
    if draw(st.booleans()):
        lines.append(b"Connection: " + draw(st.sampled_from((b"close", b"keep-alive", b"Upgrade, Close"))))
    payload = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(("length", "length", "chunked", "close", "unequal", "both")))
    head_request = draw(st.booleans()) and not draw(st.booleans())
    refused = framing in ("unequal", "both") and not head_request and status not in BODILESS
    if framing in ("length", "unequal", "both"):
        length = len(payload)
        form = draw(st.sampled_from((b"%d", b"0%d", b"%d ")))  # repeated values equal as text (RFC 9110 §8.6)
        for _ in range(draw(st.integers(2 if framing == "unequal" else 1, 3))):
            value = form % length if framing != "unequal" else b"%d" % (length + draw(st.integers(1, 5)))
            if draw(st.booleans()):
                value = form % length + b", " + value
            lines.append(draw(st.sampled_from((b"Content-Length: ", b"content-length:", b"CONTENT-LENGTH:  "))) + value)
            if framing == "unequal":
                framing = "length"  # one unequal value is enough; the rest equal
        encoded = payload
    if framing == "both" or framing == "chunked":
        lines.append(draw(st.sampled_from((b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked"))))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        encoded = b""
        for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
            if end > start:
                ext = draw(st.sampled_from((b"", b";a=b", b" ; x")))
                encoded += b"%x" % (end - start) + ext + b"\r\n" + payload[start:end] + b"\r\n"
        encoded += b"0\r\n" + b"".join(b"X-T: %d\r\n" % i for i in range(draw(st.integers(0, 2)))) + b"\r\n"
    if framing == "close":
        encoded = payload
    parts.append(b"\r\n".join(lines) + b"\r\n\r\n" + encoded)
    after = draw(st.sampled_from((b"", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"X")))
    wire = b"".join(parts) + after
    if head_request or status in BODILESS:
        body, after = b"", encoded + after
    elif framing == "close":
        body, after = payload + after, b""
    else:
        body = payload
    return Answer(wire, head_request, body, after, refused)


@st.composite
def mutated(draw: st.DrawFn) -> Answer:
    """A generated answer with a few bytes flipped, inserted, deleted or duplicated: no oracle."""
    answer = draw(answers())
    wire = bytearray(answer.wire)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(wire)))
        kind = draw(st.sampled_from(("flip", "insert", "delete", "duplicate")))
        if kind == "insert":
            wire[at:at] = draw(st.sampled_from((b"\r\n", b"\n", b"\r", b" ", b":", b"0", b"\x00", b";", b"\r\n\r\n")))
        elif at < len(wire):
            if kind == "flip":
                wire[at] = draw(st.one_of(st.integers(0, 255), st.sampled_from(ODD_BYTES)))
            elif kind == "delete":
                del wire[at:at + draw(st.integers(1, 4))]
            else:
                wire[at:at] = wire[at:at + draw(st.integers(1, 40))]
    return Answer(bytes(wire), answer.head_request, None, b"", False)


ODD_TEXT = st.lists(st.sampled_from([bytes([b]) for b in b"0123456789abcdefABCDEF" + ODD_BYTES]), max_size=8).map(b"".join)
# A framing field or a chunk size line made of digits and odd bytes, before random bytes.
ODD_FRAMING = st.builds(
    lambda name, value, rest: Answer(b"HTTP/1.1 200 OK\r\n" + name + value + b"\r\n\r\n" + rest, False, None, b"", False),
    st.sampled_from((b"Content-Length: ", b"Content-Length: 1\r\nContent-Length:", b"Transfer-Encoding: ",
                     b"Transfer-Encoding: chunked\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")),
    ODD_TEXT, st.binary(max_size=40))
RANDOM = st.builds(lambda prefix, rest, head: Answer(prefix + rest, head, None, b"", False),
                   st.sampled_from((b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")),
                   st.binary(max_size=200), st.booleans())


@st.composite
def pieces(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at up to 8 random places."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def check(answer: Answer, data: st.DataObject) -> None:
    count("parser")
    whole = run([answer.wire], answer.head_request)
    split = run(data.draw(pieces(answer.wire)), answer.head_request)
    assert split == whole, "the outcome depends on how the bytes arrive"
    for cut in range(1, len(answer.wire)):  # and every cut in two: the edges of a framing are where bugs hide
        assert run([answer.wire[:cut], answer.wire[cut:]], answer.head_request) == whole, f"split at byte {cut}"
    assert len(whole.heads) <= 1, "one answer parsed as two"
    if whole.done:
        assert answer.wire.endswith(whole.leftover), "the leftover is not the bytes after the answer"
        if whole.leftover:
            assert not whole.keep_alive, "bytes after the answer, and the connection kept"
    if answer.body is None:
        return
    if answer.refused:
        assert whole.error in ("bad Content-Length", "both Transfer-Encoding and Content-Length"), whole
        return
    assert whole.error is None, f"a well-formed answer refused: {whole.error}"
    assert whole.done and len(whole.heads) == 1
    assert whole.body == answer.body
    assert whole.leftover == answer.after


@given(answers(), st.data())
def test_generated(answer: Answer, data: st.DataObject) -> None:
    check(answer, data)


@given(mutated(), st.data())
def test_mutated(answer: Answer, data: st.DataObject) -> None:
    check(answer, data)


@given(st.one_of(RANDOM, ODD_FRAMING), st.data())
def test_random_bytes(answer: Answer, data: st.DataObject) -> None:
    check(answer, data)
