"""The loader (SPEC §3): every problem reported at once, each with its location; ${VAR} typing."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from gateway import schema
from gateway.config import ConfigError, GatewayConfig, Origin, TargetConfig
from gateway.loader import load_config, parse_config
from tests.support.tokens import SECRET

UPSTREAM = "upstreams:\n  orders: {targets: ['http://127.0.0.1:9001']}\n"


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), environ=environ or {})
    return info.value.problems


BAD_CONFIGS = [
    ("unknown top-level key", "servre: {}\n", ["servre: unknown key"]),
    ("unknown nested key", "server: {hots: 0.0.0.0}\n", ["server.hots: unknown key"]),
    ("unknown route key", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, stip_prefix: true}]\n",
     ["routes[0].stip_prefix: unknown key"]),
    ("port of the wrong type", "server: {port: eighty}\n", ["server.port: expected an integer, got a string"]),
    ("port out of range", "server: {port: 70000}\n", ["server.port: must be at most 65535"]),
    ("boolean as string", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, strip_prefix: 'yes'}]\n",
     ["routes[0].strip_prefix: expected true or false, got a string"]),
    ("section of the wrong type", "server: [1, 2]\n", ["server: expected a mapping, got a list"]),
    ("top level not a mapping", "- a\n", ["(top level): expected a mapping at the top level, got a list"]),
    ("unknown upstream in the third route", """\
        upstreams:
          orders: {targets: ["http://127.0.0.1:9001"]}
        routes:
          - {name: a, path: /a, upstream: orders}
          - {name: b, path: /b, upstream: orders}
          - {name: c, path: /c, upstream: ordrs}
        """, ["routes[2].upstream: unknown upstream 'ordrs'"]),
    ("bad target URLs", "upstreams:\n  u: {targets: ['ftp://x', {url: 'http://'}, 'http://h:99999', 'h:80']}\n", [
        "upstreams.u.targets[0]: 'ftp://x' is not a valid http(s) target URL",
        "upstreams.u.targets[1].url: 'http://' is not a valid http(s) target URL",
        "upstreams.u.targets[2]: 'http://h:99999' is not a valid http(s) target URL",
        "upstreams.u.targets[3]: 'h:80' is not a valid http(s) target URL",
    ]),
    ("empty targets", "upstreams:\n  u: {targets: []}\n",
     ["upstreams.u.targets: expected a non-empty list of targets"]),
    ("bad jwks URL", "auth: {jwt: {algorithms: [RS256], jwks_url: 'file:///etc/passwd'}}\n",
     ["auth.jwt.jwks_url: 'file:///etc/passwd' is not an http(s) URL",
      "auth.jwt: RS256 need exactly one of public_key_file or jwks_url"]),
    ("none algorithm", "auth: {jwt: {algorithms: [none]}}\n", ["auth.jwt.algorithms: 'none' is never allowed"]),
    ("None algorithm, any case", f"auth: {{jwt: {{algorithms: [HS256, None], secret: {SECRET}}}}}\n",
     ["auth.jwt.algorithms: 'none' is never allowed"]),
    ("short HS secret", "auth: {jwt: {algorithms: [HS256], secret: short}}\n",
     ["auth.jwt.secret: must be at least 32 bytes for HS256"]),
    ("31-byte HS256 secret", f"auth: {{jwt: {{algorithms: [HS256], secret: {SECRET[:31]}}}}}\n",
     ["auth.jwt.secret: must be at least 32 bytes for HS256"]),
    ("HS512 needs its hash length", f"auth: {{jwt: {{algorithms: [HS256, HS512], secret: {SECRET[:32]}}}}}\n",
     ["auth.jwt.secret: must be at least 64 bytes for HS256, HS512"]),
    ("missing HS secret", "auth: {jwt: {algorithms: [HS256]}}\n", ["auth.jwt.secret: is required for HS256"]),
    ("route path not absolute", UPSTREAM + "routes: [{name: a, path: api, upstream: orders}]\n",
     ["routes[0].path: must start with '/', got 'api'"]),
    ("route path with dot segment", UPSTREAM + "routes: [{name: a, path: /a/../b, upstream: orders}]\n",
     ["routes[0].path: '/a/../b' is not a clean path"]),
    ("unknown method", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, methods: [FETCH]}]\n",
     ["routes[0].methods: item 0: unknown HTTP method 'FETCH' (supported: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"]),
    ("route without name or path", UPSTREAM + "routes: [{upstream: orders}]\n",
     ["routes[0].name: is required", "routes[0].path: is required"]),
    ("route with neither upstream nor aggregate", "routes: [{name: a, path: /a}]\n",
     ["routes[0]: needs exactly one of upstream or aggregate"]),
    ("duplicate route name", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders},"
     " {name: a, path: /b, upstream: orders}]\n", ["routes[1].name: duplicate route name 'a' (also routes[0])"]),
    ("same host, path and methods", UPSTREAM + "routes:\n"
     "  - {name: orders, path: /o, upstream: orders}\n"
     "  - {name: other, path: /p, upstream: orders}\n"
     "  - {name: again, path: /o/, upstream: orders}\n"
     "  - {name: get, path: /p, upstream: orders, methods: [get, post]}\n"
     "  - {name: get2, path: /p, upstream: orders, methods: [POST, GET]}\n"
     "  - {name: hosted, path: /o, upstream: orders, host: a.example}\n"
     "  - {name: hosted2, path: /o, upstream: orders, host: A.example}\n",
     ["routes[2]: same host, path and methods as routes[0] ('orders')",
      "routes[4]: same host, path and methods as routes[3] ('get')",
      "routes[6]: same host, path and methods as routes[5] ('hosted')"]),
    ("TRACE is not proxied", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, methods: [GET, trace]}]\n",
     ["routes[0].methods: item 1: 'TRACE' is not proxied (supported: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"]),
    ("CONNECT in CORS", "cors: {allow_origins: ['*'], allow_methods: [CONNECT]}\n",
     ["cors.allow_methods: item 0: 'CONNECT' is not proxied (supported: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"]),
    ("empty file", "", ["(top level): the configuration is empty (only comments or nothing): there is nothing to serve"]),
    ("only comments", "# server:\n#   port: 80\n\n",
     ["(top level): the configuration is empty (only comments or nothing): there is nothing to serve"]),
    ("duplicate keys at any depth", "server:\n  host: 127.0.0.1\n  port: 8080\n  port: 8081\n"
     + UPSTREAM + "routes:\n  - name: a\n    path: /a\n    upstream: orders\n    path: /b\nserver: {}\n",
     ["line 4: duplicate key 'port' in server (first given on line 3)",
      "line 11: duplicate key 'path' in routes[0] (first given on line 9)",
      "line 12: duplicate key 'server' at the top level (first given on line 1)"]),
    ("duplicate key beside other problems", "server: {port: 1, port: 2, host: ''}\n",
     ["line 1: duplicate key 'port' in server (first given on line 1)", "server.host: must not be empty"]),
    ("no algorithms", "auth: {jwt: {algorithms: []}}\n", ["auth.jwt.algorithms: at least one algorithm is required"]),
    ("secret and public key file are for different algorithms",
     f"auth: {{jwt: {{algorithms: [RS256], secret: {SECRET}, jwks_url: 'https://idp/jwks'}}}}\n",
     ["auth.jwt.secret: is only used with HS* algorithms"]),
    ("public_key_file and jwks_url exclude each other",
     "auth: {jwt: {algorithms: [ES256K], jwks_url: 'https://idp/jwks', public_key_file: conf/gateway.yaml}}\n",
     ["auth.jwt: ES256K need exactly one of public_key_file or jwks_url"]),
    ("negative timeout", "upstreams:\n  u: {targets: ['http://a'], connect_timeout: -1, request_timeout: fast}\n",
     ["upstreams.u.connect_timeout: must be greater than 0",
      "upstreams.u.request_timeout: expected a number of seconds, got a string"]),
    ("auth required without jwt", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, auth: required}]\n",
     ["routes[0].auth: 'required' needs auth.jwt to be configured"]),
    ("bad CIDR", "server: {trusted_proxies: [10.0.0.0/8, not-a-net]}\n",
     ["server.trusted_proxies: item 1: 'not-a-net' is not an IP address or CIDR"]),
    ("body timeout zero", "server: {body_timeout_seconds: 0}\n",
     ["server.body_timeout_seconds: must be greater than 0"]),
    ("body timeout negative", "server: {body_timeout_seconds: -1}\n",
     ["server.body_timeout_seconds: must be greater than 0"]),
    ("body timeout not a number", "server: {body_timeout_seconds: slow}\n",
     ["server.body_timeout_seconds: expected a number of seconds, got a string"]),
    ("unset variable", "server:\n  port: ${GW_TEST_PORT}\n",
     ["server.port: environment variable GW_TEST_PORT is not set"]),
    ("unset variable inside a string", "server:\n  host: 'gw-${GW_TEST_HOST}.local'\n",
     ["server.host: environment variable GW_TEST_HOST is not set"]),
    ("variable typed, then checked", "server:\n  port: ${GW_TEST_PORT}\n",
     ["server.port: expected an integer, got a string"]),
    ("invalid YAML", "server: {port: 1\n", ["<string>:2:1: invalid YAML: expected ',' or '}', but got '<stream end>'"]),
    ("a character YAML refuses", "\x1f", ["<string>: invalid YAML: unacceptable character #x001f: special characters "
                                           'are not allowed\n  in "<unicode string>", position 0']),
    ("a key with a line break is shown quoted", 'server:\n  "\\r": null\n', ["server['\\r']: unknown key"]),
    ("a value with a line break is shown escaped", 'routes:\n- 0:\n  rewrite_prefix: "\\r"\n0:',
     ["[0]: unknown key", "routes[0][0]: unknown key", "routes[0].rewrite_prefix: must start with '/', got '\\r'",
      "routes[0].name: is required", "routes[0].path: is required"]),
    ("a recursive alias", "server: &s {tls: *s}\n",
     ["<string>:1: an alias refers to the value that holds it (a recursive structure)"]),
    # No lax coercion (the models are strict): a quoted number is a string, 1 is not true.
    ("a quoted port is a string", "server: {port: '8080'}\n", ["server.port: expected an integer, got a string"]),
    ("a float port", "server: {port: 80.0}\n", ["server.port: expected an integer, got a number"]),
    ("a huge port", "server: {port: 99999999999999999999999}\n", ["server.port: must be at most 65535"]),
    ("1 is not true", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, strip_prefix: 1}]\n",
     ["routes[0].strip_prefix: expected true or false, got an integer"]),
    ("quoted seconds", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, timeout: '5'}]\n",
     ["routes[0].timeout: expected a number of seconds, got a string"]),
    ("a number where a list of routes goes", "routes: 3\n", ["routes: expected a list of routes, got an integer"]),
    ("a list where the upstreams mapping goes", "upstreams: [a]\n",
     ["upstreams: expected a mapping of name to upstream, got a list"]),
    ("a null route is a route with no keys", "routes: [~]\n", ["routes[0].name: is required", "routes[0].path: is required"]),
    ("a null upstream is an upstream with no keys", "upstreams: {u: ~}\n", ["upstreams.u.targets: is required"]),
    ("a null target is a target with no keys", "upstreams: {u: {targets: [~]}}\n",
     ["upstreams.u.targets[0].url: is required"]),
    ("a null rate limit still needs its keys", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, rate_limit: ~}]\n",
     ["routes[0].rate_limit.requests: is required", "routes[0].rate_limit.window_seconds: is required"]),
    ("keys true and null are named as written", "server: {true: 1, null: 2, 3: 4}\n",
     ["server[True]: unknown key", "server[None]: unknown key", "server[3]: unknown key"]),
    ("an upstream named by a number", "upstreams: {1: {targets: ['http://a'], tls: {certfile: conf/gateway.yaml}}}\n",
     ["upstreams[1].tls: certfile and keyfile go together"]),
    ("an unset variable for a whole section is reported once", "server: ${GW_TEST_UNSET}\n",
     ["server: environment variable GW_TEST_UNSET is not set"]),
    ("an unset variable for a target is reported once", "upstreams: {u: {targets: ['${GW_TEST_UNSET}']}}\n",
     ["upstreams.u.targets[0]: environment variable GW_TEST_UNSET is not set"]),
    ("a jwt section that is not a mapping is one problem", "auth: {jwt: []}\n",
     ["auth.jwt: expected a mapping, got a list"]),
    ("an empty aggregate", UPSTREAM + "routes: [{name: a, path: /a, aggregate: []}]\n",
     ["routes[0].aggregate: expected a non-empty list of parts"]),
    ("an aggregate part's path", UPSTREAM + "routes: [{name: a, path: /a, aggregate: [{name: p, upstream: orders, path: q}]}]\n",
     ["routes[0].aggregate[0].path: must start with '/', got 'q'"]),
    ("a broken value does not hide an unknown upstream or a duplicate", UPSTREAM + "routes:\n"
     "  - {name: a, path: /a, strip_prefix: 1, upstream: ordrs}\n"
     "  - {name: a, path: /a, upstream: orders, timeout: 0}\n",
     ["routes[0].strip_prefix: expected true or false, got an integer", "routes[0].upstream: unknown upstream 'ordrs'",
      "routes[1].timeout: must be greater than 0", "routes[1].name: duplicate route name 'a' (also routes[0])",
      "routes[1]: same host, path and methods as routes[0] ('a')"]),
    ("problems in the order of the file, routes after the sections they name",
     "routes: [{name: a, path: /a, upstream: x, colour: red}]\nlogging: {level: loud}\nservre: 1\n",
     ["logging.level: must be one of debug, info, warning, error, got 'loud'", "servre: unknown key",
      "routes[0].colour: unknown key", "routes[0].upstream: unknown upstream 'x'"]),
    ("a section's checks after its keys' problems",
     "cors: {allow_credentials: true, allow_origins: '*', max_age_seconds: -1}\n",
     ["cors.max_age_seconds: must be at least 0", "cors.allow_origins: '*' cannot be used with allow_credentials"]),
    ("an alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)),
     ["<string>: the document expands to more than 100000 values through its aliases"]),
]
ENVIRON = {"variable typed, then checked": {"GW_TEST_PORT": "eighty"}}


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_reports_exact_problem_with_location(request: pytest.FixtureRequest, text: str,
                                                        expected: list[str]) -> None:
    case = request.node.callspec.id
    assert problems(text, ENVIRON.get(case)) == expected


def test_es256k_loads_like_the_other_jwt_algorithms() -> None:
    config = parse_config("auth: {jwt: {algorithms: [ES256K, ES256], jwks_url: 'https://idp.example/jwks'}}\n")
    assert config.auth.jwt is not None and config.auth.jwt.algorithms == ("ES256K", "ES256")


def test_routes_on_one_path_with_disjoint_methods_are_fine() -> None:
    config = parse_config(UPSTREAM + "routes:\n"
                          "  - {name: read, path: /o, upstream: orders, methods: [GET]}\n"
                          "  - {name: write, path: /o, upstream: orders, methods: [POST, PUT]}\n"
                          "  - {name: rest, path: /o, upstream: orders}\n")
    assert [route.name for route in config.routes] == ["read", "write", "rest"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems("""\
        servre: {}
        server:
          port: ${GW_TEST_PORT}
          max_body_bytes: lots
        admin:
          port: ${GW_TEST_ADMIN_PORT}
        auth:
          jwt: {algorithms: [none, HS256], secret: short}
        upstreams:
          orders: {targets: ["http://127.0.0.1:9001", "gopher://x"]}
        routes:
          - {name: a, path: /a, upstream: orders}
          - {name: b, path: /b, upstream: orders}
          - {name: c, path: /c, upstream: ordrs}
        """)
    assert found == [
        "server.port: environment variable GW_TEST_PORT is not set",
        "admin.port: environment variable GW_TEST_ADMIN_PORT is not set",
        "servre: unknown key",
        "server.max_body_bytes: expected an integer, got a string",
        "auth.jwt.algorithms: 'none' is never allowed",
        "auth.jwt.secret: must be at least 32 bytes for HS256",
        "upstreams.orders.targets[1]: 'gopher://x' is not a valid http(s) target URL",
        "routes[2].upstream: unknown upstream 'ordrs'",
    ]
    assert len(ConfigError(found).args[0].splitlines()) == len(found)


@pytest.mark.parametrize("raw, environ, attr, expected", [
    ("port: ${PORT}", {"PORT": "9000"}, "port", 9000),
    ("port: ${PORT:-8000}", {}, "port", 8000),
    ("port: ${PORT:-8000}", {"PORT": ""}, "port", 8000),
    ("port: ${PORT:-8000}", {"PORT": "9100"}, "port", 9100),
    ("host: ${HOST:-0.0.0.0}", {}, "host", "0.0.0.0"),
    ("host: 'gw-${N}.local'", {"N": "7"}, "host", "gw-7.local"),
    ("drain_seconds: ${D:-1.5}", {}, "drain_seconds", 1.5),
    ("body_timeout_seconds: ${B:-0.3}", {}, "body_timeout_seconds", 0.3),
    ("max_body_bytes: ${M}", {"M": "1024"}, "max_body_bytes", 1024),
])
def test_environment_references_are_typed_like_yaml(raw: str, environ: dict[str, str], attr: str,
                                                    expected: object) -> None:
    config = parse_config(f"server:\n  {raw}\n", environ=environ)
    value = getattr(config.server, attr)
    assert value == expected
    assert type(value) is type(expected)


def test_secret_with_yaml_punctuation_stays_one_string() -> None:
    secret = "a: b, {c} # d ' \" [e] 0123456789012345678901"
    config = parse_config("auth:\n  jwt:\n    secret: ${S}\n", environ={"S": secret})
    assert config.auth.jwt is not None and config.auth.jwt.secret == secret


def test_good_config_round_trip() -> None:
    config = parse_config(textwrap.dedent(f"""\
        server:
          host: 0.0.0.0
          port: ${{PORT}}
          max_body_bytes: 2048
          trusted_proxies: [10.0.0.0/8]
          drain_seconds: 3
        admin: {{port: 9999}}
        auth:
          jwt: {{algorithms: [HS256], secret: {SECRET}, claims_to_headers: {{sub: X-User-Id}}}}
        upstreams:
          orders:
            targets: ["http://127.0.0.1:9001", {{url: "https://orders.internal:8443/base/", weight: 2}}]
            balance: least_conn
            connect_timeout: 1
            request_timeout: 7.5
            retry: {{attempts: 3, on_statuses: [503]}}
        routes:
          - name: orders
            path: /api/orders
            methods: [get, POST]
            host: API.example.com
            upstream: orders
            rewrite_prefix: /v2
            scopes: [orders:read]
            request_headers: {{set: {{X-Api-Version: 2}}, remove: [Cookie]}}
            timeout: 10
          - {{name: open, path: /public, upstream: orders, auth: none}}
        """), environ={"PORT": "8088"})
    assert isinstance(config, GatewayConfig)
    assert (config.server.host, config.server.port, config.server.max_body_bytes) == ("0.0.0.0", 8088, 2048)
    assert config.server.trusted_proxies == ("10.0.0.0/8",)
    assert config.server.drain_seconds == 3.0 and config.admin.port == 9999
    orders = config.upstreams["orders"]
    assert orders.targets == (
        TargetConfig("http://127.0.0.1:9001", Origin("http", "127.0.0.1", 9001)),
        TargetConfig("https://orders.internal:8443/base/", Origin("https", "orders.internal", 8443), "/base", 2),
    )
    assert (orders.balance, orders.connect_timeout_seconds, orders.request_timeout_seconds) == ("least_conn", 1.0, 7.5)
    assert orders.retry.attempts == 3 and orders.retry.on_statuses == (503,)
    first, second = config.routes
    assert (first.name, first.path, first.methods, first.host) == ("orders", "/api/orders", ("GET", "POST"),
                                                                   "api.example.com")
    assert first.strip_prefix is True and first.rewrite_prefix == "/v2"  # a rewrite implies a strip
    assert first.auth == "required"  # the default when auth.jwt is set
    assert first.request_headers.set == {"X-Api-Version": "2"} and first.request_headers.remove == ("Cookie",)
    assert first.timeout_seconds == 10.0
    assert second.auth == "none" and second.methods is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


def test_shipped_configs_load() -> None:
    assert load_config("conf/gateway.yaml", environ={}).routes[0].name == "orders"
    assert load_config("conf/demo.yaml", environ={"DEMO_ECHO_PORT": "9"}).upstreams["echo"].targets[0].origin.port == 9


def test_unreadable_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.yaml"))
    assert info.value.problems == [f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


def test_a_numeric_secret_from_the_environment_keeps_its_text() -> None:
    config = parse_config('auth:\n  jwt:\n    secret: ${S}\nserver: {port: "${P}"}\n',
                          environ={"S": "0123456789012345678901234567890123456789", "P": "9000"})
    assert config.auth.jwt is not None
    assert config.auth.jwt.secret == "0123456789012345678901234567890123456789"
    assert config.server.port == 9000


@pytest.mark.parametrize("text, expected", [
    ("server: {}\n", 60.0),
    ("server: {body_timeout_seconds: 5}\n", 5.0),
    ("server: {body_timeout_seconds: 0.25}\n", 0.25),
])
def test_body_timeout_default_and_value(text: str, expected: float) -> None:
    assert parse_config(text).server.body_timeout_seconds == expected


def test_a_large_config_loads() -> None:
    """200 routes over 10 upstreams (bench/config_load.py times it)."""
    from bench.config_load import generated

    config = parse_config(generated(200))
    assert len(config.routes) == 200 and len(config.upstreams) == 10
    assert config.routes[199].rate_limit is not None and config.routes[199].rate_limit.key == "ip"


def _sections() -> list[type[schema.Section]]:
    found, todo = [], [schema.Section]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


# Dataclass attributes the loader works out rather than reads from a key of the same section.
DERIVED = {"TargetConfig": {"origin", "base_path"}, "UpstreamConfig": {"name"}, "PluginConfig": {"plugin"},
           "GatewayConfig": {"source"}}


@pytest.mark.parametrize("model", _sections(), ids=lambda model: model.__name__)
def test_each_model_field_is_its_dataclass_attribute(model: type[schema.Section]) -> None:
    """The recipe for a key (a model field + the dataclass attribute of the same name) cannot be half done:
    a field without its attribute, or an attribute no key sets, fails here rather than at load."""
    attributes = {f.name for f in dataclasses.fields(model.builds)}
    assert set(model.model_fields) == attributes - DERIVED.get(model.builds.__name__, set())


def test_the_schema_defaults_are_the_dataclass_defaults() -> None:
    config = parse_config("upstreams: {u: {targets: ['http://a'], retry: {}, health_check: {}}}\n"
                          "routes: [{name: r, path: /r, upstream: u, rate_limit: {requests: 1, window_seconds: 1},"
                          " cors: {}}]\nauth: {jwt: {algorithms: [RS256], jwks_url: 'https://idp/jwks'}}\n")
    built = [config.server, config.admin, config.logging, config.upstreams["u"].retry,
             config.upstreams["u"].health_check, config.routes[0].cors, config.routes[0].rate_limit, config.auth.jwt]
    for section in built:
        model = next(m for m in _sections() if m.builds is type(section))
        for name, field in model.model_fields.items():
            if field.is_required() or field.default is None or (model, name) == (schema.Jwt, "algorithms"):
                continue  # required, absent by default, or given above
            default = field.get_default(call_default_factory=True)
            assert getattr(section, name) == default, (model.__name__, name)
