"""JWT authentication: from an ``Authorization`` header value to an :class:`Identity`.

Owns token verification (signature, ``exp`` always, ``nbf``, ``iat``, ``iss``,
``aud``, leeway, required claims, the configured algorithms only), the translation of
every PyJWT exception into :class:`~gateway.errors.InvalidToken` with a short
description (never the token), scopes, the identity headers of ``claims_to_headers``
and a bounded cache of verified tokens. Keys come from :mod:`gateway.jwks`.

Everything that depends only on the configuration is computed in
:meth:`Authenticator.__init__`; a cache hit is a dict lookup and a time compare.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt

from .config import JwtConfig
from .errors import InsufficientScope, InvalidToken
from .jwks import KeySource, build_key_sources

__all__ = ["Identity", "Authenticator"]


@dataclass(frozen=True)
class Identity:
    """Who a verified token (or an API key's consumer) speaks for."""

    subject: str | None
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(hash=False)
    expires_at: float  # the exp claim
    headers: tuple[tuple[str, str], ...]  # claims_to_headers, in configuration order
    method: str = "jwt"  # how the caller proved it: jwt | api_key (gateway.apikeys)


class Authenticator:
    """Verifies bearer tokens against one :class:`JwtConfig`.

    Raises :class:`~gateway.config.ConfigError` at construction for a key that cannot
    be used (unreadable, invalid, too short, or unfit for the configured algorithms).
    """

    def __init__(
        self,
        config: JwtConfig,
        *,
        clock: Callable[[], float] = time.time,
        on_jwks_refresh: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._cache: dict[str, tuple[float, float, Identity]] = {}
        self._cache_size = max(config.cache_size, 0)
        self._sources: dict[str, KeySource] = build_key_sources(
            config, clock=clock, on_jwks_refresh=on_jwks_refresh, on_keys_removed=self._cache.clear
        )
        self._max_token_bytes = config.max_token_bytes
        self._leeway = float(config.leeway_seconds)
        self._scope_claim = config.scope_claim
        self._claims_to_headers = tuple(config.claims_to_headers.items())
        self.identity_header_names: tuple[str, ...] = tuple(config.claims_to_headers.values())
        self.forward_authorization: bool = config.forward_authorization
        # PyJWT checks signature, iss, aud and presence of the required claims; the
        # time claims are checked here against the injected clock.
        self._jwt = jwt.PyJWT(
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": config.issuer is not None,
                "verify_aud": bool(config.audience),
                "require": list(dict.fromkeys(("exp", *config.required_claims))),
                "enforce_minimum_key_length": True,
            }
        )
        self._issuer = config.issuer
        self._audience = list(config.audience) or None

    async def start(self) -> None:
        """Start the key sources (the first JWKS fetch and its refresh task)."""
        for source in set(self._sources.values()):
            await source.start()

    async def stop(self) -> None:
        for source in set(self._sources.values()):
            await source.stop()

    async def authenticate(self, authorization: str | None) -> Identity | None:
        """The identity of the bearer token in ``authorization`` (an Authorization header value).

        Returns None when there is no header or it is not of the Bearer scheme; raises
        :class:`InvalidToken` for any token that does not verify.
        """
        if authorization is None:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise InvalidToken("empty bearer token")
        if len(token) > self._max_token_bytes:
            raise InvalidToken("token too large")
        entry = self._cache.get(token)
        if entry is not None and entry[0] <= self._clock() < entry[1]:
            return entry[2]
        return await self._verify(token)

    def check_scopes(self, identity: Identity, required: tuple[str, ...]) -> None:
        """Raises :class:`InsufficientScope` naming every scope in ``required`` that ``identity`` lacks."""
        missing = [scope for scope in required if scope not in identity.scopes]
        if missing:
            raise InsufficientScope(missing)

    async def _verify(self, token: str) -> Identity:
        header = _peek_header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        source = self._sources.get(algorithm) if isinstance(algorithm, str) else None
        if source is None or not isinstance(algorithm, str):
            raise InvalidToken("algorithm not allowed")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed token")
        key = await source.get_key(algorithm, kid)
        try:
            claims = self._jwt.decode(
                token, key.key, algorithms=key.algorithms, issuer=self._issuer, audience=self._audience
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_describe(exc)) from None

        now = self._clock()
        expires_at = _time_claim(claims, "exp")
        if expires_at <= now - self._leeway:
            raise InvalidToken("token expired")
        not_before = float("-inf")
        if "nbf" in claims:
            not_before = _time_claim(claims, "nbf") - self._leeway
            if not_before > now:
                raise InvalidToken("token not yet valid")
        if "iat" in claims and _time_claim(claims, "iat") > now + self._leeway:
            raise InvalidToken("token issued in the future")

        subject = claims.get("sub")
        identity = Identity(
            subject=subject if isinstance(subject, str) else None,
            scopes=_scopes(claims.get(self._scope_claim)),
            claims=MappingProxyType(claims),
            expires_at=expires_at,
            headers=self._identity_headers(claims),
        )
        if self._cache_size and now < expires_at:
            self._cache.pop(token, None)
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[token] = (not_before, expires_at, identity)
        return identity

    def _identity_headers(self, claims: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """The ``claims_to_headers`` headers. Raises :class:`InvalidToken` for a claim that holds
        a control character: dropping just its header would forward the request as
        authenticated without the identity the upstream relies on."""
        headers = []
        for claim, name in self._claims_to_headers:
            try:
                value = _header_value(claims.get(claim))
            except ValueError:
                raise InvalidToken(f"the {claim} claim holds a control character") from None
            if value is not None:
                headers.append((name, value))
        return tuple(headers)


# PyJWT's exceptions, most specific first, and what a client is told about each.
_DESCRIPTIONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "signature verification failed"),
    (jwt.DecodeError, "malformed token"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidAudienceError, "invalid audience"),
    (jwt.InvalidIssuerError, "invalid issuer"),
    (jwt.exceptions.InvalidSubjectError, "invalid sub claim"),
    (jwt.exceptions.InvalidJTIError, "invalid jti claim"),
    (jwt.InvalidIssuedAtError, "invalid iat claim"),
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidKeyError, "key unfit for the token's algorithm"),
)


def _describe(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing required claim: {exc.claim}"
    for kind, description in _DESCRIPTIONS:
        if isinstance(exc, kind):
            return description
    return "invalid token"


def _peek_header(token: str) -> Mapping[str, Any]:
    """The JOSE header, decoded only to pick the key source and key.

    PyJWT decodes and checks the whole token afterwards with the algorithms that key
    allows; this avoids its slower full parse happening twice.
    """
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidToken("malformed token") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidToken(f"invalid {name} claim")
    return number


def _scopes(value: Any) -> frozenset[str]:
    """A scope claim as a set: a space-separated string or a list of strings."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def _header_value(value: Any) -> str | None:
    """A claim as a header value: a list space-joined, a missing claim None.

    Raises ValueError for a value holding a control character (no header injection);
    non-ASCII text is sent as UTF-8 bytes (a header value is a latin-1 str in Tornado).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (str, int, float)):
        text = str(value)
    elif isinstance(value, list):
        text = " ".join(item if isinstance(item, str) else json.dumps(item) for item in value)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ValueError("control character in a header value")
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")
