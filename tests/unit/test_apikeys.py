"""API keys as tables (gateway/apikeys.py): identities of consumers, refusals, the digest."""

from __future__ import annotations

import hashlib

import pytest

from gateway.apikeys import MAX_KEY_BYTES, ApiKeyRing, digest_of, new_key
from gateway.config import ApiKeyConsumer, ApiKeysConfig, ConfigError
from gateway.errors import InvalidApiKey

KEY_A = "partner-a-key-0123456789"
KEY_B = "partner-b-key-9876543210"
CONFIG = ApiKeysConfig(consumers=(
    ApiKeyConsumer("partner-a", hashlib.sha256(KEY_A.encode()).digest(), ("orders:read", "orders:write")),
    ApiKeyConsumer("partner-b", hashlib.sha256(KEY_B.encode()).digest()),
))


def test_a_consumer_is_an_identity_like_a_tokens() -> None:
    ring = ApiKeyRing(CONFIG, {"sub": "X-User-Id", "scope": "X-User-Scopes", "email": "X-Email"})
    identity = ring.identify(KEY_A)
    assert identity.subject == "partner-a"
    assert identity.scopes == frozenset({"orders:read", "orders:write"})
    assert dict(identity.claims) == {"sub": "partner-a", "scope": "orders:read orders:write"}
    assert identity.headers == (("X-User-Id", "partner-a"), ("X-User-Scopes", "orders:read orders:write"))
    assert identity.method == "api_key"
    assert identity.expires_at == float("inf")
    assert ring.identify(KEY_A) is identity  # built once, at load
    assert ring.identify(KEY_B).headers == (("X-User-Id", "partner-b"), ("X-User-Scopes", ""))


def test_the_scope_claim_of_the_jwt_section_names_the_scopes() -> None:
    ring = ApiKeyRing(CONFIG, {"scp": "X-Scopes"}, scope_claim="scp")
    assert dict(ring.identify(KEY_A).claims) == {"sub": "partner-a", "scp": "orders:read orders:write"}
    assert ring.identify(KEY_A).headers == (("X-Scopes", "orders:read orders:write"),)


@pytest.mark.parametrize("presented, message", [
    ("", "empty API key"),
    ("x" * (MAX_KEY_BYTES + 1), "API key too long"),
    ("partner-a-key-012345678", "the API key is not valid"),  # one character short
    (KEY_A + " ", "the API key is not valid"),
    (KEY_A.upper(), "the API key is not valid"),
    (hashlib.sha256(KEY_A.encode()).hexdigest(), "the API key is not valid"),  # the digest is not the key
    ("é" * 20, "the API key is not valid"),
])
def test_refused_keys(presented: str, message: str) -> None:
    ring = ApiKeyRing(CONFIG, {})
    with pytest.raises(InvalidApiKey) as caught:
        ring.identify(presented)
    assert (caught.value.status, caught.value.code, caught.value.message) == (401, "invalid_api_key", message)


def test_a_scope_that_cannot_be_a_header_value_is_a_config_error() -> None:
    config = ApiKeysConfig(consumers=(ApiKeyConsumer("a", digest_of(KEY_A), ("bad\nscope",)),))
    with pytest.raises(ConfigError) as caught:
        ApiKeyRing(config, {"scope": "X-Scopes"})
    assert caught.value.problems == ["auth.api_keys.consumers[0]: its scope holds a control character"]


def test_new_keys_are_random_and_long() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(key) == 43 and all("!" <= c <= "~" for c in key) for key in keys)


def test_digest_is_sha256_of_the_header_bytes() -> None:
    assert digest_of("abc") == hashlib.sha256(b"abc").digest()
    assert digest_of("\xe9") == hashlib.sha256(b"\xe9").digest()  # a latin-1 header value, byte for byte
