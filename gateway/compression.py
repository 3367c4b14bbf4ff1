"""Response compression (SPEC §8): gzip and br of relayed answers, streamed chunk by chunk.

Built once per route at load: :func:`compression_for` resolves the route's setting
against the global ``compression`` section and gives a :class:`Compression` or None.
A route without compression has None on its plan and its answers pay nothing.

Per answer, :meth:`Compression.start` decides from the answer's head (after the
route's ``response_headers`` rules and the steps' ``on_response``) and the
request's ``Accept-Encoding``, and edits the head it compresses:

- never for HEAD, 1xx/204/304, a ranged answer (206, or any ``Content-Range``), an
  answer the upstream encoded (any ``Content-Encoding``), ``Cache-Control:
  no-transform``, a type outside ``types`` or a declared ``Content-Length`` below
  ``min_bytes`` (an answer of unknown length is compressed);
- an answer it could compress gets ``Vary: Accept-Encoding`` (merged with the
  upstream's ``Vary``) whether or not this client takes an encoding, so a cache
  keeps the variants apart (nginx's ``gzip_vary``, Envoy's compressor);
- a compressed one gets ``Content-Encoding``, loses ``Content-Length`` (it is sent
  chunked) and ``Accept-Ranges`` (ranges of the encoded bytes are not offered), and a
  strong ``ETag`` becomes weak (``W/"..."``: the bytes differ, the representation is
  the same), as nginx's gzip filter does.

The :class:`Encoder` is then fed each upstream chunk and flushes after it (zlib's
``Z_SYNC_FLUSH``, brotli's flush), so a streamed answer stays streamed and memory
stays bounded by the encoder's window: one encoder per compressed answer, made only then.

Negotiation (:func:`negotiate`) follows RFC 9110 §12.5.3 as Envoy and Traefik do: the
offered coding with the highest q wins; on equal q the order of ``encodings`` decides
(``br`` before ``gzip`` by default); ``q=0`` refuses a coding; ``*`` stands for any
coding not named; ``identity`` named with a higher q than every offered coding keeps
the answer as it is. An entry with a malformed q (``gzip;q=high``, ``q=1.5``) is
ignored, and when nothing is acceptable the answer goes unencoded (never 406: nginx,
Envoy and Traefik all do so).
"""

from __future__ import annotations

import re
import zlib
from typing import Protocol

import brotli
from tornado.httputil import HTTPHeaders

from .config import CompressionConfig

__all__ = ["ENCODINGS", "BROTLI_WINDOW_BITS", "Compression", "Encoder", "TypeMatch", "accept_encoding",
           "compression_for", "negotiate"]

ENCODINGS = ("br", "gzip")  # what the gateway can produce
BROTLI_WINDOW_BITS = 18  # a 256 KiB window (Envoy's default): bounds an encoder's memory
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")  # RFC 9110 §12.4.2
_NEVER = frozenset({204, 206, 304})
_CACHE_LIMIT = 256  # distinct short Accept-Encoding values remembered per route
_CACHED_LENGTH = 128  # longer values are negotiated each time (and not kept)


class Encoder(Protocol):
    """One answer's encoder: ``compress`` a chunk (flushed: the bytes so far are decodable),
    then ``finish`` once for the stream's tail."""

    def compress(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class GzipEncoder:
    """gzip (RFC 1952) via zlib, with a sync flush after every chunk."""

    __slots__ = ("_z",)

    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # 16 + 15: the gzip wrapper, a 32 KiB window

    def compress(self, chunk: bytes) -> bytes:
        z = self._z
        return z.compress(chunk) + z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    """br (RFC 7932), flushed after every chunk."""

    __slots__ = ("_b",)

    def __init__(self, quality: int) -> None:
        self._b = brotli.Compressor(quality=quality, lgwin=BROTLI_WINDOW_BITS)

    def compress(self, chunk: bytes) -> bytes:
        b = self._b
        return b.process(chunk) + b.flush()  # type: ignore[no-any-return]

    def finish(self) -> bytes:
        return self._b.finish()  # type: ignore[no-any-return]


class TypeMatch:
    """Whether a ``Content-Type`` is one of ``types``, compared without parameters and case:
    ``type/subtype``, ``type/*``, ``type/*+suffix`` (a structured syntax suffix, RFC 6838 §4.2.8:
    ``application/*+json`` takes ``application/problem+json``) or ``*/*``. An answer without a
    type never matches."""

    __slots__ = ("exact", "prefixes", "suffixed", "any", "_seen")

    def __init__(self, types: tuple[str, ...]) -> None:
        patterns = [t.strip().lower() for t in types]
        self.any = "*/*" in patterns
        self.exact = frozenset(p for p in patterns if "*" not in p)
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("/*") and p != "*/*")
        self.suffixed = tuple((p.split("/*", 1)[0] + "/", p.split("/*", 1)[1]) for p in patterns if "/*+" in p)
        self._seen: dict[str, bool] = {}  # answers' Content-Type values repeat: decided once each (bounded)

    def __call__(self, content_type: str | None) -> bool:
        if not content_type:
            return False
        seen = self._seen
        try:
            return seen[content_type]
        except KeyError:
            pass
        matched = self._match(content_type)
        if len(content_type) <= _CACHED_LENGTH:
            if len(seen) >= _CACHE_LIMIT:
                seen.clear()
            seen[content_type] = matched
        return matched

    def _match(self, content_type: str) -> bool:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in self.exact:
            return True
        kind, slash, subtype = media.partition("/")
        if not kind or not slash or not subtype:
            return False
        if self.any or media.startswith(self.prefixes):
            return True
        return any(media.startswith(prefix) and subtype.endswith(suffix) and len(subtype) > len(suffix)
                   for prefix, suffix in self.suffixed)


