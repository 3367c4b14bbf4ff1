"""JWKS key sources end to end: a real Tornado app serves the JWK set on a loopback port.

Requests are counted at the server; the clock that rate-limits refetches is injected
and stepped. Every test also checks that no token, secret or private key reaches a log
record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from gateway.auth import Authenticator
from gateway.config import JwtConfig
from gateway.errors import InvalidToken, ServiceUnavailable
from tests.support.clock import Clock
from tests.support.tokens import SECRET

NOW = int(time.time())  # the injected clock starts here and tokens are issued here
KEY_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_C = ec.generate_private_key(ec.SECP256R1())
KEY_NEW = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg is not None:
        jwk["alg"] = alg
    return jwk


JWK_A = public_jwk(KEY_A, "a", "RS256")
JWK_B = public_jwk(KEY_B, "b")  # no alg: any configured algorithm its RSA type fits
JWK_C = public_jwk(KEY_C, "c", "ES256")
JWK_NEW = public_jwk(KEY_NEW, "new", "RS256")


class JwksProvider:
    """A JWKS endpoint on an ephemeral loopback port that counts the requests it answers."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.document: Any = {"keys": list(keys)}
        self.status = 200
        self.body: bytes | None = None  # when set, answered instead of the document
        self.requests = 0
        self.hang = False  # when set, a request gets no answer until release()
        self._released = asyncio.Event()
        self.url = ""
        self._server: HTTPServer | None = None

    async def __aenter__(self) -> JwksProvider:
        sock, port = bind_unused_port()
        self._server = HTTPServer(Application([(r"/jwks", _JwksHandler, {"provider": self})]))
        self._server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{port}/jwks"
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    def release(self) -> None:
        """Let every hanging request answer (with the document)."""
        self.hang = False
        self._released.set()

    async def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


class _JwksHandler(RequestHandler):
    def initialize(self, provider: JwksProvider) -> None:
        self.provider = provider

    async def get(self) -> None:
        self.provider.requests += 1
        if self.provider.hang:
            await self.provider._released.wait()
        self.set_status(self.provider.status)
        self.set_header("Content-Type", "application/json")
        self.finish(
            self.provider.body if self.provider.body is not None else json.dumps(self.provider.document)
        )


class Tokens:
    """Signs tokens and remembers each one, with the secrets, as what must never be logged."""

    def __init__(self) -> None:
        self.sensitive: list[str] = [SECRET]
        for key in (KEY_A, KEY_B, KEY_C, KEY_NEW):
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            self.sensitive.append(pem.splitlines()[1])  # a line of the private key material

    def sign(self, key: Any, kid: str | None, algorithm: str = "RS256", sub: str = "user-1") -> str:
        headers = {"kid": kid} if kid is not None else None
        signing_key = SECRET if isinstance(key, str) else key
        token = jwt.encode(
            {"sub": sub, "iat": NOW, "exp": NOW + 3600}, signing_key, algorithm, headers=headers
        )
        self.sensitive.append(token)
        self.sensitive.append(token.rsplit(".", 1)[1])
        return token


@pytest.fixture
def tokens(caplog: pytest.LogCaptureFixture) -> Iterator[Tokens]:
    caplog.set_level(logging.DEBUG)
    made = Tokens()
    yield made
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert any(record.name == "gateway.jwks" for record in records)
    formatter = logging.Formatter()
    for record in records:
        text = formatter.format(record) + repr(record.args)
        for sensitive in made.sensitive:
            assert sensitive not in text, f"{record.name} logged something sensitive"


def config(url: str, **overrides: Any) -> JwtConfig:
    values: dict[str, Any] = {
        "algorithms": ("RS256", "PS256", "ES256"),
        "jwks_url": url,
        "jwks_refresh_seconds": 300.0,
    }
    values.update(overrides)
    return JwtConfig(**values)


async def refused(authenticator: Authenticator, token: str) -> str:
    """The description of the InvalidToken that ``token`` gets."""
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(f"Bearer {token}")
    return caught.value.message


