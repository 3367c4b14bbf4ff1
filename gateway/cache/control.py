"""HTTP caching rules as pure functions: ``Cache-Control`` both ways, ``Vary``, freshness.

What a request asks of the cache (:func:`request_directives`, RFC 9111 §5.2.1):

- ``no-store``: bypass, neither read nor written (``X-Cache: BYPASS``);
- ``no-cache`` (or ``Pragma: no-cache`` without ``Cache-Control``): revalidate: go to the
  upstream and refresh the entry with its answer;
- ``max-age=N``: an entry older than N seconds counts as absent (revalidate).

Other request directives (``max-stale``, ``min-fresh``, ``only-if-cached``) are ignored.

Whether an upstream's answer may be kept, and for how long (:func:`freshness`): never with
``no-store``, ``no-cache`` (the gateway does not revalidate with validators), ``private`` in
an entry shared by several callers, ``Set-Cookie`` or ``Vary: *``. Its lifetime is
``s-maxage``, else ``max-age``, else ``Expires`` − ``Date``, else the route's ``ttl_seconds``,
and never more than ``ttl_seconds`` (the operator's bound), less the ``Age`` the answer
already has. A malformed or repeated-and-different freshness directive makes the answer
stale (not kept), as RFC 9111 §4.2.1 allows. Qualified forms (``private="Set-Cookie"``,
``no-cache="X"``) are read as the whole directive.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

__all__ = ["Directives", "RequestDirectives", "Freshness", "parse_cache_control", "request_directives",
           "freshness", "vary_names", "MAX_VARY_NAMES"]

# A Vary naming more headers than this is not cached: every name multiplies the variants.
MAX_VARY_NAMES = 8
# The largest delta-seconds believed (RFC 9111 §1.2.2: 2^31); beyond it a value is read as this.
_MAX_DELTA = 2 ** 31

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

Directives = dict[str, str | None]  # lower-cased name -> value (None: no value); "!" marks a conflict


def parse_cache_control(values: Iterable[str]) -> Directives:
    """The directives of one or more ``Cache-Control`` field values. Names are lower-cased;
    a quoted value is unquoted. A directive given twice with different values maps to
    ``"!"`` (a conflict: :func:`delta_seconds` reads it as invalid). Garbage between commas is
    skipped: it names no directive."""
    out: Directives = {}
    for value in values:
        for part in _split_commas(value):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if not name or not _TOKEN.match(name):
                continue
            parsed: str | None = None
            if sep:
                arg = arg.strip()
                parsed = arg[1:-1] if len(arg) >= 2 and arg[0] == arg[-1] == '"' else arg
            if name in out and out[name] != parsed:
                out[name] = "!"
            else:
                out[name] = parsed
    return out


def delta_seconds(value: str | None) -> int | None:
    """A directive's delta-seconds (``max-age=60``), or None when missing or malformed."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value[:12]), _MAX_DELTA) if len(value) <= 12 else _MAX_DELTA


class RequestDirectives:
    """What one request asks of the cache."""

    __slots__ = ("no_store", "no_cache", "max_age")

    def __init__(self, no_store: bool = False, no_cache: bool = False, max_age: int | None = None) -> None:
        self.no_store = no_store
        self.no_cache = no_cache
        self.max_age = max_age

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestDirectives) and (self.no_store, self.no_cache, self.max_age) == (
            other.no_store, other.no_cache, other.max_age)

    def __repr__(self) -> str:
        return f"RequestDirectives(no_store={self.no_store}, no_cache={self.no_cache}, max_age={self.max_age})"


NONE_ASKED = RequestDirectives()


