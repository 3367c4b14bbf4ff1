"""The HMAC secret test configs name, and tokens signed with it.

``SECRET`` is 64 bytes, enough for every HS* algorithm (RFC 7518 §3.2: the hash's
length), and YAML-safe unquoted. :func:`token` mints an HS256 token for it through
:func:`gateway.tokens.mint_token` (what ``gateway token`` runs); :func:`bearer` is
the header that carries one.
"""

from __future__ import annotations

from typing import Any

from gateway.tokens import mint_token

__all__ = ["SECRET", "token", "bearer"]

SECRET = "gateway-tests-hs-secret-".ljust(64, "s")


def token(subject: str = "alice", *, scopes: str | None = None, ttl: int = 300, audience: str | None = None,
          issuer: str | None = None, **claims: Any) -> str:
    """An HS256 token signed with :data:`SECRET`: ``sub``, ``exp`` ``ttl`` seconds from now,
    ``scope`` when ``scopes`` is given, ``aud``/``iss`` when given, and ``claims``."""
    return mint_token(key=SECRET, algorithm="HS256", subject=subject, scopes=scopes, ttl_seconds=ttl,
                      audience=audience, issuer=issuer, extra_claims=claims)


def bearer(subject: str = "alice", **kwargs: Any) -> dict[str, str]:
    """``{"Authorization": "Bearer <token(subject, **kwargs)>"}``."""
    return {"Authorization": f"Bearer {token(subject, **kwargs)}"}
