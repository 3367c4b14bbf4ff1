"""The route table (issue 2 §3): prefixes on segment boundaries, hosts, methods, rewrites, normalisation."""

from __future__ import annotations

import time

import pytest

from gateway.config import AggregatePart, RouteConfig
from gateway.errors import BadRequest, MethodNotAllowed, NoRoute
from gateway.routing import RouteTable, normalize_path

ROUTES = [
    RouteConfig("orders", "/api/orders", "u", strip_prefix=True),
    RouteConfig("api", "/api", "u"),
    RouteConfig("order7", "/api/orders/7", "u", methods=("GET",)),
    RouteConfig("writes", "/api/writes", "u", methods=("POST", "PUT")),
    RouteConfig("api-host", "/api", "u", host="api.example.com"),
    RouteConfig("v2", "/v1/things", "u", rewrite_prefix="/v2", strip_prefix=True),
    RouteConfig("root-rewrite", "/legacy", "u", rewrite_prefix="/", strip_prefix=True),
    RouteConfig("overview", "/users/{id}/overview", aggregate=(AggregatePart("user", "u", "/users/{id}"),)),
    RouteConfig("users", "/users/me", "u"),
]
TABLE = RouteTable(ROUTES)


def route_of(path: str, host: str = "gw.local", method: str = "GET") -> str:
    return TABLE.match(method, host, path).route.name


@pytest.mark.parametrize("path, expected", [
    ("/api/orders", "orders"),
    ("/api/orders/", "orders"),
    ("/api/orders/8", "orders"),
    ("/api/ordersX", "api"),  # a prefix ends on a segment boundary
    ("/api/orders.json", "api"),
    ("/api/orders/7", "order7"),  # the longest prefix wins
    ("/api/orders/7/items", "order7"),
    ("/api/orders/70", "orders"),
    ("/api", "api"),
    ("/apix", None),
    ("/", None),
    ("/nothing/here", None),
])
def test_segment_boundary_and_longest_prefix(path: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(NoRoute):
            route_of(path)
    else:
        assert route_of(path) == expected


@pytest.mark.parametrize("host, path, expected", [
    ("api.example.com", "/api/orders/7", "api-host"),  # a host route beats a longer host-less one
    ("API.Example.com:8443", "/api/x", "api-host"),  # case and port do not matter
    ("other.example.com", "/api/orders/7", "order7"),
    ("api.example.com", "/v1/things", "v2"),  # the host has no such route: host-less routes still apply
])
def test_host_routes_beat_hostless_ones(host: str, path: str, expected: str) -> None:
    assert route_of(path, host=host) == expected


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/api/orders/7", "order7"),
    ("HEAD", "/api/orders/7", "order7"),  # HEAD goes where GET does
    ("POST", "/api/writes", "writes"),
    ("PUT", "/api/writes/1", "writes"),
    ("DELETE", "/api/orders/1", "orders"),  # no methods: every method
])
def test_methods_allowed(method: str, path: str, expected: str) -> None:
    assert route_of(path, method=method) == expected


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/api/orders/7", "GET, HEAD"),
    ("DELETE", "/api/orders/7/x", "GET, HEAD"),
    ("GET", "/api/writes", "POST, PUT"),
    ("HEAD", "/api/writes", "POST, PUT"),
])
def test_wrong_method_is_405_with_allow(method: str, path: str, allow: str) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        route_of(path, method=method)
    assert info.value.status == 405 and info.value.code == "method_not_allowed"
    assert info.value.headers == {"Allow": allow}