async def subject(authenticator: Authenticator, token: str) -> str | None:
    identity = await authenticator.authenticate(f"Bearer {token}")
    assert identity is not None
    return identity.subject


async def test_keys_are_chosen_by_kid(io_loop: Any, tokens: Tokens) -> None:
    async with JwksProvider(JWK_A, JWK_B, JWK_C) as provider:
        results: list[str] = []
        authenticator = Authenticator(config(provider.url), clock=Clock(NOW), on_jwks_refresh=results.append)
        await authenticator.start()
        try:
            assert await subject(authenticator, tokens.sign(KEY_A, "a", sub="user-a")) == "user-a"
            assert await subject(authenticator, tokens.sign(KEY_B, "b", sub="user-b")) == "user-b"
            assert (
                await subject(authenticator, tokens.sign(KEY_B, "b", "PS256", sub="user-b-ps")) == "user-b-ps"
            )
            assert await subject(authenticator, tokens.sign(KEY_C, "c", "ES256", sub="user-c")) == "user-c"
            assert await refused(authenticator, tokens.sign(KEY_A, "b")) == "signature verification failed"
            # JWK "a" declares RS256: a PS256 token naming it is refused even though the key is RSA.
            assert await refused(authenticator, tokens.sign(KEY_A, "a", "PS256")) == "algorithm not allowed"
            assert await refused(authenticator, tokens.sign(KEY_C, "a", "ES256")) == "algorithm not allowed"
            assert await refused(authenticator, tokens.sign(SECRET, "a", "HS256")) == "algorithm not allowed"
            assert await refused(authenticator, tokens.sign(KEY_A, None)) == "token has no key id"
        finally:
            await authenticator.stop()
        assert provider.requests == 1
        assert results == ["success"]


async def test_unknown_kid_refetches_once_and_accepts_a_rotated_key(io_loop: Any, tokens: Tokens) -> None:
    async with JwksProvider(JWK_A) as provider:
        clock = Clock(NOW)
        results: list[str] = []
        authenticator = Authenticator(config(provider.url), clock=clock, on_jwks_refresh=results.append)
        await authenticator.start()
        try:
            token_a = tokens.sign(KEY_A, "a", sub="user-a")
            assert await subject(authenticator, token_a) == "user-a"
            provider.document = {"keys": [JWK_A, JWK_NEW]}  # the provider rotates in a new key
            assert await subject(authenticator, tokens.sign(KEY_NEW, "new", sub="user-new")) == "user-new"
            assert provider.requests == 2
            assert await subject(authenticator, tokens.sign(KEY_NEW, "new", sub="again")) == "again"
            assert provider.requests == 2

            provider.document = {"keys": [JWK_NEW]}  # ... and retires the old one
            clock.now += 10
            assert await refused(authenticator, tokens.sign(KEY_A, "retired")) == "unknown key id"
            assert provider.requests == 3
            # The verified token signed by the retired key is no longer served from the cache.
            assert await refused(authenticator, token_a) == "unknown key id"
            assert provider.requests == 3
        finally:
            await authenticator.stop()
        assert results == ["success", "success", "success"]


async def test_a_flood_of_random_kids_refetches_at_most_once_per_interval(
    io_loop: Any, tokens: Tokens
) -> None:
    async with JwksProvider(JWK_A) as provider:
        clock = Clock(NOW)
        authenticator = Authenticator(config(provider.url), clock=clock)
        await authenticator.start()
        try:
            flood = [tokens.sign(KEY_A, uuid.uuid4().hex) for _ in range(200)]
            answers = await asyncio.gather(
                *(authenticator.authenticate(f"Bearer {token}") for token in flood[:100]),
                return_exceptions=True,
            )
            assert [getattr(answer, "message", answer) for answer in answers] == ["unknown key id"] * 100
            assert provider.requests == 2
            for token in flood[100:]:
                assert await refused(authenticator, token) == "unknown key id"
            assert provider.requests == 2

            clock.now += 9.999
            assert await refused(authenticator, tokens.sign(KEY_A, "random-1")) == "unknown key id"
            assert provider.requests == 2
            clock.now += 0.001
            assert await refused(authenticator, tokens.sign(KEY_A, "random-2")) == "unknown key id"
            assert await refused(authenticator, tokens.sign(KEY_A, "random-3")) == "unknown key id"
            assert provider.requests == 3
            assert await subject(authenticator, tokens.sign(KEY_A, "a")) == "user-1"
        finally:
            await authenticator.stop()


