"""A request's framing and Host, checked on its headers before any body byte is read or sent on.

Why the gateway checks this itself: Tornado's ``HTTP1Connection`` looks at a
body's framing only when it starts reading the body, that is after
``headers_received`` has run, and then answers a refusal with a bare,
non-JSON 400. By then the proxy had admitted the request and may have opened
the upstream exchange, which the refusal aborted as if the upstream had failed
(and a few such requests opened its circuit breaker). Checked here, a refusal
is SPEC §4's JSON 400 and nothing goes upstream.

The rules (RFC 9112 §6, §3.2; stricter than the RFC where it allows ambiguity a
smuggler could use):

- ``Transfer-Encoding``: one field, exactly ``chunked`` (any case). A list
  (``chunked, identity``), an unknown coding (``xchunked``) or a repeated field
  is refused; so is any ``Transfer-Encoding`` in an HTTP/1.0 request (§6.1:
  its framing is faulty).
- ``Content-Length``: one field of ASCII digits. Repeated fields and
  comma-listed values are refused even when equal; a sign, spaces inside or
  non-ASCII digits too.
- Both together: refused (§6.3 would let TE win; two parsers may disagree).
- ``Host``: at most one field, without a comma (two Hosts merged into one line);
  required in HTTP/1.1 (HTTP/1.0 may omit it). A trailing dot on the name
  (``api.example.com.`` or ``api.example.com.:8080``) names the same host as
  without it, so routing sees it without.

Every check is a few dict lookups and string comparisons: they run on every request.
"""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

from .errors import BadRequest

__all__ = ["body_length", "request_host", "CHUNKED", "MAX_LENGTH_DIGITS"]

CHUNKED = -1  # what body_length() says for a chunked body, whose length is unknown
MAX_LENGTH_DIGITS = 18  # 10**18 bytes is beyond any max_body_bytes; longer is an attack, not an upload


def body_length(version: str, headers: HTTPHeaders) -> int:
    """The request body's declared length: 0 without a body, :data:`CHUNKED` (-1) when chunked.

    Raises :class:`~gateway.errors.BadRequest` when the framing is anything but
    one unambiguous ``Content-Length`` or ``Transfer-Encoding: chunked``.
    """
    codings = headers.get_list("Transfer-Encoding")
    lengths = headers.get_list("Content-Length")
    if codings:
        if lengths:
            raise BadRequest("Transfer-Encoding and Content-Length together")
        if version == "HTTP/1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) != 1 or codings[0].lower() != "chunked":
            raise BadRequest("Transfer-Encoding must be exactly 'chunked'")
        return CHUNKED
    if not lengths:
        return 0
    if len(lengths) != 1:
        raise BadRequest("more than one Content-Length")
    value = lengths[0]
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_LENGTH_DIGITS:
        raise BadRequest("Content-Length must be one non-negative decimal number")
    return int(value)


def request_host(version: str, headers: HTTPHeaders) -> str:
    """The request's Host as routing should see it (a trailing dot on the name removed),
    or "" when an HTTP/1.0 request has none.

    Raises :class:`~gateway.errors.BadRequest` for two Hosts, or none in HTTP/1.1 (or later).
    """
    hosts = headers.get_list("Host")
    if not hosts:
        if version == "HTTP/1.0":
            return ""
        raise BadRequest("an HTTP/1.1 request needs a Host header")
    host = hosts[0]
    if len(hosts) != 1 or "," in host:
        raise BadRequest("more than one Host")
    return without_trailing_dot(host)


def without_trailing_dot(host: str) -> str:
    """``api.example.com.`` -> ``api.example.com``; ``api.example.com.:8080`` -> ``api.example.com:8080``."""
    if host.endswith("."):
        return host[:-1]
    if ".:" in host:
        name, _, port = host.rpartition(":")
        if name.endswith("."):
            return f"{name[:-1]}:{port}"
    return host