def request_directives(headers: Mapping[str, str]) -> RequestDirectives:
    """The request's ``Cache-Control`` (or ``Pragma: no-cache``) read for the cache. A request
    that says nothing costs two lookups and gets the shared :data:`NONE_ASKED`."""
    if "Cache-Control" not in headers:
        pragma = headers.get("Pragma")
        if pragma is not None and "no-cache" in pragma.lower():
            return RequestDirectives(no_cache=True)
        return NONE_ASKED
    values = headers.get_list("Cache-Control") if hasattr(headers, "get_list") else [headers["Cache-Control"]]
    found = parse_cache_control(values)
    max_age = None
    if "max-age" in found:
        max_age = delta_seconds(found["max-age"])
        if max_age is None:
            max_age = 0  # a malformed max-age asks for something fresh: revalidate (the safe reading)
    return RequestDirectives("no-store" in found, "no-cache" in found, max_age)


class Freshness:
    """The verdict on one answer: ``seconds`` to keep it (> 0), or None with the ``reason``."""

    __slots__ = ("seconds", "reason", "initial_age", "private")

    def __init__(self, seconds: float | None, reason: str = "", initial_age: int = 0, private: bool = False) -> None:
        self.seconds = seconds
        self.reason = reason
        self.initial_age = initial_age
        self.private = private

    def __repr__(self) -> str:
        return f"Freshness({self.seconds!r}, {self.reason!r}, initial_age={self.initial_age})"


def freshness(fields: Iterable[tuple[str, str]], ttl_seconds: float, *, shared_entry: bool) -> Freshness:
    """Whether an upstream's 200 answer with ``fields`` may be kept, and for how long (see the
    module docstring). ``shared_entry``: the entry would serve more than one caller (a route
    without auth, an anonymous caller, or ``shared: true``), where ``private`` forbids it."""
    control: list[str] = []
    expires = date = age = None
    for name, value in fields:
        lowered = name.lower()
        if lowered == "cache-control":
            control.append(value)
        elif lowered == "set-cookie":
            return _not_stored("set-cookie")
        elif lowered == "expires":
            expires = value if expires is None else "!"
        elif lowered == "date":
            date = value
        elif lowered == "age":
            age = value
    found = parse_cache_control(control) if control else {}
    if "no-store" in found:
        return _not_stored("no-store")
    if "no-cache" in found:
        return _not_stored("no-cache")
    private = "private" in found
    if private and shared_entry:
        return _not_stored("private")
    if "s-maxage" in found:
        lifetime: float | None = delta_seconds(found["s-maxage"])
    elif "max-age" in found:
        lifetime = delta_seconds(found["max-age"])
    elif expires is not None:
        lifetime = _expires_lifetime(expires, date)
    else:
        lifetime = ttl_seconds
    if lifetime is None:
        return _not_stored("malformed freshness")
    initial_age = 0
    if age is not None:
        initial_age = delta_seconds(age.strip()) or 0
    seconds = min(float(lifetime), ttl_seconds) - initial_age
    if seconds <= 0:
        return _not_stored("stale")
    return Freshness(seconds, initial_age=initial_age, private=private)


def _not_stored(reason: str) -> Freshness:
    return Freshness(None, reason)


def _expires_lifetime(expires: str, date: str | None) -> float | None:
    """``Expires`` − ``Date`` in seconds (0 or less: stale; RFC 9111 §4.2.1), None when malformed."""
    try:
        until = parsedate_to_datetime(expires)
        since = parsedate_to_datetime(date) if date is not None else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if since is None:
        return until.timestamp() - time.time()
    return (until - since).total_seconds()


def vary_names(fields: Iterable[tuple[str, str]]) -> tuple[str, ...] | None:
    """The header names an answer varies on, lower-cased, sorted, once each (``()`` for none);
    None when it may not be kept: ``Vary: *``, a name that is not a token, or more than
    :data:`MAX_VARY_NAMES` names."""
    names: set[str] = set()
    for name, value in fields:
        if name.lower() != "vary":
            continue
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item == "*" or not _TOKEN.match(item):
                return None
            names.add(item)
            if len(names) > MAX_VARY_NAMES:
                return None
    return tuple(sorted(names))


def _split_commas(value: str) -> list[str]:
    """Split a list-valued field on the commas outside quoted strings."""
    if '"' not in value:
        return value.split(",")
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts
