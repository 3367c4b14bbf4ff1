"""Header rules on both legs: hop-by-hop removal, X-Forwarded-*, request id, traceparent.

:class:`HeaderPlan` is compiled once per route at config load (what to drop,
what to set), so a request only filters and appends. A request plan also drops
the client's headers whose names carry ``_`` and fold onto a name it owns: CGI
and WSGI backends turn both ``X-User-Id`` and ``X_User_Id`` into
``HTTP_X_USER_ID``, so passing the underscore spelling would let a client set
what the gateway sets (SPEC §4, "Framing and hostile input").

:func:`single_value` is how a policy reads a header it decides on (the
rate-limit key, ``Authorization``): a repeated one is refused, never joined or
half-read, so a second line cannot buy a second identity or budget.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
from collections.abc import Iterable, Mapping

from tornado.httputil import HTTPHeaders

from .config import HeaderRules
from .errors import BadRequest

__all__ = [
    "HOP_BY_HOP",
    "FORWARDING_HEADERS",
    "STRIPPED_FROM_CLIENTS",
    "HeaderPlan",
    "TrustedProxies",
    "request_id_from",
    "traceparent_from",
    "Fields",
    "tornado_headers",
    "header_value",
    "single_value",
]

# RFC 9110 §7.6.1 plus the legacy Proxy-* family. Names are lower-case.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})
# Headers the gateway itself sets upstream; a client's copy is replaced, never trusted as is.
FORWARDING_HEADERS = frozenset({
    "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix",
    "x-request-id", "traceparent", "content-length",
})
# Forwarding headers the gateway does not set but backends trust: a client's copy is always
# dropped upstream, so only a proxy the operator runs can tell a backend who the client is.
STRIPPED_FROM_CLIENTS = frozenset({"forwarded", "x-real-ip", "x-forwarded-port", "x-forwarded-ssl"})

# Ids must be unique, not secret: a seeded PRNG per process (reseeded after fork) instead of a
# getrandom() syscall for each of the three ids a request may need.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)
_random_bits = _rng.getrandbits
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def request_id_from(client_value: str | None) -> str:
    """The client's X-Request-Id when it is 1-128 of ``[A-Za-z0-9._-]``, else a new one."""
    if client_value and _REQUEST_ID.match(client_value):
        return client_value
    return f"{_random_bits(128):032x}"


def traceparent_from(client_value: str | None) -> str:
    """A valid W3C traceparent is kept; otherwise a new trace is started (sampled)."""
    if client_value:
        m = _TRACEPARENT.match(client_value)
        if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
            return client_value
    return f"00-{_random_bits(128):032x}-{_random_bits(64) or 1:016x}-01"


def connection_listed(connection: str) -> frozenset[str]:
    """The header names a Connection header value lists (they are hop-by-hop for this message)."""
    return frozenset(token.strip().lower() for token in connection.split(",") if token.strip())


Fields = list[tuple[str, str]]  # header fields in order, names as received; what the proxy passes between legs


def tornado_headers(fields: Iterable[tuple[str, str]]) -> HTTPHeaders:
    """An HTTPHeaders for Tornado to write. Assignment skips the per-field validation of ``add()``
    (a regex per name and value): the fields were checked when they were parsed."""
    out = HTTPHeaders()
    for name, value in fields:
        if name in out:
            out.add(name, value)  # a repeated field (Set-Cookie): kept as separate lines
        else:
            out[name] = value
    return out


