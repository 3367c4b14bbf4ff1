"""What one Authenticator.authenticate() costs, in µs, for HS256 and RS256, with and without the cache.

Usage: python bench/auth_cost.py [--iterations 20000]

Each case builds an Authenticator from its own JwtConfig, mints one token and awaits
authenticate() on it ``iterations`` times in one asyncio loop (the cached cases hit the
cache on every call after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.auth import Authenticator  # noqa: E402
from gateway.config import JwtConfig  # noqa: E402
from gateway.tokens import mint_token  # noqa: E402

SECRET = "bench-secret-".ljust(32, "x")


async def cost_us(config: JwtConfig, token: str, iterations: int) -> float:
    """Mean µs per authenticate() call."""
    authenticator = Authenticator(config)
    header = f"Bearer {token}"
    await authenticator.authenticate(header)  # warm-up (and the first cache fill)
    started = time.perf_counter()
    for _ in range(iterations):
        await authenticator.authenticate(header)
    return (time.perf_counter() - started) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    iterations = parser.parse_args().iterations

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.NamedTemporaryFile(suffix=".pem") as pem_file:
        pem_file.write(public_pem)
        pem_file.flush()

        def mint(key: str | bytes, algorithm: str) -> str:
            return mint_token(
                key=key,
                algorithm=algorithm,
                subject="user-1",
                scopes="orders:read orders:write",
                ttl_seconds=3600,
                audience=None,
                issuer=None,
                extra_claims={},
            )

        cases = {
            "HS256": (JwtConfig(algorithms=("HS256",), secret=SECRET), mint(SECRET, "HS256")),
            "RS256": (
                JwtConfig(algorithms=("RS256",), public_key_file=pem_file.name),
                mint(private_pem, "RS256"),
            ),
        }
        print(f"authenticate() cost, mean of {iterations} calls (Python {sys.version.split()[0]})")
        for name, (config, token) in cases.items():
            for cache_size, label in ((0, "no cache"), (10000, "cache hit")):
                sized = dataclasses.replace(config, cache_size=cache_size)
                microseconds = asyncio.run(cost_us(sized, token, iterations))
                print(f"  {name:6} {label:10} {microseconds:8.2f} µs")


if __name__ == "__main__":
    main()
