"""The ``validate_json`` body rule: a streaming syntax check fed chunk by chunk as the body arrives.

Why streaming: decoding the whole buffered body into Python objects cost 27× the
body in memory (a 10 MiB ``[{},{},...]`` grew the process by 270 MiB), held the
event loop for the whole decode (738 ms), and a body nested 1000 deep raised
RecursionError, answered as a 500. :class:`JsonBodyCheck` instead runs yajl (through
ijson's C backend) over each chunk as ``data_received`` gets it: no object tree is
built, the CPU is spread over the upload, and a malformed prefix is refused before
the rest of the body is read. Memory is the parser's own (a stack of one byte per
level), one slice's events (dropped after each slice), and a string or number cut by
a chunk's end, kept back until it is complete: yajl re-reads an unfinished token from
its start on every call, which made a 10 MiB string cost 1 s and a 10 MiB number 15 s
when fed as it arrived. Fed whole, every body costs time linear in its size.

What is accepted: exactly one JSON value (RFC 8259), UTF-8, surrounded by optional
whitespace, nested at most :data:`MAX_DEPTH` deep. Deliberate differences from the
``json.loads`` that ran before (each in ``tests/unit/test_jsonbody.py``):

- ``NaN``, ``Infinity`` and ``-Infinity`` are refused: they are not JSON, and most
  upstream parsers (JSON.parse, Go, Jackson's default) refuse them;
- only UTF-8 (RFC 8259 §8.1): a UTF-16/32 body, a byte-order mark, or an encoded
  lone surrogate (``ED A0 80``, which ``json.loads`` let through) is refused;
- nesting deeper than :data:`MAX_DEPTH` is refused (``json.loads`` failed with
  RecursionError, a 500, from about 1000 levels);
- a number whose exponent is beyond ±999999999999999999 (``1e2345678901234567890``) is
  refused: ijson makes numbers Decimals, which cannot hold it (``json.loads`` made it
  ``inf`` or ``0.0``);
- an escaped lone low surrogate (``"\\udc00"`` to ``"\\udfff"``) is refused as not UTF-8:
  yajl turns it into an encoded surrogate. RFC 8259 §8.2 leaves what such a string means
  unpredictable; a lone high one (``"\\ud800"``) still passes, as yajl makes it ``?``.

Kept as before: duplicate object keys pass (the check is syntax only; which value
wins is the upstream's business), trailing data after the value is refused, and an empty body (no bytes at all)
passes: it carries no JSON to be malformed, and clients send
``Content-Type: application/json`` on bodiless requests. A body of only whitespace
is refused, as before.

Only JSON media types are checked (:func:`is_json_media_type`); any other
``Content-Type`` passes untouched.

The C backend is required, not preferred: ijson's pure-Python backends are tens of
times slower and would stall the loop on every JSON upload, so importing this module
fails loudly (at gateway start) when the C backend is missing, rather than falling back.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate
from operator import itemgetter

from .errors import InvalidJson

try:
    from ijson import JSONError, sendable_list
    from ijson.backends import yajl2_c
except ImportError as exc:  # pragma: no cover - the packaging guarantees it
    raise ImportError(
        "the gateway needs ijson with its C backend (yajl2_c) for validate_json; "
        "install a binary wheel of ijson or build it with a C compiler") from exc

__all__ = ["MAX_DEPTH", "YIELD_BYTES", "JsonBodyCheck", "is_json_media_type"]

MAX_DEPTH = 512
"""The deepest nesting of arrays and objects a checked body may have.

