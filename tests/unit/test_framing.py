"""gateway.framing: a request's body framing and Host, decided on its headers (SPEC §4)."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from gateway.errors import BadRequest
from gateway.framing import CHUNKED, body_length, request_host, without_trailing_dot


def headers(*fields: tuple[str, str]) -> HTTPHeaders:
    h = HTTPHeaders()
    for name, value in fields:
        h.add(name, value)
    return h


@pytest.mark.parametrize("version, fields, expected", [
    ("HTTP/1.1", (), 0),
    ("HTTP/1.1", (("Content-Length", "0"),), 0),
    ("HTTP/1.1", (("Content-Length", "5"),), 5),
    ("HTTP/1.1", (("Content-Length", "000123"),), 123),
    ("HTTP/1.1", (("Content-Length", "9" * 18),), int("9" * 18)),
    ("HTTP/1.0", (("Content-Length", "5"),), 5),
    ("HTTP/1.1", (("Transfer-Encoding", "chunked"),), CHUNKED),
    ("HTTP/1.1", (("Transfer-Encoding", "Chunked"),), CHUNKED),
])
def test_unambiguous_framing_gives_the_length(version: str, fields: tuple[tuple[str, str], ...],
                                              expected: int) -> None:
    assert body_length(version, headers(*fields)) == expected


@pytest.mark.parametrize("version, fields, message", [
    ("HTTP/1.1", (("Transfer-Encoding", "xchunked"),), "Transfer-Encoding must be exactly 'chunked'"),
    ("HTTP/1.1", (("Transfer-Encoding", "chunked, identity"),), "Transfer-Encoding must be exactly 'chunked'"),
    ("HTTP/1.1", (("Transfer-Encoding", "gzip, chunked"),), "Transfer-Encoding must be exactly 'chunked'"),
    ("HTTP/1.1", (("Transfer-Encoding", "identity"),), "Transfer-Encoding must be exactly 'chunked'"),
    ("HTTP/1.1", (("Transfer-Encoding", ""),), "Transfer-Encoding must be exactly 'chunked'"),
    ("HTTP/1.1", (("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")),
     "Transfer-Encoding must be exactly 'chunked'"),
    ("HTTP/1.0", (("Transfer-Encoding", "chunked"),), "Transfer-Encoding in an HTTP/1.0 request"),
    ("HTTP/1.1", (("Transfer-Encoding", "chunked"), ("Content-Length", "5")),
     "Transfer-Encoding and Content-Length together"),
    ("HTTP/1.1", (("Content-Length", "-1"),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "+5"),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "5 5"),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "5, 5"),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "0x10"),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "\u00b2"),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", ""),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "9" * 19),), "Content-Length must be one non-negative decimal number"),
    ("HTTP/1.1", (("Content-Length", "5"), ("Content-Length", "5")), "more than one Content-Length"),
])
def test_ambiguous_framing_is_a_bad_request(version: str, fields: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        body_length(version, headers(*fields))
    assert info.value.message == message


@pytest.mark.parametrize("version, fields, expected", [
    ("HTTP/1.1", (("Host", "api.example.com"),), "api.example.com"),
    ("HTTP/1.1", (("Host", "api.example.com."),), "api.example.com"),
    ("HTTP/1.1", (("Host", "api.example.com.:8080"),), "api.example.com:8080"),
    ("HTTP/1.1", (("Host", "api.example.com:8080"),), "api.example.com:8080"),
    ("HTTP/1.1", (("Host", "[::1]:8080"),), "[::1]:8080"),
    ("HTTP/1.1", (("Host", "127.0.0.1"),), "127.0.0.1"),
    ("HTTP/1.1", (("Host", ""),), ""),
    ("HTTP/1.0", (), ""),
    ("HTTP/1.0", (("Host", "api.example.com."),), "api.example.com"),
])
def test_the_host_routing_sees(version: str, fields: tuple[tuple[str, str], ...], expected: str) -> None:
    assert request_host(version, headers(*fields)) == expected


@pytest.mark.parametrize("version, fields, message", [
    ("HTTP/1.1", (), "an HTTP/1.1 request needs a Host header"),
    ("HTTP/1.1", (("Host", "a.example"), ("Host", "b.example")), "more than one Host"),
    ("HTTP/1.1", (("Host", "a.example"), ("Host", "a.example")), "more than one Host"),
    ("HTTP/1.1", (("Host", "a.example, b.example"),), "more than one Host"),
    ("HTTP/1.0", (("Host", "a.example"), ("Host", "b.example")), "more than one Host"),
])
def test_a_missing_or_ambiguous_host_is_a_bad_request(version: str, fields: tuple[tuple[str, str], ...],
                                                      message: str) -> None:
    with pytest.raises(BadRequest) as info:
        request_host(version, headers(*fields))
    assert info.value.message == message


@pytest.mark.parametrize("host, expected", [
    ("a.example.", "a.example"),
    ("a.example.:80", "a.example:80"),
    ("a.example", "a.example"),
    ("a.example..", "a.example."),  # one dot: a name with two is not the same name
    (".", ""),
    ("[::1]:80", "[::1]:80"),
])
def test_without_trailing_dot(host: str, expected: str) -> None:
    assert without_trailing_dot(host) == expected