@pytest.mark.parametrize("path, upstream_path, stripped", [
    ("/api/orders", "/", "/api/orders"),
    ("/api/orders/", "/", "/api/orders"),
    ("/api/orders/7", "/7", "/api/orders"),  # strip_prefix only: order7 is longer, so use 8
    ("/api/orders/8/items/", "/8/items/", "/api/orders"),
    ("/api/orders/a%20b/x%2Fy", "/a%20b/x%2Fy", "/api/orders"),  # the client's encoding is kept
    ("/v1/things", "/v2", "/v1/things"),
    ("/v1/things/", "/v2/", "/v1/things"),
    ("/v1/things/9", "/v2/9", "/v1/things"),
    ("/legacy", "/", "/legacy"),
    ("/legacy/a/b", "/a/b", "/legacy"),
    ("/api/ordersX", "/api/ordersX", None),  # no strip: the path as normalised
    ("/api//x", "/api/x", None),
])
def test_strip_and_rewrite(path: str, upstream_path: str, stripped: str | None) -> None:
    table = RouteTable([r for r in ROUTES if r.name != "order7"])
    match = table.match("GET", "gw.local", path)
    assert (match.upstream_path, match.stripped_prefix) == (upstream_path, stripped)


@pytest.mark.parametrize("path, route, upstream_path", [
    ("/api/orders/../admin", "api", "/api/admin"),  # cannot stay under /api/orders by climbing out
    ("/api/orders/%2e%2e/admin", "api", "/api/admin"),
    ("/api/orders/%2E%2E/admin", "api", "/api/admin"),
    ("/api/orders/.%2e/admin", "api", "/api/admin"),
    ("/api/orders/x/../../other", "api", "/api/other"),
    ("/../../api/orders/1", "orders", "/1"),  # dot segments above the root stay at the root
    ("/api//orders//1", "orders", "/1"),
    ("/api/./orders/./1", "orders", "/1"),
    ("//api/orders/1", "orders", "/1"),
    ("/api/orders/%2e/1", "orders", "/1"),
    ("/api/orders%2F7", "api", "/api/orders%2F7"),  # an encoded slash is not a separator for matching
])
def test_normalisation(path: str, route: str, upstream_path: str) -> None:
    match = TABLE.match("GET", "gw.local", path)
    assert (match.route.name, match.upstream_path) == (route, upstream_path)


@pytest.mark.parametrize("path", [
    "/api/orders/%2e%2e/%2e%2e/x",  # climbs to /x: no route there
    "/api/orders/../../nothing",
])
def test_normalisation_can_leave_every_route(path: str) -> None:
    with pytest.raises(NoRoute):
        TABLE.match("GET", "gw.local", path)


