"""API keys: from a key header value to the :class:`~gateway.auth.Identity` of its consumer.

Owns the consumers of ``auth.api_keys`` compiled at load (:class:`ApiKeyRing`),
the digest of a key (:func:`digest_of`), new keys for ``gateway key``
(:func:`new_key`) and the limits the loader checks keys against.

A consumer's identity is built once, at load, exactly like a verified token's:
``subject`` is its ``sub``, ``scopes`` its scopes, its claims are ``{"sub":
subject, <scope_claim>: "a b"}`` (what plugins see as ``request.claims``) and
its identity headers follow the same ``claims_to_headers`` mapping. So the
scopes step, the rate limit's ``key: subject``, the access log's ``subject``
and the identity headers upstream treat both kinds of caller alike.

Comparison. The presented key is hashed once with SHA-256 and its digest looked
up in a dict of the consumers' digests; a hit is confirmed with
:func:`hmac.compare_digest`. That is constant-time where it matters: the only
secret-dependent work is on digests, and an attacker steering the digest of
what it sends towards a stored one (one byte at a time, as a timing attack on
``==`` needs) would need SHA-256 preimages. The dict's hashing and bucket compare
leak at most whether some stored digest shares a hash bucket with the one sent,
which says nothing about any key. Hashing costs the same for every key of a given
length, and the length is capped (:data:`MAX_KEY_BYTES`). Stored digests also mean
no plaintext key sits in memory or in a config dump; a ``key:`` written in the
file is hashed by the loader.

A key is never logged and never put in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from types import MappingProxyType

from .auth import Identity, _header_value
from .config import ApiKeysConfig, ConfigError
from .errors import InvalidApiKey
from .headers import FORWARDING_HEADERS, HOP_BY_HOP, STRIPPED_FROM_CLIENTS

__all__ = ["ApiKeyRing", "digest_of", "new_key", "MIN_KEY_CHARS", "MAX_KEY_BYTES", "RESERVED_KEY_HEADERS"]

MIN_KEY_CHARS = 16  # a plaintext key in the config: shorter ones are guessable
MAX_KEY_BYTES = 1024  # a longer presented key is refused before it is hashed
# Headers a key may not travel in: those the gateway reads or sets itself, and cookies.
RESERVED_KEY_HEADERS = frozenset({"authorization", "cookie", *HOP_BY_HOP, *FORWARDING_HEADERS,
                                  *STRIPPED_FROM_CLIENTS})
_NEVER_EXPIRES = float("inf")


def digest_of(key: str) -> bytes:
    """The SHA-256 digest of ``key`` as sent in a header (latin-1, as Tornado decodes header values)."""
    return hashlib.sha256(key.encode("latin-1", "replace")).digest()


def new_key() -> str:
    """A new random key: 32 bytes from :mod:`secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


class ApiKeyRing:
    """The consumers of one ``auth.api_keys`` section, by key digest.

    ``claims_to_headers`` and ``scope_claim`` are the identity mapping shared with JWT
    (``auth.jwt``'s when configured, else the section's own). Raises ConfigError for a
    subject or scope that cannot be sent as a header value.
    """

    def __init__(self, config: ApiKeysConfig, claims_to_headers: Mapping[str, str], scope_claim: str = "scope"
                 ) -> None:
        self.header = config.header
        self.identity_header_names: tuple[str, ...] = tuple(claims_to_headers.values())
        self._by_digest: dict[bytes, tuple[bytes, Identity]] = {}
        problems = []
        for i, consumer in enumerate(config.consumers):
            claims = {"sub": consumer.subject, scope_claim: " ".join(consumer.scopes)}
            headers = []
            for claim, name in claims_to_headers.items():
                try:
                    value = _header_value(claims.get(claim))
                except ValueError:
                    problems.append(f"auth.api_keys.consumers[{i}]: its {claim} holds a control character")
                    continue
                if value is not None:
                    headers.append((name, value))
            identity = Identity(subject=consumer.subject, scopes=frozenset(consumer.scopes),
                                claims=MappingProxyType(claims), expires_at=_NEVER_EXPIRES,
                                headers=tuple(headers), method="api_key")
            self._by_digest[consumer.key_sha256] = (consumer.key_sha256, identity)
        if problems:
            raise ConfigError(problems)

    def identify(self, key: str) -> Identity:
        """The identity of the consumer whose key ``key`` is (a header value).

        Raises :class:`InvalidApiKey` for an empty, too long or unknown key; the
        message never holds the key.
        """
        if not key:
            raise InvalidApiKey("empty API key")
        if len(key) > MAX_KEY_BYTES:
            raise InvalidApiKey("API key too long")
        digest = digest_of(key)
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            raise InvalidApiKey()
        return entry[1]
