"""Pure logic of gateway.auth, gateway.jwks (static key sources) and gateway.tokens, as tables.

The clock is injected and stepped; nothing sleeps. Keys are generated here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.auth import Authenticator, Identity
from gateway.config import ConfigError, JwtConfig
from gateway.errors import InsufficientScope, InvalidToken
from gateway.tokens import mint_token
from tests.support.clock import Clock
from tests.support.tokens import SECRET

NOW = 1_700_000_000.0
OTHER_SECRET = "another-secret-".ljust(64, "o")

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
PRIVATE_KEYS: dict[str, Any] = {"rsa": RSA_KEY, "ec": EC_KEY, "ed": ED_KEY}


def private_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name, key in PRIVATE_KEYS.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(public_pem(key))
        files[name] = str(path)
    return files


def make_config(pem_files: dict[str, str] | None = None, **overrides: Any) -> JwtConfig:
    """A JwtConfig; ``public_key_file`` may name a key of ``pem_files`` ("rsa", "ec", "ed")."""
    values: dict[str, Any] = {"algorithms": ("HS256",), "secret": SECRET}
    values.update(overrides)
    if pem_files is not None and values.get("public_key_file") in pem_files:
        values["public_key_file"] = pem_files[values["public_key_file"]]
    return JwtConfig(**values)


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"sub": "user-1", "iat": int(NOW), "exp": int(NOW) + 3600}
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def sign(
    payload: Any, key: Any = SECRET, algorithm: str = "HS256", headers: dict[str, Any] | None = None
) -> str:
    if not isinstance(key, (str, bytes)):
        key = private_pem(key)
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: Any, hmac_key: bytes | None) -> str:
    """A compact JWS built by hand: HS256 over any key bytes, or no signature at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    return f"{signing_input}.{b64(hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest())}"