async def test_cached_keys_keep_working_while_the_provider_is_down(
    io_loop: Any, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    async with JwksProvider(JWK_A) as provider:
        results: list[str] = []
        jwt_config = config(provider.url, algorithms=("HS256", "RS256"), secret=SECRET, cache_size=0)
        authenticator = Authenticator(jwt_config, clock=Clock(NOW), on_jwks_refresh=results.append)
        await authenticator.start()
        try:
            token_a = tokens.sign(KEY_A, "a", sub="user-a")
            assert await subject(authenticator, token_a) == "user-a"
            await provider.stop()
            assert await subject(authenticator, token_a) == "user-a"
            assert await refused(authenticator, tokens.sign(KEY_NEW, "new")) == "unknown key id"
            assert await subject(authenticator, token_a) == "user-a"
            assert (
                await subject(authenticator, tokens.sign(SECRET, None, "HS256", sub="user-hs")) == "user-hs"
            )
        finally:
            await authenticator.stop()
        assert results == ["success", "failure"]
        failures = [
            r.getMessage()
            for r in caplog.records
            if r.name == "gateway.jwks" and r.levelno == logging.WARNING
        ]
        assert len(failures) == 1
        assert failures[0].startswith(f"JWKS fetch from {provider.url} failed: ")


FAILING_PROVIDERS = [
    ("HTTP 503", 503, None, "HTTP 503"),
    ("not JSON", 200, b"<html>down</html>", "the answer is not JSON"),
    ("no keys list", 200, b'{"keys": {}}', "not a JWK set (no 'keys' list)"),
    (
        "only unusable keys",
        200,
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}).encode(),
        "no usable key in the JWK set",
    ),
]


@pytest.mark.parametrize(
    "status, body, reason",
    [case[1:] for case in FAILING_PROVIDERS],
    ids=[case[0] for case in FAILING_PROVIDERS],
)
async def test_a_failed_first_fetch_is_not_fatal(
    io_loop: Any,
    tokens: Tokens,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes | None,
    reason: str,
) -> None:
    async with JwksProvider(JWK_A) as provider:
        provider.status, provider.body = status, body
        clock = Clock(NOW)
        results: list[str] = []
        authenticator = Authenticator(config(provider.url), clock=clock, on_jwks_refresh=results.append)
        await authenticator.start()
        try:
            token = tokens.sign(KEY_A, "a")
            # No key at all: the gateway cannot check any token, which is a 503, not the client's fault.
            with pytest.raises(ServiceUnavailable):
                await authenticator.authenticate(f"Bearer {token}")  # the one allowed refetch, failing too
            provider.status, provider.body = 200, None
            with pytest.raises(ServiceUnavailable):
                await authenticator.authenticate(f"Bearer {token}")  # rate-limited: no fetch
            clock.now += 10
            assert await subject(authenticator, token) == "user-1"
        finally:
            await authenticator.stop()
        assert provider.requests == 3
        assert results == ["failure", "failure", "success"]
        failures = [
            r.getMessage()
            for r in caplog.records
            if r.name == "gateway.jwks" and r.levelno == logging.WARNING
        ]
        assert failures == [f"JWKS fetch from {provider.url} failed: {reason}"] * 2


