"""gateway.compression as pure logic: Accept-Encoding negotiation, type matching, the head an
answer gets, the encoders (their output decodes to the input, chunk by chunk) and a route's
resolution against the global section."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
from tornado.httputil import HTTPHeaders

from gateway.compression import (
    BrotliEncoder,
    Compression,
    GzipEncoder,
    TypeMatch,
    compression_for,
    negotiate,
)
from gateway.config import CompressionConfig


@pytest.mark.parametrize("accept, offered, expected", [
    (None, ("br", "gzip"), None),
    ("", ("br", "gzip"), None),
    ("gzip", ("br", "gzip"), "gzip"),
    ("br", ("br", "gzip"), "br"),
    ("gzip, deflate, br", ("br", "gzip"), "br"),  # equal q: the gateway's order
    ("gzip, deflate, br", ("gzip", "br"), "gzip"),
    ("gzip, br", ("gzip",), "gzip"),  # br not offered
    ("br;q=0.5, gzip", ("br", "gzip"), "gzip"),  # the higher q wins over the gateway's order
    ("br;q=1.0, gzip;q=0.999", ("br", "gzip"), "br"),
    ("GZIP", ("br", "gzip"), "gzip"),  # codings are case-insensitive
    ("Br ; Q=0.8 , gzip ; q=0.7", ("br", "gzip"), "br"),  # whitespace and case around parameters
    ("gzip;q=0", ("br", "gzip"), None),  # q=0 refuses
    ("gzip;q=0.000, br;q=0.", ("br", "gzip"), None),
    ("br;q=0, gzip", ("br", "gzip"), "gzip"),
    ("*", ("br", "gzip"), "br"),
    ("*;q=0.5, gzip", ("br", "gzip"), "gzip"),  # named beats the wildcard's lower q
    ("*, br;q=0", ("br", "gzip"), "gzip"),  # the wildcard stands for what is not named
    ("*;q=0", ("br", "gzip"), None),
    ("identity", ("br", "gzip"), None),
    ("identity;q=0", ("br", "gzip"), None),  # nothing acceptable: sent unencoded, never a 406
    ("identity;q=0, *;q=0", ("br", "gzip"), None),
    ("gzip;q=0.5, identity", ("br", "gzip"), None),  # the client prefers it unencoded
    ("gzip, identity;q=0.5", ("br", "gzip"), "gzip"),
    ("gzip;q=0.5, identity;q=0.5", ("br", "gzip"), "gzip"),  # equal: compressed
    ("x-gzip", ("br", "gzip"), "gzip"),  # RFC 9110 §8.4.1.3
    ("deflate, compress, zstd", ("br", "gzip"), None),  # codings the gateway does not make
    ("gzip, gzip;q=0", ("br", "gzip"), None),  # said twice: the refusal stands
    ("gzip;q=0, gzip", ("br", "gzip"), None),
    ("gzip;q=0.3, gzip;q=0.9, br;q=0.5", ("br", "gzip"), "br"),  # the lower weight of a repeat counts
    # malformed weights: the entry is ignored
    ("br;q=high, gzip", ("br", "gzip"), "gzip"),
    ("br;q=1.5, gzip;q=0.1", ("br", "gzip"), "gzip"),
    ("br;q=-1, gzip;q=0.1", ("br", "gzip"), "gzip"),
    ("br;q=0.1234, gzip;q=0.1", ("br", "gzip"), "gzip"),  # four decimals
    ("br;q=, gzip;q=0.1", ("br", "gzip"), "gzip"),
    ("br;q, gzip;q=0.1", ("br", "gzip"), "gzip"),
    ("br;q=1e0, gzip;q=0.1", ("br", "gzip"), "gzip"),
    ("br;q=nan, gzip;q=0.1", ("br", "gzip"), "gzip"),
    ("br;q=0x1", ("br", "gzip"), None),
    ("gzip;level=9", ("br", "gzip"), "gzip"),  # another parameter: q is 1
    ("gzip;level=9;q=0", ("br", "gzip"), None),
    (",,, ,;q=1, gzip", ("br", "gzip"), "gzip"),  # empty entries
    (";;;", ("br", "gzip"), None),
    ("gzip\x00", ("br", "gzip"), None),  # not the token gzip
    ("br\tgzip", ("br", "gzip"), None),
])
def test_negotiate(accept: str | None, offered: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(accept, offered) == expected


def test_negotiate_a_huge_value_in_linear_time() -> None:
    """60 KiB of entries (about what fits under the 64 KiB header limit): decided, and the last word counts."""
    value = ", ".join(["deflate;q=0.5"] * 4000 + ["gzip;q=0.2", "br;q=0.1"])
    assert len(value) > 60_000
    assert negotiate(value) == "gzip"


def test_choose_remembers_short_values_only_and_stays_bounded() -> None:
    compression = Compression(CompressionConfig())
    for i in range(1000):
        assert compression.choose(f"gzip;q=0.{i % 1000:03d}, br;q=0.0005") == ("gzip" if i else None)
    assert len(compression._chosen) <= 256
    long = "gzip, " + "x" * 200
    assert compression.choose(long) == "gzip"
    assert long not in compression._chosen


def test_type_decisions_are_remembered_within_bounds() -> None:
    match = TypeMatch(("text/*",))
    for i in range(1000):
        assert match(f"text/x-{i}") is True
        assert match(f"image/x-{i}") is False
    assert len(match._seen) <= 256
    assert match("text/" + "x" * 500) is True and ("text/" + "x" * 500) not in match._seen


@pytest.mark.parametrize("types, content_type, expected", [
    (("application/json", "text/*"), "application/json", True),
    (("application/json", "text/*"), "application/json; charset=utf-8", True),  # parameters ignored
    (("application/json", "text/*"), "Application/JSON ;charset=UTF-8", True),  # case ignored
    (("application/json", "text/*"), "  application/json  ", True),
    (("application/json", "text/*"), "text/html", True),
    (("application/json", "text/*"), "text/plain;charset=us-ascii", True),
    (("application/json", "text/*"), "TEXT/CSS", True),
    (("application/json", "text/*"), "text/", False),
    (("application/json", "text/*"), "text", False),
    (("application/json", "text/*"), "textual/html", False),  # the prefix is the whole type
    (("application/json", "text/*"), "application/jsonp", False),
    (("application/json", "text/*"), "application/problem+json", False),
    (("application/json", "text/*"), "image/png", False),
    (("application/json", "text/*"), "", False),
    (("application/json", "text/*"), None, False),  # no type: not compressed
    (("application/json", "text/*"), ";", False),
    (("*/*",), "image/png", True),
    (("*/*",), "garbage", False),
    (("*/*",), "/x", False),
    (("application/*+json",), "application/problem+json", True),  # a structured syntax suffix
    (("application/*+json",), "Application/Vnd.Api+JSON; v=1", True),
    (("application/*+json",), "application/+json", False),
    (("application/*+json",), "application/json", False),
    (("application/*+json",), "text/x+json", False),
    (("application/*+json",), "application/x+jsonp", False),
    (("image/svg+xml",), "image/svg+xml", True),
    (("image/svg+xml",), "image/svg", False),
])
def test_type_match(types: tuple[str, ...], content_type: str | None, expected: bool) -> None:
    assert TypeMatch(types)(content_type) is expected


def head(**fields: str) -> HTTPHeaders:
    out = HTTPHeaders()
    for name, value in fields.items():
        out[name.replace("_", "-")] = value
    return out


JSON = {"Content_Type": "application/json"}


@pytest.mark.parametrize("case, method, status, fields, accept, coding, after", [
    ("gzip, chunked", "GET", 200, JSON, "gzip", "gzip",
     {"Content-Type": "application/json", "Vary": "Accept-Encoding", "Content-Encoding": "gzip"}),
    ("br, length dropped, ranges no longer offered", "GET", 200,
     {**JSON, "Content_Length": "5000", "Accept_Ranges": "bytes"}, "br, gzip", "br",
     {"Content-Type": "application/json", "Vary": "Accept-Encoding", "Content-Encoding": "br"}),
    ("exactly min_bytes", "GET", 200, {**JSON, "Content_Length": "1024"}, "gzip", "gzip",
     {"Content-Type": "application/json", "Vary": "Accept-Encoding", "Content-Encoding": "gzip"}),
    ("below min_bytes", "GET", 200, {**JSON, "Content_Length": "1023"}, "gzip", None,
     {"Content-Type": "application/json", "Content-Length": "1023"}),
    ("strong ETag weakened", "GET", 200, {**JSON, "ETag": '"v1"'}, "gzip", "gzip",
     {"Content-Type": "application/json", "Etag": 'W/"v1"', "Vary": "Accept-Encoding", "Content-Encoding": "gzip"}),
    ("weak ETag kept", "GET", 200, {**JSON, "ETag": 'W/"v1"'}, "gzip", "gzip",
     {"Content-Type": "application/json", "Etag": 'W/"v1"', "Vary": "Accept-Encoding", "Content-Encoding": "gzip"}),
    ("Vary merged", "GET", 200, {**JSON, "Vary": "Origin"}, "gzip", "gzip",
     {"Content-Type": "application/json", "Vary": "Origin, Accept-Encoding", "Content-Encoding": "gzip"}),
    ("Vary has it already", "GET", 200, {**JSON, "Vary": "origin, accept-encoding"}, "gzip", "gzip",
     {"Content-Type": "application/json", "Vary": "origin, accept-encoding", "Content-Encoding": "gzip"}),
    ("Vary: * left alone", "GET", 200, {**JSON, "Vary": "*"}, "gzip", "gzip",
     {"Content-Type": "application/json", "Vary": "*", "Content-Encoding": "gzip"}),
    ("client takes no coding: Vary only", "GET", 200, {**JSON, "Content_Length": "5000"}, None, None,
     {"Content-Type": "application/json", "Content-Length": "5000", "Vary": "Accept-Encoding"}),
    ("HEAD: Vary only", "HEAD", 200, {**JSON, "Content_Length": "5000", "ETag": '"v"'}, "gzip", None,
     {"Content-Type": "application/json", "Content-Length": "5000", "Etag": '"v"', "Vary": "Accept-Encoding"}),
    ("an error status is compressed too", "GET", 500, JSON, "gzip", "gzip",
     {"Content-Type": "application/json", "Vary": "Accept-Encoding", "Content-Encoding": "gzip"}),
    ("204", "GET", 204, JSON, "gzip", None, {"Content-Type": "application/json"}),
    ("304", "GET", 304, {**JSON, "ETag": '"v"'}, "gzip", None, {"Content-Type": "application/json", "Etag": '"v"'}),
    ("206", "GET", 206, {**JSON, "Content_Range": "bytes 0-9/5000"}, "gzip", None,
     {"Content-Type": "application/json", "Content-Range": "bytes 0-9/5000"}),
    ("a 200 with Content-Range", "GET", 200, {**JSON, "Content_Range": "bytes */5000"}, "gzip", None,
     {"Content-Type": "application/json", "Content-Range": "bytes */5000"}),
    ("upstream encoded", "GET", 200, {**JSON, "Content_Encoding": "gzip"}, "br", None,
     {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
    ("upstream says identity", "GET", 200, {**JSON, "Content_Encoding": "identity"}, "br", None,
     {"Content-Type": "application/json", "Content-Encoding": "identity"}),
    ("no-transform", "GET", 200, {**JSON, "Cache_Control": "public, No-Transform"}, "gzip", None,
     {"Content-Type": "application/json", "Cache-Control": "public, No-Transform"}),
    ("no-transform-ish is not no-transform", "GET", 200, {**JSON, "Cache_Control": "x-no-transform"}, "gzip",
     "gzip", {"Content-Type": "application/json", "Cache-Control": "x-no-transform", "Vary": "Accept-Encoding",
              "Content-Encoding": "gzip"}),
    ("type not listed", "GET", 200, {"Content_Type": "image/png"}, "gzip", None, {"Content-Type": "image/png"}),
    ("no type", "GET", 200, {}, "gzip", None, {}),
])
def test_start_decides_and_edits_the_head(case: str, method: str, status: int, fields: dict[str, str],
                                          accept: str | None, coding: str | None, after: dict[str, str]) -> None:
    out = head(**fields)
    encoder = Compression(CompressionConfig()).start(method, status, out, accept)
    assert dict(out.get_all()) == after
    assert len(list(out.get_all())) == len(after)
    assert {None: None, "gzip": GzipEncoder, "br": BrotliEncoder}[coding] is (type(encoder) if encoder else None)


def decode(coding: str, data: bytes) -> bytes:
    return gzip.decompress(data) if coding == "gzip" else brotli.decompress(data)


def brotli_so_far(data: bytes) -> bytes:
    """What a streaming brotli decoder makes of ``data`` (the binding hands its output over in
    pieces: it is asked again, with no more input, until it has nothing more)."""
    decoder = brotli.Decompressor()
    out = decoder.process(data)
    while more := decoder.process(b""):
        out += more
    return out


CHUNKS = [b'{"id": 1, "name": "first"}', b"", b"x" * 100_000, bytes(range(256)) * 300, b"}"]


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_encoders_flush_each_chunk_and_decode_to_the_input(coding: str) -> None:
    encoder = GzipEncoder(6) if coding == "gzip" else BrotliEncoder(4)
    sent = b""
    for i, chunk in enumerate(CHUNKS):
        sent += encoder.compress(chunk)
        # flushed: what was sent so far decodes to everything fed so far
        so_far = b"".join(CHUNKS[: i + 1])
        if coding == "gzip":
            assert zlib.decompressobj(31).decompress(sent) == so_far
        else:
            assert brotli_so_far(sent) == so_far
    sent += encoder.finish()
    assert decode(coding, sent) == b"".join(CHUNKS)


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_an_empty_body_is_a_valid_empty_stream(coding: str) -> None:
    encoder = GzipEncoder(6) if coding == "gzip" else BrotliEncoder(4)
    assert decode(coding, encoder.finish()) == b""


def test_encode_whole_sets_the_head_and_compresses_once() -> None:
    compression = Compression(CompressionConfig(min_bytes=10))
    out = head(**JSON)
    body = b'{"a": "' + b"z" * 5000 + b'"}'
    encoded = compression.encode_whole("GET", 200, out, body, "gzip")
    assert gzip.decompress(encoded) == body
    assert dict(out.get_all()) == {"Content-Type": "application/json", "Vary": "Accept-Encoding",
                                   "Content-Encoding": "gzip"}
    small = head(**JSON)
    assert compression.encode_whole("GET", 200, small, b"{}", "gzip") == b"{}"
    assert dict(small.get_all()) == {"Content-Type": "application/json", "Content-Length": "2"}


GLOBAL = CompressionConfig(min_bytes=1)
OWN = CompressionConfig(min_bytes=2)


@pytest.mark.parametrize("route, default, expected", [
    (None, None, None),
    (None, GLOBAL, GLOBAL),
    (False, GLOBAL, None),
    (True, GLOBAL, GLOBAL),
    (True, None, CompressionConfig()),
    (OWN, GLOBAL, OWN),
    (OWN, None, OWN),
])
def test_compression_for(route: CompressionConfig | bool | None, default: CompressionConfig | None,
                         expected: CompressionConfig | None) -> None:
    built = compression_for(route, default)
    assert (built.config if built is not None else None) == expected
