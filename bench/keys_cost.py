"""What an API-key lookup and an IP-rule check cost, in ns, beside a cached JWT's authenticate().

Usage: python bench/keys_cost.py [--iterations 200000]

Each case calls the compiled object of one route's policy ``iterations`` times and prints the mean:
:meth:`gateway.apikeys.ApiKeyRing.identify` (a known key and an unknown one, with 1 and 10000
consumers), :meth:`gateway.policies.iprules.IpRules.permits` (an address seen before, whose
verdict is remembered, and new addresses, with 1 and 5121 CIDRs, IPv4 and IPv4-mapped IPv6),
and, for scale, :meth:`gateway.auth.Authenticator.authenticate` on a cached HS256 token.
A route without keys or IP rules has no such step and pays nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.apikeys import ApiKeyRing  # noqa: E402
from gateway.auth import Authenticator  # noqa: E402
from gateway.config import ApiKeyConsumer, ApiKeysConfig, JwtConfig  # noqa: E402
from gateway.errors import InvalidApiKey  # noqa: E402
from gateway.policies.iprules import IpRules  # noqa: E402
from gateway.tokens import mint_token  # noqa: E402

SECRET = "bench-secret-".ljust(32, "x")


def mean_ns(call: Callable[[int], object], iterations: int) -> float:
    started = time.perf_counter()
    for i in range(iterations):
        call(i)
    return (time.perf_counter() - started) / iterations * 1e9


def ring(count: int) -> tuple[ApiKeyRing, list[str]]:
    keys = [f"key-{i:06d}-0123456789abcdef0123456789" for i in range(count)]
    consumers = tuple(ApiKeyConsumer(f"consumer-{i}", hashlib.sha256(k.encode()).digest(), ("orders:read",))
                      for i, k in enumerate(keys))
    return ApiKeyRing(ApiKeysConfig(consumers=consumers), {"sub": "X-User-Id", "scope": "X-User-Scopes"}), keys


def unknown(keys: ApiKeyRing) -> Callable[[int], object]:
    def call(i: int) -> object:
        try:
            return keys.identify("not-a-key-of-anyone-0123456789abc")
        except InvalidApiKey:
            return None
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200000)
    n = parser.parse_args().iterations
    print(f"mean of {n} calls (Python {sys.version.split()[0]})")
    for count in (1, 10000):
        keys, known = ring(count)
        key = known[count // 2]
        print(f"  api key, {count:5} consumers, known   {mean_ns(lambda i, keys=keys, key=key: keys.identify(key), n):8.0f} ns")
        print(f"  api key, {count:5} consumers, unknown {mean_ns(unknown(keys), n):8.0f} ns")
    for label, allow in (("1 CIDR", ["10.0.0.0/8"]),
                         ("5121 CIDRs", [f"10.{i}.{j}.0/24" for i in range(0, 40, 2) for j in range(256)]
                          + ["192.168.0.0/16"])):
        rules = IpRules(allow, ["10.0.5.0/24"])
        print(f"  ip rules, {label:10}, remembered      {mean_ns(lambda i, rules=rules: rules.permits('10.38.255.1'), n):8.0f} ns")
        fresh = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(n)]
        print(f"  ip rules, {label:10}, new IPv4        "
              f"{mean_ns(lambda i, rules=rules, fresh=fresh: rules._decide(fresh[i]), n):8.0f} ns")
        mapped = ["::ffff:" + address for address in fresh]
        print(f"  ip rules, {label:10}, new mapped IPv6 "
              f"{mean_ns(lambda i, rules=rules, mapped=mapped: rules._decide(mapped[i]), n):8.0f} ns")
    authenticator = Authenticator(JwtConfig(algorithms=("HS256",), secret=SECRET))
    header = "Bearer " + mint_token(key=SECRET, algorithm="HS256", subject="user-1", scopes="orders:read",
                                    ttl_seconds=3600, audience=None, issuer=None, extra_claims={})

    async def jwt_ns() -> float:
        await authenticator.authenticate(header)
        started = time.perf_counter()
        for _ in range(n):
            await authenticator.authenticate(header)
        return (time.perf_counter() - started) / n * 1e9

    print(f"  jwt HS256, cached token (for scale)       {asyncio.run(jwt_ns()):8.0f} ns")


if __name__ == "__main__":
    main()
