"""Minting tokens for local testing: the ``gateway token`` command and the demo.

Owns :func:`mint_token` only; verification lives in :mod:`gateway.auth`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .jwks import algorithms_for_key
from .tables import HMAC_ALGORITHMS, JWT_ALGORITHMS

__all__ = ["mint_token"]


def mint_token(
    *,
    key: str | bytes,
    algorithm: str,
    subject: str,
    scopes: str | None,
    ttl_seconds: int,
    audience: str | None,
    issuer: str | None,
    extra_claims: Mapping[str, Any],
    kid: str | None = None,
    clock: Callable[[], float] = time.time,
    scope_claim: str = "scope",
) -> str:
    """A signed JWT for ``subject``, valid for ``ttl_seconds`` from ``clock()``.

    ``key`` is the HS secret or a PEM private key. The token carries ``sub``, ``iat``,
    ``exp`` and, when given, ``scope_claim`` (the space-separated ``scopes``), ``aud``,
    ``iss`` and a ``kid`` header; ``extra_claims`` are added but never replace those.
    Raises ValueError for ``alg: none``, an unknown algorithm, a non-positive ttl, a key
    that is not an unencrypted PEM private key (asymmetric algorithms) or one unfit for
    ``algorithm``; the message never holds the key.
    """
    if algorithm.lower() == "none":
        raise ValueError("refusing to mint an unsigned token (alg: none)")
    if algorithm not in JWT_ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
    signing_key = key if algorithm in HMAC_ALGORITHMS else _private_key(key, algorithm)
    now = int(clock())
    claims: dict[str, Any] = dict(extra_claims)
    claims.update(sub=subject, iat=now, exp=now + int(ttl_seconds))
    if scopes is not None:
        claims[scope_claim] = scopes
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    headers = {"kid": kid} if kid is not None else None
    try:
        return jwt.encode(claims, signing_key, algorithm=algorithm, headers=headers)
    except (jwt.PyJWTError, NotImplementedError, TypeError, ValueError) as exc:
        # PyJWT raises NotImplementedError for an unknown algorithm and ValueError/TypeError for
        # an unloadable key; the message names the problem, never the key.
        raise ValueError(f"cannot sign with {algorithm}: {type(exc).__name__}: {_short(exc)}") from None


def _private_key(key: str | bytes, algorithm: str) -> Any:
    """``key`` (PEM text) as a private key object that can sign ``algorithm``; ValueError otherwise."""
    data = key.encode() if isinstance(key, str) else key
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"cannot sign with {algorithm}: not an unencrypted PEM private key") from None
    fitting = algorithms_for_key(private.public_key())
    if algorithm not in fitting:
        fits = ", ".join(sorted(fitting)) or "nothing this gateway verifies"
        raise ValueError(f"cannot sign with {algorithm}: this {type(private).__name__.removeprefix('_')} signs only "
                         f"{fits}") from None
    return private


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
