"""The loader (SPEC §3): every problem reported at once, each with its location; ${VAR} typing."""

from __future__ import annotations

import dataclasses
import hashlib
import textwrap

import pytest

from gateway import schema
from gateway.config import (
    CacheConfig,
    CompressionConfig,
    ConfigError,
    GatewayConfig,
    Origin,
    TargetConfig,
    TracingConfig,
)
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
     ["routes[0].auth: 'required' needs auth.jwt or auth.api_keys to be configured"]),
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
    ("websocket limits on a route that relays no upgrade",
     UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, websocket_idle_seconds: 5, "
                "websocket_max_message_bytes: 10}]\n",
     ["routes[0].websocket_idle_seconds: only applies to a route with websocket: true",
      "routes[0].websocket_max_message_bytes: only applies to a route with websocket: true"]),
    ("websocket not a boolean", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, websocket: 1}]\n",
     ["routes[0].websocket: expected true or false, got an integer"]),
    ("websocket limits out of range",
     UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, websocket: true, websocket_idle_seconds: 0, "
                "websocket_max_message_bytes: 0}]\n",
     ["routes[0].websocket_idle_seconds: must be greater than 0", "routes[0].websocket_max_message_bytes: must be at least 1"]),
    ("websocket route without GET",
     UPSTREAM + "routes: [{name: a, path: /a, upstream: orders, websocket: true, methods: [POST]}]\n",
     ["routes[0].methods: a websocket route must allow GET (the handshake)"]),
    ("websocket on an aggregate route",
     UPSTREAM + "routes: [{name: a, path: /a, websocket: true, aggregate: [{name: x, upstream: orders, path: /x}]}]\n",
     ["routes[0].websocket: an aggregate route cannot relay WebSockets"]),
    ("compression of the wrong type", "compression: gzip\n", ["compression: expected a mapping, got a string"]),
    ("compression: unknown key and bad values", "compression: {level: 3, min_bytes: -1, gzip_level: 0,"
     " brotli_quality: 12}\n", ["compression.level: unknown key", "compression.min_bytes: must be at least 0",
                                "compression.gzip_level: must be at least 1",
                                "compression.brotli_quality: must be at most 11"]),
    ("compression types that are not media types", "compression: {types: [json, 'text/html; charset=utf-8',"
     " '*/json', text/]}\n", ["compression.types: item 0: 'json' is not a media type (type/subtype, type/*, type/*+suffix or */*)"]),
    ("compression type with parameters", "compression: {types: ['text/html; charset=utf-8']}\n",
     ["compression.types: item 0: 'text/html; charset=utf-8' is not a media type (type/subtype, type/*, type/*+suffix or */*)"]),
    ("compression type half a wildcard", "compression: {types: ['*/json']}\n",
     ["compression.types: item 0: '*/json' is not a media type (type/subtype, type/*, type/*+suffix or */*)"]),
    ("compression type with a star inside", "compression: {types: ['text/htm*', 'app*/json', 'a/*+']}\n",
     ["compression.types: item 0: 'text/htm*' is not a media type (type/subtype, type/*, type/*+suffix or */*)"]),
    ("compression types empty", "compression: {types: []}\n", ["compression.types: must name at least one type"]),
    ("compression encodings unknown", "compression: {encodings: [gzip, deflate]}\n",
     ["compression.encodings: item 1: must be one of br, gzip, got 'deflate'"]),
    ("compression encodings twice", "compression: {encodings: [gzip, gzip]}\n",
     ["compression.encodings: lists an encoding twice"]),
    ("compression encodings empty", "compression: {encodings: []}\n",
     ["compression.encodings: must name at least one of br, gzip"]),
    ("route compression of the wrong type", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders,"
     " compression: gzip}]\n", ["routes[0].compression: expected true, false or a mapping, got a string"]),
    ("route compression with a bad key", UPSTREAM + "routes: [{name: a, path: /a, upstream: orders,"
     " compression: {min_byte: 1}}]\n", ["routes[0].compression.min_byte: unknown key"]),
    ("tracing ratio over 1", "tracing: {sample_ratio: 1.5}\n", ["tracing.sample_ratio: must be from 0 to 1, got 1.5"]),
    ("tracing ratio negative", "tracing: {sample_ratio: -0.1}\n",
     ["tracing.sample_ratio: must be from 0 to 1, got -0.1"]),
    ("tracing ratio as text", "tracing: {sample_ratio: half}\n",
     ["tracing.sample_ratio: expected a number from 0 to 1, got a string"]),
    ("tracing ratio as a boolean", "tracing: {sample_ratio: true}\n",
     ["tracing.sample_ratio: expected a number from 0 to 1, got a boolean"]),
    ("tracing endpoint of another scheme", "tracing: {otlp_endpoint: 'grpc://collector:4317'}\n",
     ["tracing.otlp_endpoint: 'grpc://collector:4317' is not an http(s) URL"]),
    ("tracing endpoint with user info", "tracing: {otlp_endpoint: 'http://u:p@collector:4318/v1/traces'}\n",
     ["tracing.otlp_endpoint: 'http://u:p@collector:4318/v1/traces' must not hold user info or a fragment"]),
    ("tracing endpoint with a bad port", "tracing: {otlp_endpoint: 'http://collector:99999/v1/traces'}\n",
     ["tracing.otlp_endpoint: 'http://collector:99999/v1/traces' has an invalid port"]),
    ("tracing unknown key", "tracing: {endpoint: 'http://collector:4318'}\n", ["tracing.endpoint: unknown key"]),
    ("tracing empty service name", "tracing: {service_name: ''}\n", ["tracing.service_name: must not be empty"]),
    ("tracing batch over the queue", "tracing: {max_queue_spans: 100, max_batch_spans: 200}\n",
     ["tracing.max_batch_spans: must be at most max_queue_spans (100)"]),
    ("tracing zero queue and interval", "tracing: {max_queue_spans: 0, export_interval_seconds: 0}\n",
     ["tracing.max_queue_spans: must be at least 1", "tracing.export_interval_seconds: must be greater than 0"]),
    ("tracing not a mapping", "tracing: [on]\n", ["tracing: expected a mapping, got a list"]),
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
    a field without its attribute, or an attribute no key sets, fails here rather than at load. A field of
    ``into`` loads into the attribute it names (an API key into its digest)."""
    attributes = {f.name for f in dataclasses.fields(model.builds)}
    assert set(model.into) <= set(model.model_fields)
    assert {model.into.get(name, name) for name in model.model_fields} == \
        attributes - DERIVED.get(model.builds.__name__, set())


def test_the_schema_defaults_are_the_dataclass_defaults() -> None:
    config = parse_config("upstreams: {u: {targets: ['http://a'], retry: {}, health_check: {}}}\n"
                          "routes: [{name: r, path: /r, upstream: u, rate_limit: {requests: 1, window_seconds: 1},"
                          " cors: {}, cache: {}, compression: {}}]\nauth: {jwt: {algorithms: [RS256], jwks_url: "
                          "'https://idp/jwks'}, api_keys: {consumers: [{subject: s, key: " + "k" * 16 + "}]}}\n"
                          "compression: {}\n")
    built = [config.server, config.admin, config.logging, config.upstreams["u"].retry,
             config.upstreams["u"].health_check, config.routes[0].cors, config.routes[0].rate_limit, config.auth.jwt,
             config.auth.api_keys, config.auth.api_keys.consumers[0], config.routes[0].cache,
             config.routes[0].compression, config.compression, config.routes[0], config]
    for section in built:
        model = next(m for m in _sections() if m.builds is type(section))
        for name, field in model.model_fields.items():
            if field.is_required() or field.default is None or (model, name) == (schema.Jwt, "algorithms"):
                continue  # required, absent by default, or given above
            default = field.get_default(call_default_factory=True)
            assert getattr(section, name) == default, (model.__name__, name)


# --- auth.api_keys, auth_methods, ip_allow / ip_deny (issue 17) ---

KEY = "partner-a-key-0123456789"
KEY_DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
KEYS = "auth:\n  api_keys:\n    consumers: [{subject: partner-a, key: " + KEY + "}]\n"
JWT = f"auth:\n  jwt: {{algorithms: [HS256], secret: {SECRET}}}\n"


def route(extra: str) -> str:
    return UPSTREAM + "routes: [{name: a, path: /a, upstream: orders" + extra + "}]\n"


KEY_BAD_CONFIGS = [
    ("consumers missing", "auth: {api_keys: {header: X-Key}}\n", ["auth.api_keys.consumers: is required"]),
    ("consumers empty", "auth: {api_keys: {consumers: []}}\n",
     ["auth.api_keys.consumers: expected a non-empty list of consumers"]),
    ("neither key nor digest", "auth: {api_keys: {consumers: [{subject: a}]}}\n",
     ["auth.api_keys.consumers[0]: needs exactly one of key or key_sha256"]),
    ("both key and digest", f"auth: {{api_keys: {{consumers: [{{subject: a, key: {KEY}, key_sha256: {KEY_DIGEST}}}]}}}}\n",
     ["auth.api_keys.consumers[0]: needs exactly one of key or key_sha256"]),
    ("no subject", f"auth: {{api_keys: {{consumers: [{{key: {KEY}}}]}}}}\n",
     ["auth.api_keys.consumers[0].subject: is required"]),
    ("short key", "auth: {api_keys: {consumers: [{subject: a, key: short-key}]}}\n",
     ["auth.api_keys.consumers[0].key: must be 16 to 1024 characters (`gateway key` makes one)"]),
    ("key with a space", "auth: {api_keys: {consumers: [{subject: a, key: 'a key with spaces inside'}]}}\n",
     ["auth.api_keys.consumers[0].key: must be printable ASCII without spaces (a header value carries it as is)"]),
    ("non-ASCII key", "auth: {api_keys: {consumers: [{subject: a, key: 'clé-0123456789abcdef'}]}}\n",
     ["auth.api_keys.consumers[0].key: must be printable ASCII without spaces (a header value carries it as is)"]),
    ("numeric key", "auth: {api_keys: {consumers: [{subject: a, key: 12345678901234567890}]}}\n",
     ["auth.api_keys.consumers[0].key: expected a string, got an integer"]),
    ("digest not hex", "auth: {api_keys: {consumers: [{subject: a, key_sha256: " + "g" * 64 + "}]}}\n",
     ["auth.api_keys.consumers[0].key_sha256: expected the 64 hex digits of a SHA-256 digest "
      "(`gateway key` prints one)"]),
    ("digest too short", "auth: {api_keys: {consumers: [{subject: a, key_sha256: abcd}]}}\n",
     ["auth.api_keys.consumers[0].key_sha256: expected the 64 hex digits of a SHA-256 digest "
      "(`gateway key` prints one)"]),
    ("the same key twice", f"auth: {{api_keys: {{consumers: [{{subject: a, key: {KEY}}}, "
     f"{{subject: b, key_sha256: {KEY_DIGEST.upper()}}}]}}}}\n",
     ["auth.api_keys.consumers[1].key_sha256: the same key as auth.api_keys.consumers[0]: a key names one consumer"]),
    ("subject with a line break", f"auth: {{api_keys: {{consumers: [{{subject: \"a\\nb\", key: {KEY}}}]}}}}\n",
     ["auth.api_keys.consumers[0].subject: must not hold control characters (it is sent upstream as a header value)"]),
    ("key header the gateway owns", f"auth: {{api_keys: {{header: Authorization, consumers: [{{subject: a, key: {KEY}}}]}}}}\n",
     ["auth.api_keys.header: 'Authorization' is a header the gateway reads or sets itself; name another (X-Api-Key)"]),
    ("key header X-Forwarded-For", f"auth: {{api_keys: {{header: x-forwarded-for, consumers: [{{subject: a, key: {KEY}}}]}}}}\n",
     ["auth.api_keys.header: 'x-forwarded-for' is a header the gateway reads or sets itself; name another (X-Api-Key)"]),
    ("key header not a token", f"auth: {{api_keys: {{header: 'X Key', consumers: [{{subject: a, key: {KEY}}}]}}}}\n",
     ["auth.api_keys.header: 'X Key' is not a valid header name"]),
    ("key claims_to_headers beyond sub and scope",
     f"auth: {{api_keys: {{claims_to_headers: {{email: X-Email}}, consumers: [{{subject: a, key: {KEY}}}]}}}}\n",
     ["auth.api_keys.claims_to_headers: a consumer has the claims sub and scope only, not 'email'"]),
    ("two identity mappings", f"auth:\n  jwt: {{algorithms: [HS256], secret: {SECRET}, claims_to_headers: {{sub: X-User}}}}\n"
     f"  api_keys: {{claims_to_headers: {{sub: X-User}}, consumers: [{{subject: a, key: {KEY}}}]}}\n",
     ["auth.api_keys.claims_to_headers: set it once, in auth.jwt.claims_to_headers: it applies to API-key "
      "consumers too"]),
    ("auth_methods without the section", JWT + route(", auth_methods: [api_key]"),
     ["routes[0].auth_methods: 'api_key' needs auth.api_keys to be configured"]),
    ("auth_methods jwt without jwt", KEYS + route(", auth_methods: [jwt, api_key]"),
     ["routes[0].auth_methods: 'jwt' needs auth.jwt to be configured"]),
    ("auth_methods unknown", KEYS + route(", auth_methods: [basic]"),
     ["routes[0].auth_methods: item 0: must be one of jwt, api_key, got 'basic'"]),
    ("auth_methods empty", KEYS + route(", auth_methods: []"),
     ["routes[0].auth_methods: must name at least one of jwt, api_key"]),
    ("auth_methods twice", KEYS + route(", auth_methods: [api_key, api_key]"),
     ["routes[0].auth_methods: lists a method twice"]),
    ("auth_methods on an auth: none route", KEYS + route(", auth: none, auth_methods: [api_key]"),
     ["routes[0].auth_methods: auth_methods need auth: required or optional"]),
    ("bad CIDR in ip_allow", route(", ip_allow: [10.0.0.0/8, 10.0.0.0/33, nowhere]"),
     ["routes[0].ip_allow: item 1: '10.0.0.0/33' is not an IP address or CIDR"]),
    ("a word in ip_deny", route(", ip_deny: [nowhere]"),
     ["routes[0].ip_deny: item 0: 'nowhere' is not an IP address or CIDR"]),
    ("host bits set", route(", ip_allow: [10.1.2.3/8]"),
     ["routes[0].ip_allow: item 0: '10.1.2.3/8' has host bits set: did you mean 10.0.0.0/8?"]),
    ("IPv6 host bits set", route(", ip_deny: ['2001:db8::1/32']"),
     ["routes[0].ip_deny: item 0: '2001:db8::1/32' has host bits set: did you mean 2001:db8::/32?"]),
    ("empty ip_allow", route(", ip_allow: []"),
     ["routes[0].ip_allow: an empty allow list refuses every client: list the CIDRs to let in, or leave the key out"]),
    ("ip_allow not a list", route(", ip_allow: {a: 1}"),
     ["routes[0].ip_allow: expected a list, got a mapping"]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in KEY_BAD_CONFIGS], ids=[c[0] for c in KEY_BAD_CONFIGS])
def test_api_key_and_ip_rule_problems_with_location(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_a_problem_with_a_key_never_shows_the_key() -> None:
    secretish = "sk_live_" + "x" * 4 + " y"  # refused (a space), and must not be echoed
    found = problems(f"auth: {{api_keys: {{consumers: [{{subject: a, key: '{secretish}'}}]}}}}\n")
    assert found and not any("sk_live_" in problem for problem in found)


def test_keys_are_kept_as_digests_only() -> None:
    config = parse_config(
        "auth:\n  api_keys:\n    header: X-Partner-Key\n    consumers:\n"
        f"      - {{subject: partner-a, key: '${{PARTNER_KEY}}', scopes: [orders:read]}}\n"
        f"      - {{subject: partner-b, key_sha256: {KEY_DIGEST.upper()}}}\n",
        environ={"PARTNER_KEY": "from-the-environment-0123"})
    keys = config.auth.api_keys
    assert keys is not None and keys.header == "X-Partner-Key"
    assert [(c.subject, c.key_sha256, c.scopes) for c in keys.consumers] == [
        ("partner-a", hashlib.sha256(b"from-the-environment-0123").digest(), ("orders:read",)),
        ("partner-b", bytes.fromhex(KEY_DIGEST), ()),
    ]
    assert "from-the-environment" not in repr(config)


@pytest.mark.parametrize("auth, extra, mode, methods", [
    (KEYS, "", "required", ("api_key",)),
    (JWT, "", "required", ("jwt",)),
    (JWT + KEYS.removeprefix("auth:\n"), "", "required", ("jwt", "api_key")),
    (JWT + KEYS.removeprefix("auth:\n"), ", auth_methods: [api_key, jwt]", "required", ("jwt", "api_key")),
    (JWT + KEYS.removeprefix("auth:\n"), ", auth_methods: api_key", "required", ("api_key",)),
    (JWT + KEYS.removeprefix("auth:\n"), ", auth: optional, auth_methods: [jwt]", "optional", ("jwt",)),
    (KEYS, ", auth: none", "none", ()),
    ("", "", "none", ()),
])
def test_auth_mode_and_methods_default_to_what_is_configured(auth: str, extra: str, mode: str,
                                                             methods: tuple[str, ...]) -> None:
    config = parse_config(auth + route(extra))
    assert (config.routes[0].auth, config.routes[0].auth_methods) == (mode, methods)


def test_ip_rules_load_as_written() -> None:
    config = parse_config(route(", ip_allow: [10.0.0.0/8, '::1', '::ffff:192.168.0.0/112'], ip_deny: 10.0.5.0/24"))
    assert config.routes[0].ip_allow == ("10.0.0.0/8", "::1", "::ffff:192.168.0.0/112")
    assert config.routes[0].ip_deny == ("10.0.5.0/24",)
@pytest.mark.parametrize("route, expected", [
    ("{name: a, path: /a, upstream: orders}", (False, 300.0, 1048576)),
    ("{name: a, path: /a, upstream: orders, websocket: true}", (True, 300.0, 1048576)),
    ("{name: a, path: /a, upstream: orders, websocket: true, websocket_idle_seconds: 2.5, "
     "websocket_max_message_bytes: 65536}", (True, 2.5, 65536)),
])
def test_websocket_keys_default_and_value(route: str, expected: tuple[bool, float, int]) -> None:
    loaded = parse_config(UPSTREAM + f"routes: [{route}]\n").routes[0]
    assert (loaded.websocket, loaded.websocket_idle_seconds, loaded.websocket_max_message_bytes) == expected


# --- the response cache (SPEC §8) ---

def cache_route(cache: str, extra: str = "") -> str:
    return UPSTREAM + f"routes: [{{name: a, path: /a, upstream: orders, cache: {cache}{extra}}}]\n"


@pytest.mark.parametrize("text, expected", [
    (cache_route("{}"), CacheConfig()),
    (cache_route("{ttl_seconds: 30}"), CacheConfig(ttl_seconds=30.0)),
    (cache_route("{ttl_seconds: 0.5, shared: true, max_entry_bytes: 2048}"),
     CacheConfig(ttl_seconds=0.5, shared=True, max_entry_bytes=2048)),
    (cache_route("null"), None),
    (UPSTREAM + "routes: [{name: a, path: /a, upstream: orders}]\n", None),
])
def test_cache_section_defaults_and_values(text: str, expected: CacheConfig | None) -> None:
    assert parse_config(text).routes[0].cache == expected


def test_cache_store_defaults_and_values() -> None:
    config = parse_config(UPSTREAM)
    assert (config.cache_store, config.cache_max_bytes) == ("memory", 64 * 1024 * 1024)
    config = parse_config("cache_store: redis://127.0.0.1:6379/1\ncache_max_bytes: 4096\n")
    assert (config.cache_store, config.cache_max_bytes) == ("redis://127.0.0.1:6379/1", 4096)


@pytest.mark.parametrize("text, expected", [
    (cache_route("{ttl_seconds: 0}"), ["routes[0].cache.ttl_seconds: must be greater than 0"]),
    (cache_route("{ttl_seconds: soon}"), ["routes[0].cache.ttl_seconds: expected a number of seconds, got a string"]),
    (cache_route("{shared: 'yes'}"), ["routes[0].cache.shared: expected true or false, got a string"]),
    (cache_route("{max_entry_bytes: 0}"), ["routes[0].cache.max_entry_bytes: must be at least 1"]),
    (cache_route("{tll_seconds: 5}"), ["routes[0].cache.tll_seconds: unknown key"]),
    (cache_route("true"), ["routes[0].cache: expected a mapping, got a boolean"]),
    (cache_route("{}", ", methods: [POST]"),
     ["routes[0].cache: the route serves no GET or HEAD: nothing could be cached"]),
    (cache_route("{max_entry_bytes: 4097}") + "cache_max_bytes: 4096\n",
     ["routes[0].cache.max_entry_bytes: is larger than cache_max_bytes (4096): such answers could never be kept"]),
    (UPSTREAM + "routes: [{name: a, path: /a, aggregate: [{name: p, upstream: orders, path: /p}], cache: {}}]\n",
     ["routes[0].cache: aggregate routes are not cached (only upstream answers are)"]),
    ("cache_store: memcached://x\n", ["cache_store: expected 'memory' or a redis:// URL, got 'memcached://x'"]),
    ("cache_store: redis://\n", ["cache_store: expected 'memory' or a redis:// URL, got 'redis://'"]),
    ("cache_max_bytes: 100\n", ["cache_max_bytes: must be at least 1024"]),
    ("cache_max_bytes: lots\n", ["cache_max_bytes: expected an integer, got a string"]),
])
def test_bad_cache_config_reports_exact_problem_with_location(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_a_redis_store_is_not_bounded_by_cache_max_bytes() -> None:
    text = cache_route("{max_entry_bytes: 100000}") + "cache_store: redis://127.0.0.1:6379/0\ncache_max_bytes: 4096\n"
    assert parse_config(text).routes[0].cache == CacheConfig(max_entry_bytes=100000)
CUSTOM = CompressionConfig(min_bytes=0, types=("image/svg+xml",), encodings=("gzip",), gzip_level=1, brotli_quality=0)


@pytest.mark.parametrize("text, global_section, route_setting", [
    ("", None, None),
    ("compression: {}\n", CompressionConfig(), None),
    ("compression: true\n", CompressionConfig(), None),
    ("compression: false\n", None, None),
    ("compression:\n", None, None),
    ("compression: {min_bytes: 0, types: [Text/*, '*/*', 'application/*+json'], encodings: gzip, gzip_level: 9,"
     " brotli_quality: 11}\n",
     CompressionConfig(min_bytes=0, types=("text/*", "*/*", "application/*+json"), encodings=("gzip",), gzip_level=9, brotli_quality=11),
     None),
    ("compression: {}\nROUTE: false", CompressionConfig(), False),
    ("ROUTE: true", None, True),
    ("ROUTE: {}", None, CompressionConfig()),
    ("compression: {min_bytes: 5}\nROUTE: {min_bytes: 0, types: image/svg+xml, encodings: [gzip], gzip_level: 1,"
     " brotli_quality: 0}", CompressionConfig(min_bytes=5), CUSTOM),
])
def test_compression_global_and_per_route(text: str, global_section: CompressionConfig | None,
                                          route_setting: CompressionConfig | bool | None) -> None:
    """The global section (absent, false or empty: none) and a route's own setting, kept apart: the runtime
    resolves them (gateway.compression.compression_for)."""
    top, _, route = text.partition("ROUTE: ")
    extra = f", compression: {route}" if route else ""
    config = parse_config(top + UPSTREAM + f"routes: [{{name: a, path: /a, upstream: orders{extra}}}]\n")
    assert config.compression == global_section
    assert config.routes[0].compression == route_setting


ADMIN_TOKEN = "0123456789abcdef0123456789abcdef"  # 32 bytes: the shortest admin.token accepted
TOKEN_RULE = ("must be a Bearer token: letters, digits and - . _ ~ + / (then any '='), "
              "e.g. the output of `openssl rand -hex 32`")


@pytest.mark.parametrize("value, expected", [
    (ADMIN_TOKEN[:-1], ["admin.token: must be at least 32 bytes, got 31 (`openssl rand -hex 32` makes one)"]),
    ("'" + ADMIN_TOKEN[:31] + "='", []),  # the padding counts: 32 bytes in all
    ("''", ["admin.token: must not be empty"]),
    ("12345", ["admin.token: expected a string, got an integer"]),
    ("'" + ADMIN_TOKEN + " x'", [f"admin.token: {TOKEN_RULE}"]),
    ("'" + ADMIN_TOKEN + "\\t'", [f"admin.token: {TOKEN_RULE}"]),
    ('"' + ADMIN_TOKEN + '\\u00e9"', [f"admin.token: {TOKEN_RULE}"]),
    ("'=" + ADMIN_TOKEN + "'", [f"admin.token: {TOKEN_RULE}"]),
    ("[" + ADMIN_TOKEN + "]", ["admin.token: expected a string, got a list"]),
])
def test_admin_token_is_refused_unless_a_long_bearer_credential(value: str, expected: list[str]) -> None:
    text = f"admin:\n  token: {value}\n"
    if not expected:
        assert parse_config(text).admin.token == value.strip("'")
    else:
        assert problems(text) == expected


@pytest.mark.parametrize("text, environ, expected", [
    ("admin: {}\n", {}, None),
    (f"admin: {{token: {ADMIN_TOKEN}}}\n", {}, ADMIN_TOKEN),
    (f"admin: {{token: '{ADMIN_TOKEN}=='}}\n", {}, ADMIN_TOKEN + "=="),
    ("admin: {token: '${GW_TEST_ADMIN_TOKEN}'}\n", {"GW_TEST_ADMIN_TOKEN": ADMIN_TOKEN}, ADMIN_TOKEN),
    ("admin: {token: '${GW_TEST_ADMIN_TOKEN}'}\n", {"GW_TEST_ADMIN_TOKEN": "1" * 40}, "1" * 40),
])
def test_admin_token_default_and_value(text: str, environ: dict[str, str], expected: str | None) -> None:
    assert parse_config(text, environ=environ).admin.token == expected


@pytest.mark.parametrize("text, expected", [
    ("server: {}\n", None),
    ("tracing:\n", None),  # an empty section is absent, like cors: (tracing stays off)
    ("tracing: {}\n", TracingConfig()),
    ("tracing: {otlp_endpoint: 'http://collector:4318'}\n",
     TracingConfig(otlp_endpoint="http://collector:4318/v1/traces")),
    ("tracing: {otlp_endpoint: 'https://collector/'}\n", TracingConfig(otlp_endpoint="https://collector/v1/traces")),
    ("tracing: {otlp_endpoint: 'http://c:4318/otlp/v1/traces', service_name: edge, sample_ratio: 0}\n",
     TracingConfig(otlp_endpoint="http://c:4318/otlp/v1/traces", service_name="edge", sample_ratio=0.0)),
    ("tracing: {sample_ratio: 1, max_queue_spans: 10, max_batch_spans: 10, export_interval_seconds: 0.5,"
     " export_timeout_seconds: 3}\n",
     TracingConfig(sample_ratio=1.0, max_queue_spans=10, max_batch_spans=10, export_interval_seconds=0.5,
                   export_timeout_seconds=3.0)),
])
def test_tracing_section(text: str, expected: TracingConfig | None) -> None:
    assert parse_config(text).tracing == expected


# --- the keys of issues 15-18 on the schema models: what the models' way of loading adds ---

NEW_KEYS_BAD_CONFIGS = [
    ("a broken consumer does not hide a repeated key",
     f"auth: {{api_keys: {{consumers: [{{subject: a, key: {KEY}}}, {{subject: b, key: {KEY}}}, {{subject: 3}}]}}}}\n",
     ["auth.api_keys.consumers[1].key: the same key as auth.api_keys.consumers[0]: a key names one consumer",
      "auth.api_keys.consumers[2].subject: expected a string, got an integer"]),
    ("a null consumer is a consumer with no keys", "auth: {api_keys: {consumers: [~]}}\n",
     ["auth.api_keys.consumers[0].subject: is required"]),
    ("consumers as a mapping", "auth: {api_keys: {consumers: {a: 1}}}\n",
     ["auth.api_keys.consumers: expected a non-empty list of consumers"]),
    ("a bad target does not hide the upstream's tls check",
     "upstreams: {u: {targets: ['http://a', 'ftp://b'], tls: {certfile: conf/gateway.yaml}}}\n",
     ["upstreams.u.targets[1]: 'ftp://b' is not a valid http(s) target URL", "upstreams.u.tls: certfile and keyfile go together"]),
    ("a route's compression given as null", route(", compression: ~"),
     ["routes[0].compression: expected true, false or a mapping, got nothing"]),
    ("a route's compression as a list", route(", compression: [gzip]"),
     ["routes[0].compression: expected true, false or a mapping, got a list"]),
    ("global compression as a list", "compression: [gzip]\n", ["compression: expected a mapping, got a list"]),
    ("global compression from an unset variable, reported once", "compression: ${GW_TEST_UNSET}\n",
     ["compression: environment variable GW_TEST_UNSET is not set"]),
    ("compression types not strings", "compression: {types: [3]}\n", ["compression.types: item 0: expected a string, got an integer"]),
    ("broken websocket keys beside an unknown upstream",
     UPSTREAM + "routes: [{name: a, path: /a, upstream: ordrs, websocket: 1, websocket_max_message_bytes: 1073741825}]\n",
     ["routes[0].websocket: expected true or false, got an integer", "routes[0].websocket_max_message_bytes: must be at most "
      "1073741824", "routes[0].upstream: unknown upstream 'ordrs'"]),
    ("a null admin token", "admin: {token: ~}\n", ["admin.token: expected a string, got nothing"]),
    ("a null auth_methods", KEYS + route(", auth_methods: ~"), ["routes[0].auth_methods: expected a list, got nothing"]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in NEW_KEYS_BAD_CONFIGS],
                         ids=[c[0] for c in NEW_KEYS_BAD_CONFIGS])
def test_new_keys_problems_on_the_models(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


@pytest.mark.parametrize("value, expected", [("true", CompressionConfig()), ("false", None)])
def test_global_compression_from_the_environment(value: str, expected: CompressionConfig | None) -> None:
    """A whole-scalar reference is typed like YAML: true/false turn compression on or off."""
    config = parse_config("compression: ${GW_TEST_COMPRESSION}\n", environ={"GW_TEST_COMPRESSION": value})
    assert config.compression == expected


def test_global_compression_from_the_environment_is_not_a_word() -> None:
    assert problems("compression: ${GW_TEST_COMPRESSION}\n", {"GW_TEST_COMPRESSION": "gzip"}) == [
        "compression: expected a mapping, got a string"]