class HeaderPlan:
    """One route's header rules for one direction, compiled once.

    ``always_drop``: names never passed on (the client's copies of what the gateway sets);
    those of them in ``reserved`` are set by the gateway itself per request, so a rule cannot set them.
    ``fold_underscores`` (the request direction): a name holding ``_`` is also dropped when, lower-cased
    with ``_`` read as ``-``, it is one the plan drops or sets (``X_User_Id``, ``X-Forwarded_For``,
    ``Content_Length``) or one of ``guarded``: names passed on as they are but read by a policy (the
    rate-limit key header), whose ``_`` spelling would give the backend another value than the policy saw.
    A name that folds onto nothing the plan owns (``X_Custom``) passes.
    """

    __slots__ = ("drop", "folded_drop", "set_items", "_listed")

    def __init__(self, rules: HeaderRules, always_drop: Iterable[str] = (), reserved: Iterable[str] = (),
                 *, fold_underscores: bool = False, guarded: Iterable[str] = ()) -> None:
        gateway_set = frozenset(h.lower() for h in reserved)
        self.drop = frozenset(h.lower() for h in (*HOP_BY_HOP, *always_drop, *rules.remove, *rules.set))
        # Every owned name spelled with '-' only: what a '_' spelling is compared with once folded.
        owned = self.drop | gateway_set | {h.lower() for h in guarded}
        self.folded_drop = frozenset(h.replace("_", "-") for h in owned) if fold_underscores else frozenset()
        self._listed: dict[str, frozenset[str]] = {}
        self.set_items: tuple[tuple[str, str], ...] = tuple(
            (name, value) for name, value in rules.set.items() if name.lower() not in gateway_set)

    def apply(self, source: Iterable[tuple[str, str]]) -> Fields:
        """``source`` without hop-by-hop fields (also those its Connection lists), dropped ones and
        (with ``fold_underscores``) their ``_`` spellings, then the route's own values."""
        drop, folded_drop = self.drop, self.folded_drop
        out: Fields = []
        listed: frozenset[str] = frozenset()
        for name, value in source:
            lowered = name.lower()
            if lowered == "connection":
                listed |= self._extra_listed(value)
            elif lowered not in drop and ("_" not in lowered or lowered.replace("_", "-") not in folded_drop):
                out.append((name, value))
        if listed:
            out = [(name, value) for name, value in out if name.lower() not in listed]
        out.extend(self.set_items)
        return out


    def _extra_listed(self, connection: str) -> frozenset[str]:
        """The names a Connection value lists that are not dropped anyway. Remembered per value
        (bounded): almost every message says ``keep-alive`` or ``close``, which add nothing, so
        the common case costs a dict lookup and no second pass over the fields."""
        extra = self._listed.get(connection)
        if extra is None:
            extra = connection_listed(connection) - self.drop
            if len(self._listed) < 256:
                self._listed[connection] = extra
        return extra


class TrustedProxies:
    """Which peers may speak for the client through X-Forwarded-For."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._verdicts: dict[str, bool] = {}

    def trusts(self, ip: str) -> bool:
        if not self.networks:
            return False
        verdict = self._verdicts.get(ip)
        if verdict is None:
            try:
                address = ipaddress.ip_address(ip)
                verdict = any(address in net for net in self.networks)
            except ValueError:
                verdict = False
            if len(self._verdicts) < 10000:
                self._verdicts[ip] = verdict
        return verdict

    def forwarded_for(self, peer: str, client_header: str | None) -> tuple[str, str]:
        """(X-Forwarded-For to send, the client address) for a request from ``peer``.

        The client's chain is kept and extended only when ``peer`` is trusted; the
        client address is then the right-most untrusted entry of the chain.
        """
        if not client_header or not self.trusts(peer):
            return peer, peer
        chain = [part.strip() for part in client_header.split(",") if part.strip()]
        client = peer
        for hop in reversed(chain):
            client = hop
            if not self.trusts(hop):
                break
        return f"{', '.join(chain)}, {peer}", client


def field(headers: HTTPHeaders, name: str) -> str | None:
    """``headers.get(name)`` without the KeyError that ``Mapping.get`` raises and catches inside for
    every absent field (most of those the request path asks for, on most requests). ``name`` is in
    Tornado's normalized form (``X-Request-Id``, ``Traceparent``): read from ``HTTPHeaders._as_list``,
    its table by that form (pinned by tests/unit/test_headers.py)."""
    values = headers._as_list.get(name)  # type: ignore[attr-defined]
    if values is None:
        return None
    return values[0] if len(values) == 1 else ",".join(values)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` matched case-insensitively, also for a plain dict."""
    value = headers.get(name)  # tornado's HTTPHeaders is case-insensitive already
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def single_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of the header ``name`` (case-insensitive), None when absent.

    Raises :class:`~gateway.errors.BadRequest` when the request carries it on more than one
    line: a policy that decides on a header (a rate-limit key, ``Authorization``) must see the
    one value the upstream sees, not the first, the last or a comma-joined pair.
    """
    if isinstance(headers, HTTPHeaders):
        values = headers.get_list(name)
        if len(values) > 1:
            raise BadRequest(f"the {name} header is repeated")
        return values[0] if values else None
    return header_value(headers, name)  # a plain mapping holds one value per name
