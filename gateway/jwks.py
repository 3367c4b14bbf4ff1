"""Key sources: where the keys that verify a token's signature come from.

One small interface, :class:`KeySource` (``get_key`` plus ``start``/``stop``),
with three implementations chosen once at build time by :func:`build_key_sources`:

* :class:`SecretKeySource` — the shared ``secret``, for HS* only;
* :class:`PemKeySource` — ``public_key_file`` (a PEM public key or certificate), for
  the RS*/PS*/ES*/EdDSA algorithms that fit its key type;
* :class:`JwksKeySource` — ``jwks_url``, fetched with Tornado's ``AsyncHTTPClient`` at
  start and every ``jwks_refresh_seconds``; keys are chosen by ``kid``. An unknown
  ``kid`` triggers one refetch, at most one per ``unknown_kid_refetch_seconds``, so a
  flood of random kids cannot hammer the provider; while the provider is down, the
  keys already fetched keep working. A request waits for that refetch at most
  ``UNKNOWN_KID_WAIT_SECONDS`` (the fetch itself goes on in the background, for the
  requests after it): a hanging provider costs a request 2 s, not the 10 s fetch
  timeout. Then the token is refused, 401 ``invalid_token`` ("unknown key id"), or,
  when the gateway holds no key at all (the provider never answered), 503
  ``service_unavailable``: the gateway cannot check any token, which is not the
  client's fault.

Each key carries the algorithms it may verify, computed from its type (and a JWK's
own ``alg``) intersected with the configured ones: an HS algorithm is only ever
verified with the secret and an asymmetric one only with a public key, which is what
rules out ``alg: none`` and the HS-with-the-public-key confusion.

Nothing here logs a token or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .config import ConfigError, JwtConfig
from .errors import GatewayError, InvalidToken, ServiceUnavailable
from .tables import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from .upstream.http1 import ResponseInterrupted

__all__ = [
    "UNKNOWN_KID_REFETCH_SECONDS",
    "UNKNOWN_KID_WAIT_SECONDS",
    "VerificationKey",
    "KeySource",
    "SecretKeySource",
    "PemKeySource",
    "JwksKeySource",
    "build_key_sources",
    "algorithms_for_key",
]

UNKNOWN_KID_REFETCH_SECONDS = 10.0
UNKNOWN_KID_WAIT_SECONDS = 2.0
FETCH_TIMEOUT_SECONDS = 10.0

log = logging.getLogger("gateway.jwks")


@dataclass(frozen=True)
class VerificationKey:
    """A ready key: ``key`` is what PyJWT verifies with (bytes for HMAC, a public key
    object otherwise); ``algorithms`` are the configured algorithms it may verify."""

    key: Any
    algorithms: tuple[str, ...]
    kid: str | None = None


class KeySource:
    """Gives the key for a token's header. ``get_key`` raises :class:`InvalidToken` when there is none."""

    async def get_key(self, algorithm: str, kid: str | None) -> VerificationKey:
        raise NotImplementedError

    async def start(self) -> None:
        """Make the source ready; a no-op for static keys."""

    async def stop(self) -> None:
        """Release background work; a no-op for static keys."""


class SecretKeySource(KeySource):
    """The shared secret; serves HS* only, ignores ``kid``. Its length was checked by the loader."""

    def __init__(self, secret: str, algorithms: tuple[str, ...]) -> None:
        self._key = VerificationKey(secret.encode("utf-8"), algorithms)

    async def get_key(self, algorithm: str, kid: str | None) -> VerificationKey:
        return self._key


class PemKeySource(KeySource):
    """A PEM public key (or certificate) file; serves the configured algorithms that fit its type."""

    def __init__(self, path: str, algorithms: tuple[str, ...]) -> None:
        where = "auth.jwt.public_key_file"
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError([f"{where}: cannot read {path!r}: {exc.strerror or exc}"]) from None
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                public_key: Any = x509.load_pem_x509_certificate(data).public_key()
            else:
                public_key = load_pem_public_key(data)
        except ValueError:
            raise ConfigError([f"{where}: {path!r} is not a PEM public key or certificate"]) from None
        fitting = algorithms_for_key(public_key)
        misfits = [name for name in algorithms if name not in fitting]
        if misfits:
            raise ConfigError(
                [f"{where}: the {_key_kind(public_key)} key in {path!r} cannot verify {', '.join(misfits)}"]
            )
        for name in algorithms:
            problem = _ALGORITHMS[name].check_key_length(public_key)
            if problem:
                raise ConfigError([f"{where}: {problem}"])
        self._key = VerificationKey(public_key, algorithms)

    async def get_key(self, algorithm: str, kid: str | None) -> VerificationKey:
        return self._key


