"""Tables several modules must agree on, kept in one place so they cannot drift.

* :data:`PROXIED_METHODS` — the HTTP methods the main listener serves (any other is
  a 405), the methods a route may list, and the methods counted by name in the
  metrics (the rest are ``OTHER``). ``CONNECT`` and ``TRACE`` are not proxied:
  CONNECT opens a tunnel, TRACE echoes the request (with its credentials) back.
* :data:`IDEMPOTENT_METHODS` — RFC 9110 §9.2.2, restricted to the proxied ones:
  what may be retried, or resent on a stale keep-alive connection.
* :data:`HMAC_ALGORITHMS`, :data:`ASYMMETRIC_ALGORITHMS` — the JWS algorithms
  ``auth.jwt.algorithms`` may name (RFC 7518 §3, RFC 8812 for ES256K, RFC 8037
  for EdDSA); :data:`HMAC_MIN_SECRET_BYTES` is RFC 7518 §3.2's key length floor.
* :data:`BODILESS_STATUSES` — the statuses whose answer never has a body, whatever
  its framing headers say (RFC 9112 §6.3: 204 and 304; 1xx never reach a proxy's
  caller). Both the upstream reader and the response writer obey it.
* :data:`MULTIPROC_ENV` — the variable ``prometheus_client`` reads, when first
  imported, to share metrics between worker processes: set by the supervisor
  (:mod:`gateway.process`), read by :mod:`gateway.metrics`.
"""

from __future__ import annotations

__all__ = [
    "PROXIED_METHODS",
    "IDEMPOTENT_METHODS",
    "HMAC_ALGORITHMS",
    "ASYMMETRIC_ALGORITHMS",
    "JWT_ALGORITHMS",
    "HMAC_MIN_SECRET_BYTES",
    "BODILESS_STATUSES",
    "MULTIPROC_ENV",
]

PROXIED_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

HMAC_ALGORITHMS: frozenset[str] = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA"}
)
JWT_ALGORITHMS: frozenset[str] = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
HMAC_MIN_SECRET_BYTES: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}

BODILESS_STATUSES: frozenset[int] = frozenset({204, 304})

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