def negotiate(accept_encoding: str | None, offered: tuple[str, ...] = ENCODINGS) -> str | None:
    """The coding of ``offered`` to answer with for this ``Accept-Encoding`` value (repeated
    header lines joined with commas), or None to answer unencoded. See the module docstring."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = _weight(params) if params else 1.0
        if q is None:
            continue  # a malformed weight: the entry says nothing
        if coding == "x-gzip":  # RFC 9110 §8.4.1.3: equivalent to gzip
            coding = "gzip"
        if coding in weights:
            q = min(q, weights[coding])  # said twice: a refusal (or the lower weight) stands
        weights[coding] = q
    star = weights.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = weights.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and weights.get("identity", 0.0) > best_q:
        return None  # the client prefers the answer unencoded
    return best


def _weight(params: str) -> float | None:
    """The ``q`` of ``;q=0.5;...``: 1.0 when absent, None when malformed."""
    for param in params.split(";"):
        name, sep, value = param.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            if not sep or not _QVALUE.match(value):
                return None
            return float(value)
    return 1.0


class Compression:
    """One route's compression, built at load from its :class:`CompressionConfig`."""

    __slots__ = ("config", "min_bytes", "types", "offered", "_chosen")

    def __init__(self, config: CompressionConfig) -> None:
        self.config = config
        self.min_bytes = config.min_bytes
        self.types = TypeMatch(config.types)
        self.offered = tuple(config.encodings)
        self._chosen: dict[str, str | None] = {}

    def choose(self, accept_encoding: str | None) -> str | None:
        """:func:`negotiate` for this route's encodings; short values are remembered (bounded)."""
        if not accept_encoding:
            return None
        chosen = self._chosen
        try:
            return chosen[accept_encoding]
        except KeyError:
            pass
        coding = negotiate(accept_encoding, self.offered)
        if len(accept_encoding) <= _CACHED_LENGTH:
            if len(chosen) >= _CACHE_LIMIT:
                chosen.clear()
            chosen[accept_encoding] = coding
        return coding

    def start(self, method: str, status: int, out: HTTPHeaders, accept_encoding: str | None) -> Encoder | None:
        """Decide for one answer whose head is ``out`` (edited in place, see the module
        docstring): the encoder to feed its body through, or None to relay it as it is."""
        if not self.eligible(status, out):
            return None
        _add_vary(out)
        if method == "HEAD":
            return None
        coding = self.choose(accept_encoding)
        if coding is None:
            return None
        out["Content-Encoding"] = coding
        if "Content-Length" in out:
            del out["Content-Length"]
        if "Accept-Ranges" in out:
            del out["Accept-Ranges"]
        etag = _field(out, "ETag")
        if etag is not None and etag.startswith('"'):
            out["ETag"] = "W/" + etag
        config = self.config
        return BrotliEncoder(config.brotli_quality) if coding == "br" else GzipEncoder(config.gzip_level)

    def encode_whole(self, method: str, status: int, out: HTTPHeaders, body: bytes,
                     accept_encoding: str | None) -> bytes:
        """A whole body made by the gateway (an aggregate answer): compressed when :meth:`start`
        says so, its head edited; the caller sets ``Content-Length`` from what it returns."""
        out["Content-Length"] = str(len(body))
        encoder = self.start(method, status, out, accept_encoding)
        if encoder is None:
            return body
        return encoder.compress(body) + encoder.finish()

    def eligible(self, status: int, out: HTTPHeaders) -> bool:
        """Whether an answer with this status and head may be compressed at all (any client)."""
        if status < 200 or status in _NEVER or "Content-Encoding" in out or "Content-Range" in out:
            return False
        if not self.types(_field(out, "Content-Type")):
            return False
        length = _field(out, "Content-Length")
        if length is not None and length.isdigit() and int(length) < self.min_bytes:
            return False
        cache_control = _field(out, "Cache-Control")
        if cache_control is not None and "no-transform" in cache_control.lower():
            return all(token.strip() != "no-transform" for token in cache_control.lower().split(","))
        return True


def _add_vary(out: HTTPHeaders) -> None:
    """``Vary: Accept-Encoding``, merged with what the answer varies on already."""
    vary = _field(out, "Vary")
    if not vary:
        out["Vary"] = "Accept-Encoding"
        return
    names = [name.strip().lower() for name in vary.split(",")]
    if "*" in names or "accept-encoding" in names:
        return
    out["Vary"] = vary + ", Accept-Encoding"


def accept_encoding(headers: HTTPHeaders) -> str | None:
    """A request's ``Accept-Encoding`` (repeated lines joined with commas), or None."""
    return _field(headers, "Accept-Encoding")


def _field(headers: HTTPHeaders, name: str) -> str | None:
    # `in` then `[]`: HTTPHeaders.get() pays for a KeyError on every absent field
    return headers[name] if name in headers else None


def compression_for(route: CompressionConfig | bool | None, default: CompressionConfig | None
                    ) -> Compression | None:
    """A route's compression: its own section, the global one (``None`` or ``true`` on the route;
    ``true`` without a global section: the defaults), or None (``false``, or neither given)."""
    if route is False:
        return None
    if isinstance(route, CompressionConfig):
        return Compression(route)
    if default is not None:
        return Compression(default)
    return Compression(CompressionConfig()) if route is True else None