Real API payloads rarely pass a few dozen levels, so 512 refuses nothing real. It is
also kept under what recursive decoders behind the gateway survive: CPython's ``json``
(the old check) raised RecursionError near 1000 levels, Ruby's JSON refuses past 100
by default, Go's encoding/json past 10000. Not a config key: a route that carries deeper JSON
can leave validate_json off."""

YIELD_BYTES = 64 * 1024
"""How much body :meth:`JsonBodyCheck.feed` checks between two turns of the event loop: a few
milliseconds of CPU for the densest JSON (``[{},{},...]``, two parser events every three bytes)."""

# The change of nesting depth each basic_parse event makes.
_DEPTH_STEP = {
    "start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1,
    "map_key": 0, "string": 0, "number": 0, "boolean": 0, "null": 0,
}
_event_name = itemgetter(0)
_NUMBER_BYTES = b"0123456789+-.eE"
_NUMBER_SET = frozenset(_NUMBER_BYTES)
_NOTHING, _STRING, _NUMBER = object(), object(), object()
_UNTERMINATED = ValueError("premature EOF")  # yajl's words for a body that ends too early
_SLICE = 16 * 1024  # fed to the parser at most this much at a time: one slice's events (up to one a byte, ~70 bytes each) are held


def is_json_media_type(content_type: str) -> bool:
    """Whether a body of this ``Content-Type`` is checked: ``application/json``, any ``*/*+json``,
    or no Content-Type at all (parameters such as ``charset`` are ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media == "application/json" or media.endswith("+json")


class JsonBodyCheck:
    """One request body's syntax check: :meth:`feed` each chunk in order, then :meth:`close`.

    Both raise :class:`~gateway.errors.InvalidJson` (400 ``invalid_json``) as soon as the
    body cannot be valid JSON; after a failure the check stays failed. The body is the
    caller's to buffer; the check keeps only references to the chunks of a string or
    number not yet complete.
    """

    __slots__ = ("max_depth", "_events", "_parser", "_depth", "_fed", "_failed", "_unyielded",
                 "_held", "_open", "_escaped")

    def __init__(self, max_depth: int = MAX_DEPTH) -> None:
        self.max_depth = max_depth
        self._events = sendable_list()
        # Not use_float: with it yajl converts numbers itself and refuses what overflows a double or
        # an int64 (1e400, 2**64), which are JSON all the same.
        self._parser = yajl2_c.basic_parse_coro(self._events)
        self._depth = 0
        self._fed = False
        self._unyielded = 0
        self._failed: InvalidJson | None = None
        # Not yet given to the parser: the start of a string or number whose end has not arrived.
        self._held: list[bytes] = []
        self._open = _NOTHING  # what _held is the start of: _NOTHING, _STRING or _NUMBER
        self._escaped = False  # the held string ends in an unpaired backslash: the next byte is escaped

    def feed(self, chunk: bytes) -> bool:
        """Check the next piece of the body. Raises InvalidJson if the body is already not JSON.

        Returns True when at least :data:`YIELD_BYTES` have been checked since it last did: the
        caller should then let the event loop run before the next piece, because Tornado hands
        over the chunks it has buffered back to back, without a turn of the loop in between.

        A string or number cut by the end of ``chunk`` is kept back (a reference to ``chunk``)
        until its end arrives: yajl re-reads an unfinished token from its start on every call,
        so feeding a 10 MiB string in 64 KiB chunks would cost 160 passes over it.
        """
        if self._failed is not None:
            raise self._failed
        if not chunk:
            return False
        self._fed = True
        self._cut(chunk)
        self._unyielded += len(chunk)
        if self._unyielded < YIELD_BYTES:
            return False
        self._unyielded = 0
        return True

    def close(self) -> None:
        """The body is complete. Raises InvalidJson unless it was exactly one JSON value (or empty)."""
        if self._failed is not None:
            raise self._failed
        if not self._fed:
            return  # no body: nothing to be malformed
        if self._open is _STRING:
            # Ends inside a string. Said here, not left to yajl: after a complete value it takes an
            # unterminated string ('{}"') for finished.
            self._fail(_UNTERMINATED)
        if self._held:
            self._send(b"")
        self._run(self._parser.close)

    def _cut(self, chunk: bytes) -> None:
        """Give ``chunk`` to the parser in pieces of about :data:`_SLICE` bytes, each ending outside
        any string or number; keep back a token the chunk ends inside.

        Where strings start and end is found with bytes methods (C loops): once escaped
        backslashes and escaped quotes are masked, every ``"`` left delimits a string.
        """
        n = len(chunk)
        if self._escaped:
            chunk_for_quotes = b"x" + chunk[1:]  # escaped by the held string's last backslash
        else:
            chunk_for_quotes = chunk
        quotes = chunk_for_quotes.replace(b"\\\\", b"xx").replace(b'\\"', b"xx")
        done = 0  # chunk[:done] has been given to the parser
        if self._open is _STRING:
            end = quotes.find(b'"')
            if end < 0:
                self._hold(chunk, _STRING, quotes)
                return
            done = self._send(chunk[:end + 1])
        elif self._open is _NUMBER:
            end = n - len(chunk.lstrip(_NUMBER_BYTES))
            if end == n:
                self._hold(chunk, _NUMBER, quotes)
                return
            done = self._send(chunk[:end])
        while done < n:
            cut = min(done + _SLICE, n)
            if quotes.count(b'"', done, cut) & 1:  # the cut falls inside a string: move it to the string's end
                end = quotes.find(b'"', cut)
                if end < 0:
                    start = quotes.rfind(b'"', done, cut)
                    self._send(chunk[done:start])
                    self._hold(chunk[start:], _STRING, quotes)
                    return
                cut = end + 1
            elif chunk[cut - 1] in _NUMBER_SET:  # the cut may fall inside a number: move it past the number
                end = n - len(chunk[cut:].lstrip(_NUMBER_BYTES))
                if end == n:
                    start = len(chunk[done:cut].rstrip(_NUMBER_BYTES)) + done
                    self._send(chunk[done:start])
                    self._hold(chunk[start:], _NUMBER, quotes)
                    return
                cut = end
            done += self._send(chunk[done:cut])

    def _hold(self, piece: bytes, token: object, quotes: bytes) -> None:
        if piece:
            self._held.append(piece)
        self._open = token
        self._escaped = token is _STRING and quotes.endswith(b"\\")

    def _send(self, piece: bytes) -> int:
        """Give the held bytes and then ``piece`` to the parser; the length of ``piece``."""
        if self._held:
            self._held.append(piece)
            whole = b"".join(self._held)
            self._held = []
            self._open = _NOTHING
            self._escaped = False
        else:
            whole = piece
        if whole:
            self._run(self._parser.send, whole)
        return len(piece)

    def _run(self, step: Callable[..., object], *args: bytes) -> None:
        """One step of the parser, its failure translated, then its events counted."""
        try:
            step(*args)
        except (JSONError, ValueError, ArithmeticError) as exc:  # ArithmeticError: decimal's, below
            self._fail(exc)
        except SystemError as exc:
            # ijson 3.6's C backend reports an integer past Python's int digit limit (4300 digits,
            # CVE-2020-10735) as a SystemError caused by int()'s ValueError; json.loads refused
            # those too. Any other SystemError is a real one.
            if not isinstance(exc.__cause__, ValueError):
                raise
            self._fail(exc.__cause__)
        self._count_depth()

    def _count_depth(self) -> None:
        """Follow the nesting through the last send's events (in C: no Python code runs per event),
        then drop them: at most one send's events are ever held."""
        events = self._events
        if not events:
            return
        levels = list(accumulate(map(_DEPTH_STEP.__getitem__, map(_event_name, events)), initial=self._depth))
        del events[:]
        self._depth = levels[-1]
        if max(levels) > self.max_depth:
            self._fail(None)

    def _fail(self, exc: Exception | None) -> None:
        self._events.clear()
        self._held = []
        error = self._failed = InvalidJson("request body is not valid JSON: " + _reason(exc, self.max_depth))
        raise error from None


def _reason(exc: Exception | None, max_depth: int) -> str:
    """Our own words for why (SPEC §4: error bodies carry no library message)."""
    if exc is None:
        return f"nested deeper than {max_depth} levels"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    text = str(exc)
    if "premature EOF" in text:
        return "it ends before the value is complete"
    if "trailing garbage" in text:
        return "data follows the value"
    if "UTF8" in text:
        return "not UTF-8"
    return "malformed"
