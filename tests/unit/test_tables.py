"""The shared tables (gateway.tables) and the modules that must use them, not copies."""

from __future__ import annotations

import jwt
import pytest

from gateway import demo, jwks, loader, metrics, proxy, tables
from gateway.upstream import exchange, retry


def test_every_module_uses_the_one_methods_table() -> None:
    assert proxy.SUPPORTED_METHODS is tables.PROXIED_METHODS
    assert demo.EchoHandler.SUPPORTED_METHODS is tables.PROXIED_METHODS
    assert metrics.KNOWN_METHODS == frozenset(tables.PROXIED_METHODS)
    assert retry.IDEMPOTENT_METHODS is exchange.IDEMPOTENT_METHODS is tables.IDEMPOTENT_METHODS


def test_idempotent_methods_are_proxied_ones() -> None:
    assert tables.IDEMPOTENT_METHODS == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
    assert tables.IDEMPOTENT_METHODS < frozenset(tables.PROXIED_METHODS)


def test_every_jwt_algorithm_in_the_table_can_be_verified() -> None:
    available = jwt.algorithms.get_default_algorithms()
    assert tables.JWT_ALGORITHMS <= available.keys()
    assert set(jwks._ALGORITHMS) == tables.JWT_ALGORITHMS
    assert tables.HMAC_MIN_SECRET_BYTES.keys() == tables.HMAC_ALGORITHMS


@pytest.mark.parametrize("method", tables.PROXIED_METHODS)
def test_a_route_may_name_every_proxied_method(method: str) -> None:
    config = loader.parse_config("upstreams: {u: {targets: ['http://127.0.0.1:9']}}\n"
                                 f"routes: [{{name: r, path: /r, upstream: u, methods: [{method.lower()}]}}]\n")
    assert config.routes[0].methods == (method,)