def tamper(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(changes)
    return ".".join((header, b64(json.dumps(decoded).encode()), signature))


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- every algorithm verifies ------------------------------------------------------------

ALGORITHMS = [
    ("HS256", SECRET, None),
    ("HS384", SECRET, None),
    ("HS512", SECRET, None),
    ("RS256", "rsa", "rsa"),
    ("PS256", "rsa", "rsa"),
    ("ES256", "ec", "ec"),
    ("EdDSA", "ed", "ed"),
]


@pytest.mark.parametrize(
    "algorithm, signing, public_key_file", ALGORITHMS, ids=[case[0] for case in ALGORITHMS]
)
async def test_each_algorithm_verifies(
    io_loop: Any, pem_files: dict[str, str], algorithm: str, signing: str, public_key_file: str | None
) -> None:
    if public_key_file:
        config = make_config(pem_files, algorithms=(algorithm,), secret=None, public_key_file=public_key_file)
        key: str | bytes = private_pem(PRIVATE_KEYS[signing])
    else:
        config = make_config(algorithms=(algorithm,))
        key = signing
    token = mint_token(
        key=key,
        algorithm=algorithm,
        subject="user-1",
        scopes="orders:read orders:write",
        ttl_seconds=600,
        audience=None,
        issuer=None,
        extra_claims={"tenant": "acme"},
        clock=Clock(NOW),
    )
    identity = await Authenticator(config, clock=Clock(NOW + 10)).authenticate(bearer(token))
    assert identity == Identity(
        subject="user-1",
        scopes=frozenset({"orders:read", "orders:write"}),
        claims={
            "tenant": "acme",
            "sub": "user-1",
            "iat": int(NOW),
            "exp": int(NOW) + 600,
            "scope": "orders:read orders:write",
        },
        expires_at=NOW + 600,
        headers=(),
    )


# --- everything that must be refused -----------------------------------------------------

RSA_PUBLIC_PEM = public_pem(RSA_KEY)
HS_AND_RS = {"algorithms": ("HS256", "RS256"), "public_key_file": "rsa"}
RS_ONLY = {"algorithms": ("RS256",), "secret": None, "public_key_file": "rsa"}

REFUSED: list[tuple[str, dict[str, Any], Callable[[], str], str]] = [
    ("alg none", {}, lambda: forge({"alg": "none", "typ": "JWT"}, claims(), None), "algorithm not allowed"),
    ("alg None", {}, lambda: forge({"alg": "None"}, claims(), None), "algorithm not allowed"),
    ("alg none, RS config", RS_ONLY, lambda: forge({"alg": "none"}, claims(), None), "algorithm not allowed"),
    ("alg missing", {}, lambda: forge({"typ": "JWT"}, claims(), SECRET.encode()), "algorithm not allowed"),
    ("alg not configured", {}, lambda: sign(claims(), algorithm="HS384"), "algorithm not allowed"),
    ("alg unknown", {}, lambda: forge({"alg": "HS999"}, claims(), SECRET.encode()), "algorithm not allowed"),
    ("RS token, HS config", {}, lambda: sign(claims(), RSA_KEY, "RS256"), "algorithm not allowed"),
    (
        "confusion: HS256 with the RSA public key, RS config",
        RS_ONLY,
        lambda: forge({"alg": "HS256", "typ": "JWT"}, claims(), RSA_PUBLIC_PEM),
        "algorithm not allowed",
    ),
    (
        "confusion: HS256 with the RSA public key, HS+RS config",
        HS_AND_RS,
        lambda: forge({"alg": "HS256", "typ": "JWT"}, claims(), RSA_PUBLIC_PEM),
        "signature verification failed",
    ),
    ("tampered payload", {}, lambda: tamper(sign(claims()), sub="admin"), "signature verification failed"),
    (
        "tampered payload, RS256",
        RS_ONLY,
        lambda: tamper(sign(claims(), RSA_KEY, "RS256"), scope="admin"),
        "signature verification failed",
    ),
    ("other secret", {}, lambda: sign(claims(), OTHER_SECRET), "signature verification failed"),
    ("one segment", {}, lambda: "not-a-jwt", "malformed token"),
    ("garbage segments", {}, lambda: "a.b.c", "malformed token"),
    ("header not JSON", {}, lambda: f"{b64(b'{oops')}.{b64(b'{}')}.{b64(b'sig')}", "malformed token"),
    (
        "payload not an object",
        {},
        lambda: forge({"alg": "HS256"}, [1, 2], SECRET.encode()),
        "malformed token",
    ),
    (
        "kid not a string",
        {},
        lambda: forge({"alg": "HS256", "kid": 7}, claims(), SECRET.encode()),
        "malformed token",
    ),
    ("expired", {}, lambda: sign(claims(exp=int(NOW) - 1)), "token expired"),
    ("not yet valid", {}, lambda: sign(claims(nbf=int(NOW) + 60)), "token not yet valid"),
    ("issued in the future", {}, lambda: sign(claims(iat=int(NOW) + 60)), "token issued in the future"),
    ("exp not a number", {}, lambda: sign(claims(exp="tomorrow")), "invalid exp claim"),
    ("exp too large", {}, lambda: sign(claims(exp=10**400)), "invalid exp claim"),
    ("exp a boolean", {}, lambda: sign(claims(exp=True)), "invalid exp claim"),
    ("nbf not a number", {}, lambda: sign(claims(nbf="now")), "invalid nbf claim"),
    ("sub not a string", {}, lambda: sign(claims(sub=42)), "invalid sub claim"),
    (
        "exp missing, never optional",
        {"required_claims": ()},
        lambda: sign(claims(exp=None)),
        "missing required claim: exp",
    ),
    (
        "required claim missing",
        {"required_claims": ("exp", "sub")},
        lambda: sign(claims(sub=None)),
        "missing required claim: sub",
    ),
    (
        "wrong issuer",
        {"issuer": "https://idp.example.com"},
        lambda: sign(claims(iss="https://evil.example.com")),
        "invalid issuer",
    ),
    (
        "issuer missing",
        {"issuer": "https://idp.example.com"},
        lambda: sign(claims()),
        "missing required claim: iss",
    ),
    (
        "wrong audience",
        {"audience": ("orders-api", "billing")},
        lambda: sign(claims(aud="other")),
        "invalid audience",
    ),
    (
        "wrong audience list",
        {"audience": ("orders-api",)},
        lambda: sign(claims(aud=["a", "b"])),
        "invalid audience",
    ),
    (
        "audience missing",
        {"audience": ("orders-api",)},
        lambda: sign(claims()),
        "missing required claim: aud",
    ),
    ("over the size cap", {"max_token_bytes": 200}, lambda: sign(claims(pad="x" * 200)), "token too large"),
    ("empty bearer", {}, lambda: "", "empty bearer token"),
]


@pytest.mark.parametrize(
    "overrides, make_token, description", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
async def test_refused(
    io_loop: Any,
    pem_files: dict[str, str],
    overrides: dict[str, Any],
    make_token: Callable[[], str],
    description: str,
) -> None:
    authenticator = Authenticator(make_config(pem_files, **overrides), clock=Clock(NOW))
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(bearer(make_token()))
    assert caught.value.message == description
    assert caught.value.headers == {
        "WWW-Authenticate": f'Bearer realm="gateway", error="invalid_token", error_description="{description}"'
    }


ACCEPTED: list[tuple[str, dict[str, Any], Callable[[], str]]] = [
    (
        "issuer matches",
        {"issuer": "https://idp.example.com"},
        lambda: sign(claims(iss="https://idp.example.com")),
    ),
    ("one audience of several", {"audience": ("orders-api", "billing")}, lambda: sign(claims(aud="billing"))),
    ("audience list overlaps", {"audience": ("billing",)}, lambda: sign(claims(aud=["x", "billing"]))),
    ("audience not checked when unset", {}, lambda: sign(claims(aud="anything"))),
    ("exactly at the size cap", {"max_token_bytes": len(sign(claims()))}, lambda: sign(claims())),
    ("HS of an HS+RS config", HS_AND_RS, lambda: sign(claims())),
    ("RS of an HS+RS config", HS_AND_RS, lambda: sign(claims(), RSA_KEY, "RS256")),
]


@pytest.mark.parametrize(
    "overrides, make_token", [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
async def test_accepted(
    io_loop: Any, pem_files: dict[str, str], overrides: dict[str, Any], make_token: Callable[[], str]
) -> None:
    identity = await Authenticator(make_config(pem_files, **overrides), clock=Clock(NOW)).authenticate(
        bearer(make_token())
    )
    assert identity is not None
    assert identity.subject == "user-1"


# --- time edges: the clock is stepped, never slept -----------------------------------------

TIME_EDGES = [
    # leeway, claim offsets from NOW, clock offset from NOW, expected failure (None = accepted)
    (0, {"exp": 100}, 99.999, None),
    (0, {"exp": 100}, 100, "token expired"),
    (30, {"exp": 100}, 129.999, None),
    (30, {"exp": 100}, 130, "token expired"),
    (0, {"nbf": 50}, 50, None),
    (0, {"nbf": 50}, 49.999, "token not yet valid"),
    (30, {"nbf": 50}, 20, None),
    (30, {"nbf": 50}, 19.999, "token not yet valid"),
    (0, {"iat": 10}, 9.999, "token issued in the future"),
    (30, {"iat": 10}, 0, None),
]


@pytest.mark.parametrize("leeway, offsets, at, failure", TIME_EDGES)
async def test_time_edges(
    io_loop: Any, leeway: float, offsets: dict[str, int], at: float, failure: str | None
) -> None:
    token = sign(claims(**{name: int(NOW) + offset for name, offset in offsets.items()}))
    authenticator = Authenticator(make_config(leeway_seconds=leeway), clock=Clock(NOW + at))
    if failure is None:
        identity = await authenticator.authenticate(bearer(token))
        assert identity is not None
    else:
        with pytest.raises(InvalidToken) as caught:
            await authenticator.authenticate(bearer(token))
        assert caught.value.message == failure


# --- the Authorization header ------------------------------------------------------------

GOOD = sign(claims())
HEADER_FORMS = [
    (None, False),
    ("", False),
    ("Basic dXNlcjpwYXNz", False),
    (f"Token {GOOD}", False),
    (GOOD, False),
    (f"Bearer {GOOD}", True),
    (f"bearer {GOOD}", True),
    (f"BEARER {GOOD}", True),
    (f"  Bearer   {GOOD}  ", True),
]


@pytest.mark.parametrize("authorization, authenticated", HEADER_FORMS)
async def test_header_forms(io_loop: Any, authorization: str | None, authenticated: bool) -> None:
    identity = await Authenticator(make_config(), clock=Clock(NOW)).authenticate(authorization)
    assert (identity is not None) == authenticated


# --- scopes ----------------------------------------------------------------------------

SCOPES = [
    ("scope", {"scope": "orders:read orders:write"}, {"orders:read", "orders:write"}),
    ("scope", {"scope": "  orders:read   orders:read "}, {"orders:read"}),
    ("scope", {"scope": ["orders:read", "orders:write"]}, {"orders:read", "orders:write"}),
    ("scope", {"scope": ["orders:read", 7, None]}, {"orders:read"}),
    ("scope", {"scope": ""}, set()),
    ("scope", {"scope": 7}, set()),
    ("scope", {}, set()),
    ("scp", {"scp": ["a", "b"], "scope": "c"}, {"a", "b"}),
]


@pytest.mark.parametrize("scope_claim, extra, expected", SCOPES)
async def test_scope_claim(io_loop: Any, scope_claim: str, extra: dict[str, Any], expected: set[str]) -> None:
    authenticator = Authenticator(make_config(scope_claim=scope_claim), clock=Clock(NOW))
    identity = await authenticator.authenticate(bearer(sign(claims(**extra))))
    assert identity is not None
    assert identity.scopes == frozenset(expected)


CHECK_SCOPES = [
    ({"a", "b"}, (), None),
    ({"a", "b"}, ("a",), None),
    ({"a", "b"}, ("a", "b"), None),
    ({"a"}, ("a", "b"), "b"),
    (set(), ("a", "b"), "a b"),
]


@pytest.mark.parametrize("have, required, missing", CHECK_SCOPES)
def test_check_scopes(have: set[str], required: tuple[str, ...], missing: str | None) -> None:
    authenticator = Authenticator(make_config())
    identity = Identity("user-1", frozenset(have), {}, NOW, ())
    if missing is None:
        authenticator.check_scopes(identity, required)
        return
    with pytest.raises(InsufficientScope) as caught:
        authenticator.check_scopes(identity, required)
    assert caught.value.message == f"missing scope: {missing}"
    assert caught.value.headers == {
        "WWW-Authenticate": (
            f'Bearer realm="gateway", error="insufficient_scope", '
            f'error_description="missing scope: {missing}", scope="{missing}"'
        )
    }


# --- claims_to_headers -------------------------------------------------------------------

CLAIM_HEADERS = {"sub": "X-User-Id", "scope": "X-User-Scopes", "roles": "X-User-Roles", "tenant": "X-Tenant"}
HEADER_CASES = [
    (
        {"scope": "a b", "roles": ["admin", "ops"], "tenant": "acme"},
        (
            ("X-User-Id", "user-1"),
            ("X-User-Scopes", "a b"),
            ("X-User-Roles", "admin ops"),
            ("X-Tenant", "acme"),
        ),
    ),
    ({"scope": ["a", "b"]}, (("X-User-Id", "user-1"), ("X-User-Scopes", "a b"))),
    ({"tenant": 42, "roles": []}, (("X-User-Id", "user-1"), ("X-User-Roles", ""), ("X-Tenant", "42"))),
    ({"tenant": True}, (("X-User-Id", "user-1"), ("X-Tenant", "true"))),
    ({"tenant": {"id": 7}}, (("X-User-Id", "user-1"), ("X-Tenant", '{"id":7}'))),
    ({"tenant": "Zoë"}, (("X-User-Id", "user-1"), ("X-Tenant", "Zoë".encode().decode("latin-1")))),
    ({"sub": None}, ()),
]


@pytest.mark.parametrize("extra, headers", HEADER_CASES)
async def test_claims_to_headers(
    io_loop: Any, extra: dict[str, Any], headers: tuple[tuple[str, str], ...]
) -> None:
    authenticator = Authenticator(make_config(claims_to_headers=CLAIM_HEADERS), clock=Clock(NOW))
    assert authenticator.identity_header_names == ("X-User-Id", "X-User-Scopes", "X-User-Roles", "X-Tenant")
    identity = await authenticator.authenticate(bearer(sign(claims(**extra))))
    assert identity is not None
    assert identity.headers == headers


REFUSED_CLAIMS = [
    ({"tenant": "acme\r\nX-Injected: 1"}, "the tenant claim holds a control character"),
    ({"sub": "alice\r\nX-Admin: 1"}, "the sub claim holds a control character"),
    ({"sub": "\x00"}, "the sub claim holds a control character"),
    ({"sub": "tab\there"}, "the sub claim holds a control character"),
    ({"roles": ["ok", "del\x7f"]}, "the roles claim holds a control character"),
    ({"scope": "a\nb"}, "the scope claim holds a control character"),
]


@pytest.mark.parametrize("extra, description", REFUSED_CLAIMS)
async def test_a_mapped_claim_with_a_control_character_refuses_the_token(
    io_loop: Any, extra: dict[str, Any], description: str
) -> None:
    authenticator = Authenticator(make_config(claims_to_headers=CLAIM_HEADERS), clock=Clock(NOW))
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(bearer(sign(claims(**extra))))
    assert caught.value.message == description


async def test_an_unmapped_claim_with_a_control_character_is_no_concern(io_loop: Any) -> None:
    authenticator = Authenticator(make_config(claims_to_headers={"sub": "X-User-Id"}), clock=Clock(NOW))
    identity = await authenticator.authenticate(bearer(sign(claims(note="line\r\nbreak"))))
    assert identity is not None and identity.headers == (("X-User-Id", "user-1"),)


def test_forward_authorization_is_exposed() -> None:
    assert Authenticator(make_config(forward_authorization=False)).forward_authorization is False
    assert Authenticator(make_config()).forward_authorization is True


# --- the verification cache --------------------------------------------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts full verifications: a spy around PyJWT's real decode."""
    calls: list[str] = []
    real_decode = jwt.PyJWT.decode

    def counting_decode(self: jwt.PyJWT, token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real_decode(self, token, *args, **kwargs)

    monkeypatch.setattr(jwt.PyJWT, "decode", counting_decode)
    return calls


async def test_cache_hit_skips_verification(io_loop: Any, decodes: list[str]) -> None:
    clock = Clock(NOW)
    authenticator = Authenticator(make_config(), clock=clock)
    token = sign(claims())
    first = await authenticator.authenticate(bearer(token))
    clock.now += 3599
    second = await authenticator.authenticate(bearer(token))
    assert second is first
    assert decodes == [token]


async def test_cache_never_used_at_or_past_exp(io_loop: Any, decodes: list[str]) -> None:
    clock = Clock(NOW)
    authenticator = Authenticator(make_config(), clock=clock)
    token = sign(claims(exp=int(NOW) + 100))
    await authenticator.authenticate(bearer(token))
    clock.now = NOW + 100
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(bearer(token))
    assert caught.value.message == "token expired"
    assert decodes == [token, token]


async def test_cache_not_used_within_leeway_past_exp(io_loop: Any, decodes: list[str]) -> None:
    clock = Clock(NOW)
    authenticator = Authenticator(make_config(leeway_seconds=30), clock=clock)
    token = sign(claims(exp=int(NOW) + 100))
    first = await authenticator.authenticate(bearer(token))
    clock.now = NOW + 110  # past exp, inside the leeway: verified afresh, not cached again
    second = await authenticator.authenticate(bearer(token))
    third = await authenticator.authenticate(bearer(token))
    assert first is not None and second is not None and third is not None
    assert second is not first and third is not second
    assert decodes == [token, token, token]


async def test_cache_never_used_before_nbf(io_loop: Any, decodes: list[str]) -> None:
    clock = Clock(NOW + 25)
    authenticator = Authenticator(make_config(leeway_seconds=30), clock=clock)
    token = sign(claims(nbf=int(NOW) + 50))
    await authenticator.authenticate(bearer(token))  # nbf - leeway = NOW + 20 <= NOW + 25
    clock.now = NOW + 10  # the clock stepped back before nbf - leeway
    with pytest.raises(InvalidToken) as caught:
        await authenticator.authenticate(bearer(token))
    assert caught.value.message == "token not yet valid"
    assert decodes == [token, token]


async def test_cache_evicts_oldest(io_loop: Any, decodes: list[str]) -> None:
    authenticator = Authenticator(make_config(cache_size=2), clock=Clock(NOW))
    tokens = [sign(claims(sub=f"user-{n}")) for n in range(3)]
    for token in tokens:
        await authenticator.authenticate(bearer(token))
    await authenticator.authenticate(bearer(tokens[2]))  # still cached
    await authenticator.authenticate(bearer(tokens[1]))  # still cached
    await authenticator.authenticate(bearer(tokens[0]))  # evicted: verified again
    assert decodes == [tokens[0], tokens[1], tokens[2], tokens[0]]


@pytest.mark.parametrize("cache_size, verifications", [(0, 3), (1, 1)])
async def test_cache_size(io_loop: Any, decodes: list[str], cache_size: int, verifications: int) -> None:
    authenticator = Authenticator(make_config(cache_size=cache_size), clock=Clock(NOW))
    token = sign(claims())
    for _ in range(3):
        await authenticator.authenticate(bearer(token))
    assert len(decodes) == verifications


async def test_refused_tokens_are_not_cached(io_loop: Any, decodes: list[str]) -> None:
    authenticator = Authenticator(make_config(), clock=Clock(NOW))
    token = sign(claims(), OTHER_SECRET)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(bearer(token))
    assert decodes == [token, token]


# --- configuration problems, found at build time -----------------------------------------
# Only what reading a key file finds; the shape of auth.jwt (algorithm names, which key
# setting goes with which algorithm, the secret's length) is checked by the loader alone
# (tests/unit/test_loader.py).


def self_signed_certificate(key: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    start = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


async def test_certificate_file_is_a_public_key(io_loop: Any, tmp_path: Path) -> None:
    path = tmp_path / "idp.crt"
    path.write_bytes(self_signed_certificate(RSA_KEY))
    config = make_config(algorithms=("RS256",), secret=None, public_key_file=str(path))
    identity = await Authenticator(config, clock=Clock(NOW)).authenticate(
        bearer(sign(claims(), RSA_KEY, "RS256"))
    )
    assert identity is not None


def test_config_problems(tmp_path: Path, pem_files: dict[str, str]) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    weak = tmp_path / "weak.pem"
    weak.write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    missing = str(tmp_path / "missing.pem")
    cases: list[tuple[dict[str, Any], list[str]]] = [
        (
            {"algorithms": ("RS256",), "public_key_file": missing},
            [f"auth.jwt.public_key_file: cannot read {missing!r}: No such file or directory"],
        ),
        (
            {"algorithms": ("RS256",), "public_key_file": str(garbage)},
            [f"auth.jwt.public_key_file: {str(garbage)!r} is not a PEM public key or certificate"],
        ),
        (
            {"algorithms": ("RS256", "PS256"), "public_key_file": pem_files["ec"]},
            [
                f"auth.jwt.public_key_file: the EC secp256r1 key in {pem_files['ec']!r} cannot verify RS256, PS256"
            ],
        ),
        (
            {"algorithms": ("ES384",), "public_key_file": pem_files["ec"]},
            [f"auth.jwt.public_key_file: the EC secp256r1 key in {pem_files['ec']!r} cannot verify ES384"],
        ),
        (
            {"algorithms": ("RS256",), "public_key_file": str(weak)},
            [
                "auth.jwt.public_key_file: The RSA key is 1024 bits long, which is below the minimum "
                "recommended size of 2048 bits. See NIST SP 800-131A."
            ],
        ),
    ]
    for overrides, problems in cases:
        with pytest.raises(ConfigError) as caught:
            Authenticator(make_config(**overrides))
        assert caught.value.problems == problems


# --- minting ----------------------------------------------------------------------------


def test_mint_token_claims_and_header() -> None:
    token = mint_token(
        key=SECRET,
        algorithm="HS256",
        subject="user-1",
        scopes="a b",
        ttl_seconds=60,
        audience="orders-api",
        issuer="https://idp.example.com",
        extra_claims={"tenant": "acme", "sub": "someone-else", "exp": 1},
        kid="k1",
        clock=Clock(NOW + 0.7),
    )
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    assert jwt.decode(token, options={"verify_signature": False}) == {
        "tenant": "acme",
        "sub": "user-1",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "scope": "a b",
        "aud": "orders-api",
        "iss": "https://idp.example.com",
    }


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE_PEM = _RSA.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC_PEM = _RSA.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()


@pytest.mark.parametrize(
    "algorithm, key, ttl, message",
    [
        ("none", SECRET, 60, "refusing to mint an unsigned token (alg: none)"),
        ("HS256", SECRET, 0, "ttl_seconds must be positive, not 0"),
        ("XX256", SECRET, 60, "unknown algorithm 'XX256'"),
        ("HS256", SECRET, -5, "ttl_seconds must be positive, not -5"),
        ("RS256", SECRET, 60, "cannot sign with RS256: not an unencrypted PEM private key"),
        ("RS256", PUBLIC_PEM, 60, "cannot sign with RS256: not an unencrypted PEM private key"),
        ("ES256", RSA_PRIVATE_PEM, 60,
         "cannot sign with ES256: this RSAPrivateKey signs only PS256, PS384, PS512, RS256, RS384, RS512"),
    ],
)
def test_mint_token_refuses(algorithm: str, key: str, ttl: int, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        mint_token(
            key=key,
            algorithm=algorithm,
            subject="u",
            scopes=None,
            ttl_seconds=ttl,
            audience=None,
            issuer=None,
            extra_claims={},
        )
    assert str(caught.value) == message
