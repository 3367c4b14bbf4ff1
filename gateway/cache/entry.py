"""What the cache keeps, how it is keyed, and its bytes in a shared store.

Keys (:func:`primary_key`, :func:`variant_key`): the route's name, the client's ``Host``
(lower-cased, port included: the upstream sees it as X-Forwarded-Host and may build links
from it; instances behind one load balancer see the same Host), the path and the query string byte for byte (``?a=1&b=2`` and ``?b=2&a=1`` are two
entries), and the caller's subject when the route is authenticated and not ``shared``
(``None``, an anonymous caller, is a partition of its own). HEAD is looked up under GET's
key. The parts are JSON-encoded before hashing, so no two different tuples share a key;
SHA-256 makes every key one short fixed-size string whatever the path or subject holds.

An answer with ``Vary`` is kept in two records: a :class:`Variants` under the primary
key, naming the headers, and the :class:`Entry` under the variant key, which adds the
request's values of those headers. A lookup reads the first and, when it is a
:class:`Variants`, the second.

:func:`encode`/:func:`decode` give a record's bytes for Redis: a 4-byte magic, a JSON head
and the body as it is (no base64). Anything else read back (garbage, another version) is
None: a miss.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping

__all__ = ["Entry", "Variants", "Record", "KEY_PREFIX", "primary_key", "variant_key", "vary_values",
           "encode", "decode"]

KEY_PREFIX = "gateway:cache:"

_ENTRY_MAGIC = b"GWC1"
_VARIANTS_MAGIC = b"GWV1"
_LENGTH = struct.Struct(">I")
# What a record costs beside its body and fields in the memory store (the key, the objects): a
# rough constant, so that many tiny entries are bounded too.
OVERHEAD_BYTES = 256


class Entry:
    """One kept answer: its header fields (framing ones removed), body, and times (wall-clock
    seconds). ``vary`` names the request headers it was chosen by; ``variant`` is its key."""

    __slots__ = ("fields", "body", "stored_at", "initial_age", "expires_at", "vary", "variant")

    def __init__(self, fields: tuple[tuple[str, str], ...], body: bytes, stored_at: float, initial_age: int,
                 expires_at: float, vary: tuple[str, ...] = (), variant: str = "") -> None:
        self.fields = fields
        self.body = body
        self.stored_at = stored_at
        self.initial_age = initial_age
        self.expires_at = expires_at
        self.vary = vary
        self.variant = variant

    @property
    def size(self) -> int:
        """Bytes this entry holds, roughly (body, fields and a fixed overhead)."""
        return len(self.body) + sum(len(n) + len(v) for n, v in self.fields) + OVERHEAD_BYTES

    def age(self, now: float) -> int:
        """The ``Age`` to send: what the upstream said plus the time kept, whole seconds."""
        return self.initial_age + max(0, int(now - self.stored_at))


class Variants:
    """The primary key's record for an answer with ``Vary``: the header names (lower-cased, sorted)."""

    __slots__ = ("names",)

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    @property
    def size(self) -> int:
        return sum(len(n) for n in self.names) + OVERHEAD_BYTES


Record = Entry | Variants


def primary_key(route: str, host: str, path: str, query: str, subject: str | None) -> str:
    """The key of one request before ``Vary`` (see the module docstring)."""
    parts = json.dumps([route, host, path, query, subject], ensure_ascii=False, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(parts.encode("utf-8", "surrogateescape")).hexdigest()


def variant_key(primary: str, values: tuple[str, ...]) -> str:
    """The key of one variant: ``primary`` and the request's values of the ``Vary`` headers."""
    parts = json.dumps([primary, *values], ensure_ascii=False, separators=(",", ":"))
    return KEY_PREFIX + "v:" + hashlib.sha256(parts.encode("utf-8", "surrogateescape")).hexdigest()


def vary_values(headers: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, ...]:
    """A request's values of ``names`` (repeated lines joined with ", "; absent: ``\\0``, unlike empty)."""
    get_list = getattr(headers, "get_list", None)
    out = []
    for name in names:
        if get_list is not None:
            lines = get_list(name)
            out.append(", ".join(lines) if lines else "\0")
        else:
            value = headers.get(name)
            out.append("\0" if value is None else value)
    return tuple(out)


def encode(record: Record) -> bytes:
    """A record's bytes for a shared store."""
    if isinstance(record, Variants):
        return _VARIANTS_MAGIC + json.dumps(record.names).encode()
    head = json.dumps({"f": record.fields, "s": record.stored_at, "a": record.initial_age, "e": record.expires_at,
                       "v": record.vary, "k": record.variant}, separators=(",", ":")).encode()
    return _ENTRY_MAGIC + _LENGTH.pack(len(head)) + head + record.body


def decode(data: bytes) -> Record | None:
    """The record ``data`` holds, or None when it is not one this version wrote."""
    try:
        magic = data[:4]
        if magic == _VARIANTS_MAGIC:
            names = json.loads(data[4:])
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return Variants(tuple(names))
            return None
        if magic != _ENTRY_MAGIC or len(data) < 8:
            return None
        (length,) = _LENGTH.unpack(data[4:8])
        head = json.loads(data[8:8 + length])
        fields = tuple((str(n), str(v)) for n, v in head["f"])
        return Entry(fields, bytes(data[8 + length:]), float(head["s"]), int(head["a"]), float(head["e"]),
                     tuple(str(n) for n in head["v"]), str(head["k"]))
    except (ValueError, TypeError, KeyError, struct.error):
        return None