async def test_periodic_refresh_picks_up_rotation_and_stops(io_loop: Any, tokens: Tokens) -> None:
    async with JwksProvider(JWK_A) as provider:
        results: list[str] = []
        jwt_config = config(provider.url, jwks_refresh_seconds=0.2)
        authenticator = Authenticator(jwt_config, clock=Clock(NOW), on_jwks_refresh=results.append)
        await authenticator.start()
        try:
            assert provider.requests == 1
            provider.document = {"keys": [JWK_NEW]}
            for _ in range(100):  # two periodic refreshes, 0.2 s apart
                if len(results) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert results == ["success", "success", "success"]
            requests = provider.requests
            assert await subject(authenticator, tokens.sign(KEY_NEW, "new")) == "user-1"
            assert provider.requests == requests  # known from the periodic refresh: no refetch
        finally:
            await authenticator.stop()
        stopped_at = provider.requests
        await asyncio.sleep(0.5)
        assert provider.requests == stopped_at
        # stop() may cancel a fetch that the server has already counted
        assert results == ["success"] * len(results)
        assert len(results) in (stopped_at - 1, stopped_at)


# --- through a running gateway: a provider that hangs ----------------------------------------


def jwks_gateway_yaml(url: str, upstream_url: str) -> str:
    return f"""
    auth:
      jwt: {{algorithms: [RS256], jwks_url: "{url}", claims_to_headers: {{sub: X-User-Id}}}}
    upstreams:
      echo: {{targets: ["{upstream_url}"]}}
    routes:
      - {{name: orders, path: /orders, upstream: echo}}
    """


async def test_a_hanging_provider_holds_a_request_at_most_the_bounded_wait(
    start_gateway: Any, start_upstream: Any, http: Any, tokens: Tokens
) -> None:
    from gateway.demo import EchoHandler

    echo = start_upstream(Application([(r".*", EchoHandler)]))
    async with JwksProvider(JWK_A) as provider:
        gw = await start_gateway(jwks_gateway_yaml(provider.url, echo.url))
        known = {"Authorization": f"Bearer {tokens.sign(KEY_A, 'a', sub='alice')}"}
        assert (await http(gw.url + "/orders", headers=known)).code == 200
        provider.hang = True
        try:
            started = time.monotonic()
            # Many unknown kids at once: one refetch between them, each answered within the bound.
            answers = await asyncio.gather(*(
                http(gw.url + "/orders", headers={"Authorization": f"Bearer {tokens.sign(KEY_NEW, f'new-{i}')}"})
                for i in range(8)  # the test client runs at most 10 at once
            ))
            elapsed = time.monotonic() - started
            assert 2.0 <= elapsed < 3.5
            assert [answer.code for answer in answers] == [401] * 8
            assert {json.loads(answer.body)["error"] for answer in answers} == {"invalid_token"}
            assert {answer.headers["WWW-Authenticate"] for answer in answers} == {
                'Bearer realm="gateway", error="invalid_token", error_description="unknown key id"'
            }
            assert provider.requests == 2
            # The known key keeps working at once while the refetch hangs.
            started = time.monotonic()
            assert (await http(gw.url + "/orders", headers=known)).code == 200
            assert time.monotonic() - started < 0.5
        finally:
            provider.release()
        await asyncio.sleep(0.1)  # the refetch, released, completes in the background


async def test_no_keys_at_all_is_503_within_the_bounded_wait(
    start_gateway: Any, start_upstream: Any, http: Any, tokens: Tokens
) -> None:
    from gateway.demo import EchoHandler

    echo = start_upstream(Application([(r".*", EchoHandler)]))
    async with JwksProvider(JWK_A) as provider:
        provider.status = 503  # the first fetch fails: the gateway holds no key
        gw = await start_gateway(jwks_gateway_yaml(provider.url, echo.url))
        provider.hang = True
        try:
            started = time.monotonic()
            resp = await http(gw.url + "/orders", headers={"Authorization": f"Bearer {tokens.sign(KEY_A, 'a')}"})
            assert time.monotonic() - started < 3.5
            assert resp.code == 503
            body = json.loads(resp.body)
            assert (body["error"], body["message"]) == (
                "service_unavailable", "the keys that verify tokens are not available")
            assert provider.requests == 2
        finally:
            provider.release()
        await asyncio.sleep(0.1)