class JwksKeySource(KeySource):
    """Keys from a JWKS URL, by ``kid``, refreshed in the background.

    ``get_key`` returns the key named by ``kid``; a token without ``kid`` gets the set's
    only key, or ``InvalidToken("token has no key id")``. An unknown kid waits for a fetch already
    under way, or starts one if none was started for an unknown kid within the last
    ``unknown_kid_refetch_seconds`` (by ``clock``), for at most ``unknown_kid_wait_seconds``
    (real time; the fetch goes on). If the kid is still unknown it raises
    ``InvalidToken("unknown key id")``, or ``ServiceUnavailable`` when no key was ever fetched. ``on_refresh`` gets ``"success"`` or ``"failure"``
    after every fetch; ``on_keys_removed`` is called when a fetch drops or changes a key,
    so that verified-token caches can forget what that key vouched for.
    """

    def __init__(
        self,
        url: str,
        algorithms: tuple[str, ...],
        *,
        refresh_seconds: float,
        clock: Callable[[], float] = time.time,
        on_refresh: Callable[[str], None] | None = None,
        on_keys_removed: Callable[[], None] | None = None,
        unknown_kid_refetch_seconds: float = UNKNOWN_KID_REFETCH_SECONDS,
        unknown_kid_wait_seconds: float = UNKNOWN_KID_WAIT_SECONDS,
        fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self._algorithms = algorithms
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._on_refresh = on_refresh
        self._on_keys_removed = on_keys_removed
        self._refetch_seconds = unknown_kid_refetch_seconds
        self._wait_seconds = unknown_kid_wait_seconds
        self._timeout = fetch_timeout_seconds
        self._shown_url = _redact_url(url)
        self._keys: Mapping[str | None, VerificationKey] = {}
        self._documents: Mapping[str | None, Mapping[str, Any]] = {}
        self._last_kid_refetch = float("-inf")
        self._fetching: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._healthy = False

    async def get_key(self, algorithm: str, kid: str | None) -> VerificationKey:
        key = self._lookup(kid)
        if key is not None:
            return key
        if kid is None:
            raise InvalidToken("token has no key id")
        fetch = self._fetching
        if fetch is None and self._clock() - self._last_kid_refetch >= self._refetch_seconds:
            self._last_kid_refetch = self._clock()
            fetch = self._start_fetch()
        if fetch is not None:
            # shield: a request that stops waiting leaves the fetch running for the others.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(fetch), self._wait_seconds)
        key = self._lookup(kid)
        if key is None:
            if not self._keys:
                raise ServiceUnavailable("the keys that verify tokens are not available",
                                         log_message=f"no JWK set was ever fetched from {self._shown_url}")
            # the body never names the IdP; the log does, and says whether its last fetch failed
            raise InvalidToken("unknown key id", log_message=f"key id {kid[:80]!r} is not in the JWK set from "
                               f"{self._shown_url}{'' if self._healthy else ' (its last fetch failed)'}")
        return key

    async def start(self) -> None:
        """First fetch (a failure is logged, not raised), then the periodic refresh task."""
        await self.refresh()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        for task in (self._refresher, self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._fetching = None

    async def refresh(self) -> bool:
        """Fetch the set now, or join the fetch under way. True when it succeeded."""
        return await asyncio.shield(self._start_fetch())

    def _start_fetch(self) -> asyncio.Task[bool]:
        """The fetch under way, started if there is none: one at a time, however many ask."""
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch())
            self._fetching.add_done_callback(self._fetch_done)
        return self._fetching

    def _fetch_done(self, task: asyncio.Task[bool]) -> None:
        if self._fetching is task:
            self._fetching = None

    def _lookup(self, kid: str | None) -> VerificationKey | None:
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        return key

    async def _refresh_forever(self) -> None:
        while True:
            # After a failure, try again sooner than a long refresh period.
            delay = (
                self._refresh_seconds if self._healthy else min(self._refresh_seconds, self._refetch_seconds)
            )
            await asyncio.sleep(delay)
            try:
                await self.refresh()
            except Exception:
                # A bug must not end the refreshing for good; the keys in hand stay in use.
                log.exception("JWKS refresh from %s failed unexpectedly", self._shown_url)

    async def _fetch(self) -> bool:
        try:  # the gateway's pooled client (gateway.upstream.client): the provider's connection is kept alive
            response = await AsyncHTTPClient().fetch(
                self.url,
                connect_timeout=self._timeout,
                request_timeout=self._timeout,
                follow_redirects=False,
                headers={"Accept": "application/json"},
            )
            keys, documents, skipped = _parse_jwks(response.body, self._algorithms)
        except (HTTPClientError, GatewayError, ResponseInterrupted, OSError, ValueError, RecursionError) as exc:
            self._healthy = False
            log.warning("JWKS fetch from %s failed: %s", self._shown_url, _describe_failure(exc))
            self._report("failure")
            return False
        for kid, reason in skipped:
            log.warning("JWKS key %r from %s ignored: %s", kid, self._shown_url, reason)
        removed = any(documents.get(kid) != document for kid, document in self._documents.items())
        self._keys, self._documents = keys, documents
        self._healthy = True
        log.debug("JWKS from %s: %d key(s): %s", self._shown_url, len(keys), ", ".join(map(str, keys)))
        if removed and self._on_keys_removed is not None:
            self._on_keys_removed()
        self._report("success")
        return True

    def _report(self, result: str) -> None:
        if self._on_refresh is not None:
            self._on_refresh(result)


def build_key_sources(
    config: JwtConfig,
    *,
    clock: Callable[[], float] = time.time,
    on_jwks_refresh: Callable[[str], None] | None = None,
    on_keys_removed: Callable[[], None] | None = None,
) -> dict[str, KeySource]:
    """The key source for each configured algorithm.

    ``config`` is one :mod:`gateway.loader` validated (the algorithm names, which key
    settings go with which algorithms, the secret's length: that is checked there, once).
    Raises :class:`ConfigError` for what only reading the key finds: a
    ``public_key_file`` that is unreadable, not a public key, unfit for the algorithms
    or too weak. An algorithm without its key setting gets no source (its tokens are
    refused as "algorithm not allowed").
    """
    hmac = tuple(name for name in config.algorithms if name in HMAC_ALGORITHMS)
    asymmetric = tuple(name for name in config.algorithms if name in ASYMMETRIC_ALGORITHMS)
    sources: dict[str, KeySource] = {}
    if hmac and config.secret:
        secret_source = SecretKeySource(config.secret, hmac)
        sources.update(dict.fromkeys(hmac, secret_source))
    if asymmetric and (config.public_key_file or config.jwks_url):
        asymmetric_source: KeySource
        if config.public_key_file:
            asymmetric_source = PemKeySource(config.public_key_file, asymmetric)
        else:
            asymmetric_source = JwksKeySource(
                config.jwks_url or "",
                asymmetric,
                refresh_seconds=config.jwks_refresh_seconds,
                clock=clock,
                on_refresh=on_jwks_refresh,
                on_keys_removed=on_keys_removed,
            )
        sources.update(dict.fromkeys(asymmetric, asymmetric_source))
    return sources


def algorithms_for_key(public_key: Any) -> frozenset[str]:
    """The JWS algorithms a public key's type can verify (RFC 7518 §3)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS.get(public_key.curve.name, frozenset())
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return frozenset({"EdDSA"})
    return frozenset()


_ALGORITHMS = {
    name: algorithm
    for name, algorithm in jwt.algorithms.get_default_algorithms().items()
    if name in HMAC_ALGORITHMS or name in ASYMMETRIC_ALGORITHMS
}
_EC_ALGORITHMS = {
    "secp256r1": frozenset({"ES256"}),
    "secp256k1": frozenset({"ES256K"}),
    "secp384r1": frozenset({"ES384"}),
    "secp521r1": frozenset({"ES512"}),
}


def _key_kind(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "EdDSA"
    return type(public_key).__name__


def _parse_jwks(
    body: bytes, algorithms: tuple[str, ...]
) -> tuple[dict[str | None, VerificationKey], dict[str | None, Mapping[str, Any]], list[tuple[Any, str]]]:
    """Usable keys by kid, their JWK documents, and (kid, reason) for each key left out.
    Raises ValueError when the document is not a JWKS or holds no usable key."""
    document = json.loads(body)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK set (no 'keys' list)")
    keys: dict[str | None, VerificationKey] = {}
    documents: dict[str | None, Mapping[str, Any]] = {}
    skipped: list[tuple[Any, str]] = []
    for index, entry in enumerate(entries):
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(entry, dict):
            skipped.append((f"#{index}", "not a JSON object"))
        elif kid is not None and not isinstance(kid, str):
            skipped.append((f"#{index}", "kid is not a string"))
        else:
            try:
                keys[kid] = _jwk_to_key(entry, algorithms)
                documents[kid] = entry
            except ValueError as exc:
                skipped.append((kid if kid is not None else f"#{index}", str(exc)))
    if not keys:
        raise ValueError("no usable key in the JWK set")
    return keys, documents, skipped


def _jwk_to_key(entry: Mapping[str, Any], algorithms: tuple[str, ...]) -> VerificationKey:
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"use is {entry.get('use')!r}, not 'sig'")
    declared = entry.get("alg")
    if declared is not None and declared not in algorithms:
        raise ValueError(f"alg {declared!r} is not among auth.jwt.algorithms")
    if entry.get("kty") == "oct":
        raise ValueError("symmetric keys are not accepted from a JWK set")
    try:
        public_key = jwt.PyJWK(dict(entry), algorithm=declared).key
    except (jwt.PyJWTError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a valid JWK ({type(exc).__name__})") from None
    fitting = algorithms_for_key(public_key)
    usable = tuple(name for name in algorithms if name in fitting and declared in (None, name))
    if not usable:
        raise ValueError(f"the {_key_kind(public_key)} key fits none of auth.jwt.algorithms")
    for name in usable:
        problem = _ALGORITHMS[name].check_key_length(public_key)
        if problem:
            raise ValueError(problem)
    return VerificationKey(public_key, usable, entry.get("kid"))


def _describe_failure(exc: Exception) -> str:
    if isinstance(exc, HTTPClientError) and exc.response is not None:
        return f"HTTP {exc.code}"
    if isinstance(exc, GatewayError):
        return exc.detail
    if isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError, RecursionError)):
        return "the answer is not JSON"
    return str(exc) or type(exc).__name__


def _redact_url(url: str) -> str:
    """The URL without credentials or query, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