@pytest.mark.parametrize("path, reason", [
    ("/api/orders/a%2F..%2Fb", "encoded path separators around dot segments are refused"),
    ("/api/orders/..%2f..%2fadmin", "encoded path separators around dot segments are refused"),
    ("/api/orders/x%5C..%5Cy", "the request path holds a backslash"),
    ("/api/orders/%00", "the request path holds a NUL byte"),
    ("/api/orders/a\x00b", "the request path holds a NUL byte"),
    ("/api/orders/%ff", "the request path is not valid UTF-8 once decoded"),
    ("api/orders", "the request path must start with '/'"),
    ("*", "the request path must start with '/'"),
])
def test_malformed_paths_are_bad_requests(path: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        TABLE.match("GET", "gw.local", path)
    assert (info.value.status, info.value.code, info.value.message) == (400, "bad_request", reason)


@pytest.mark.parametrize(
    ("path", "raw", "decoded", "trailing"),
    [
        ("/", [""], [""], False),
        ("/api/orders/7", ["api", "orders", "7"], ["api", "orders", "7"], False),
        ("/api/orders/", ["api", "orders"], ["api", "orders"], True),
        ("/api//orders", ["api", "orders"], ["api", "orders"], False),
        ("/api/./orders", ["api", "orders"], ["api", "orders"], False),
        ("/api/x/../orders", ["api", "orders"], ["api", "orders"], False),
        ("/api/x/%2e%2e/orders", ["api", "orders"], ["api", "orders"], False),
        ("/../../api", ["api"], ["api"], False),
        ("/a%20b", ["a%20b"], ["a b"], False),
        # ';' in an ordinary segment, or after more than dots, is no dot segment anywhere
        ("/api;v=1/orders", ["api;v=1", "orders"], ["api;v=1", "orders"], False),
        ("/public/...;/x", ["public", "...;", "x"], ["public", "...;", "x"], False),
        ("/public/.x;/y", ["public", ".x;", "y"], ["public", ".x;", "y"], False),
        ("/public/a..;/y", ["public", "a..;", "y"], ["public", "a..;", "y"], False),
        ("/public/;../y", ["public", ";..", "y"], ["public", ";..", "y"], False),
        ("/files/a%3Bb", ["files", "a%3Bb"], ["files", "a;b"], False),
    ],
)
def test_normalize_path_table(path: str, raw: list[str], decoded: list[str], trailing: bool) -> None:
    assert normalize_path(path) == (raw, decoded, trailing)


@pytest.mark.parametrize(
    "path",
    [
        # dot segments with ';' parameters: Tomcat and Jetty read them as '..' and '.'
        "/public/..;/admin-api/x",
        "/public/..;x/admin-api/x",
        "/public/..;jsessionid=1/admin-api/x",
        "/public/..;",
        "/public/.;/admin-api",
        "/public/.;x/admin-api",
        "/..;/admin-api",
        # their percent-encoded forms, either case
        "/public/%2e%2e;/admin-api/x",
        "/public/%2E%2E;/admin-api/x",
        "/public/..%3b/admin-api/x",
        "/public/..%3B/admin-api/x",
        "/public/%2e%2e%3b/admin-api/x",
        "/public/.%2e;x/admin-api/x",
        "/public/%2e;/admin-api",
        "/public/.%3bx/admin-api",
    ],
)
def test_dot_segments_with_parameters_are_refused(path: str) -> None:
    with pytest.raises(BadRequest, match="^a dot segment with ';' parameters is refused$"):
        normalize_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/public\\..\\admin-api\\x",
        "/public/..\\admin-api/x",
        "/public/x\\",
        "/public/%5C../admin-api",
        "/public/..%5cadmin-api/x",
        "/public/%5c",
        "/public%5C..%5Cadmin-api",
    ],
)
def test_a_backslash_is_refused_raw_or_encoded(path: str) -> None:
    with pytest.raises(BadRequest, match="^the request path holds a backslash$"):
        normalize_path(path)


@pytest.mark.parametrize("path, route, params", [
    ("/users/42/overview", "overview", {"id": "42"}),
    ("/users/a%20b/overview", "overview", {"id": "a b"}),  # decoded
    ("/users/me", "users", {}),  # a literal segment before a parameter
    ("/users/me/overview", "overview", {"id": "me"}),  # the literal leads nowhere: backtrack to {id}
])
def test_param_capture(path: str, route: str, params: dict[str, str]) -> None:
    match = TABLE.match("GET", "gw.local", path)
    assert (match.route.name, match.params) == (route, params)


def test_param_needs_its_segment() -> None:
    with pytest.raises(NoRoute):
        TABLE.match("GET", "gw.local", "/users/42")


def _table(n: int) -> RouteTable:
    routes = [RouteConfig(f"r{i}", f"/svc{i}/v1/items", "u", methods=("GET",)) for i in range(n - 1)]
    routes.append(RouteConfig("target", "/target/v1/items", "u", strip_prefix=True))
    return RouteTable(routes)


def _lookup_seconds(table: RouteTable, paths: list[str]) -> float:
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for path in paths:
            table.match("GET", "gw.local", path)
        best = min(best, time.perf_counter() - start)
    return best


def test_matching_cost_does_not_grow_with_route_count() -> None:
    small, large = _table(10), _table(1000)
    paths = [f"/target/v1/items/{i}" for i in range(1000)]
    assert large.match("GET", "h", paths[0]).route.name == "target"
    small_time = _lookup_seconds(small, paths)
    large_time = _lookup_seconds(large, paths)
    assert large_time / small_time < 3, (small_time, large_time)
