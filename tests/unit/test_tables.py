"""The shared tables (gateway.tables) and the modules that must use them, not copies."""

from __future__ import annotations

import jwt
import pytest

from gateway import configchecks, demo, jwks, loader, metrics, process, routing, tables
from gateway.http import handler as proxy
from gateway.http import response
from gateway.upstream import exchange, http1, retry


def test_every_module_uses_the_one_methods_table() -> None:
    assert proxy.SUPPORTED_METHODS is tables.PROXIED_METHODS
    assert demo.EchoHandler.SUPPORTED_METHODS is tables.PROXIED_METHODS
    assert metrics.KNOWN_METHODS == frozenset(tables.PROXIED_METHODS)
    assert retry.IDEMPOTENT_METHODS is exchange.IDEMPOTENT_METHODS is tables.IDEMPOTENT_METHODS


def test_one_multiprocess_variable_and_one_path_parameter_pattern() -> None:
    assert process.MULTIPROC_ENV is metrics.MULTIPROC_ENV is tables.MULTIPROC_ENV == "PROMETHEUS_MULTIPROC_DIR"
    assert configchecks.PATH_PARAM is routing.PATH_PARAM


@pytest.mark.parametrize(("text", "names"), [
    ("/orders/{id}", ["id"]),
    ("/a/{x}/b/{_y2}", ["x", "_y2"]),
    ("/a/{2x}/{}/{x-y}/{ x}", []),
    ("/files/{name}.json", ["name"]),  # an aggregate part's path: anywhere in a segment
])
def test_path_parameters(text: str, names: list[str]) -> None:
    assert routing.PATH_PARAM.findall(text) == names


def test_bodiless_statuses() -> None:
    assert tables.BODILESS_STATUSES == {204, 304}
    assert response.BODILESS_STATUSES is http1.BODILESS_STATUSES is tables.BODILESS_STATUSES


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
