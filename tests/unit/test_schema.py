"""``gateway schema``: the config file's JSON Schema (draft 2020-12), generated from gateway/schema.py.

The schema checks a file as written (``${VAR}`` references stand where a scalar may), and must
agree with the loader: what the loader accepts, the schema accepts; unknown keys and values of
the wrong type it rejects, at the same place.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.cli import main
from gateway.config import ConfigError
from gateway.loader import parse_config
from gateway.schema import SCHEMA_DIALECT, config_schema
from gateway.yamldoc import Problems, substitute
from tests.support.tokens import SECRET

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "conf").glob("*.yaml"))
COMMITTED_SCHEMA = ROOT / "conf" / "gateway.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(config_schema())


def errors(text: str) -> list[tuple[str, str]]:
    """(location, failed keyword) of every schema error in the YAML ``text``, sorted."""
    doc = yaml.safe_load(textwrap.dedent(text))
    return sorted((e.json_path, str(e.validator)) for e in VALIDATOR.iter_errors(doc))


def test_gateway_schema_prints_a_valid_draft_2020_12_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["$schema"] == SCHEMA_DIALECT == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed == config_schema()


def test_the_committed_schema_file_is_the_commands_output(capsys: pytest.CaptureFixture[str]) -> None:
    """conf/gateway.schema.json cannot drift: regenerate it with `gateway schema > conf/gateway.schema.json`."""
    main(["schema"])
    assert COMMITTED_SCHEMA.read_text(encoding="utf-8") == capsys.readouterr().out


def test_every_section_refuses_unknown_keys() -> None:
    schema = config_schema()
    objects = [schema, *(d for d in schema["$defs"].values() if d.get("type") == "object" and "properties" in d)]
    assert len(objects) == 23  # the file and its 22 sections
    assert all(d["additionalProperties"] is False for d in objects)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_carry_the_editor_line_and_validate(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=gateway.schema.json"
    as_written = yaml.safe_load(text)
    assert list(VALIDATOR.iter_errors(as_written)) == []
    problems = Problems()  # and once the references are replaced by their defaults
    substituted = substitute(as_written, "", {"DEMO_ECHO_PORT": "9000"}, problems)
    assert problems == []
    assert list(VALIDATOR.iter_errors(substituted)) == []


GOOD_CONFIGS = [
    ("empty sections", "server:\nadmin:\nauth:\nupstreams:\nroutes:\ncors:\nlogging:\nplugins:\n"),
    ("every scalar from the environment", """\
        server: {host: "${H:-0.0.0.0}", port: "${P:-80}", processes: "${N:-0}", drain_seconds: "${D:-1.5}",
                 max_body_bytes: "${B:-1}", body_timeout_seconds: "${T:-2}", trusted_proxies: "${TP:-10.0.0.0/8}"}
        admin: {port: "${A:-0}"}
        rate_limit_store: "${STORE:-memory}"
        rate_limit_fail_open: "${OPEN:-true}"
        logging: {level: "${L:-info}", format: "${F:-json}", access_log: "${AL:-false}"}
        """),
    ("a full upstream and route", f"""\
        auth: {{jwt: {{algorithms: HS256, secret: {SECRET}, audience: api, claims_to_headers: {{sub: X-User}}}}}}
        upstreams:
          orders:
            targets: ["http://127.0.0.1:9001/base", {{url: "https://[::1]:9443", weight: 3}}]
            balance: least_conn
            connect_timeout: 0.5
            request_timeout: 3
            retry: {{attempts: 3, on_statuses: [502, 503], budget_ratio: 0}}
            health_check:
            circuit_breaker: {{failure_threshold: 2, open_seconds: 1}}
            max_idle_connections: 0
        routes:
          - name: orders
            path: /api/orders
            host: API.example.com
            methods: [get, Post]
            upstream: orders
            rewrite_prefix: /v2
            auth: optional
            scopes: orders:read
            rate_limit: {{requests: 5, window_seconds: 1, key: "header:X-Api-Key"}}
            request_headers: {{set: {{X-Version: 2, X-Ratio: 0.5, X-Name: a}}, remove: Cookie}}
            response_headers: {{remove: [Server]}}
            timeout: 2
            cors: {{allow_origins: "*", allow_methods: [GET], max_age_seconds: 0}}
          - name: overview
            path: /u/{{id}}
            aggregate: [{{name: user, upstream: orders, path: "/users/{{id}}?x=1"}}]
        """),
    ("compression, global and per route", """\
        compression: {min_bytes: 0, types: ["text/*", Application/JSON, "*/*"], encodings: gzip, gzip_level: 9,
                      brotli_quality: "${Q:-11}"}
        upstreams: {u: {targets: ["http://h"]}}
        routes:
          - {name: a, path: /a, upstream: u, compression: false}
          - {name: b, path: /b, upstream: u, compression: true}
          - {name: c, path: /c, upstream: u, compression: {types: image/svg+xml, encodings: [gzip, br]}}
        """),
    ("compression: true for the defaults", "compression: true\n"),
]


@pytest.mark.parametrize("text", [t for _, t in GOOD_CONFIGS], ids=[n for n, _ in GOOD_CONFIGS])
def test_what_the_loader_accepts_the_schema_accepts(text: str) -> None:
    parse_config(textwrap.dedent(text), environ={})
    assert errors(text) == []


BAD_CONFIGS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("unknown top-level key", "servre: {}\n", [("$", "additionalProperties")]),
    ("unknown nested key", "server: {hots: 0.0.0.0}\n", [("$.server", "anyOf")]),
    ("port of the wrong type", "server: {port: eighty}\n", [("$.server", "anyOf")]),
    ("unknown route key", "routes: [{name: a, path: /a, upstream: o, stip_prefix: true}]\n",
     [("$.routes", "anyOf")]),
    ("boolean as a string", "routes: [{name: a, path: /a, upstream: o, strip_prefix: 'yes'}]\n",
     [("$.routes", "anyOf")]),
    ("top level not a mapping", "- a\n", [("$", "type")]),
    ("path with a dot segment", "routes: [{name: a, path: /a/../b, upstream: o}]\n", [("$.routes", "anyOf")]),
    ("unknown method", "routes: [{name: a, path: /a, upstream: o, methods: [FETCH]}]\n", [("$.routes", "anyOf")]),
    ("neither upstream nor aggregate", "routes: [{name: a, path: /a}]\n", [("$.routes", "anyOf")]),
    ("empty targets", "upstreams: {u: {targets: []}}\n", [("$.upstreams", "anyOf")]),
    ("ftp target", "upstreams: {u: {targets: ['ftp://x']}}\n", [("$.upstreams", "anyOf")]),
    ("none algorithm", "auth: {jwt: {algorithms: [none]}}\n", [("$.auth", "anyOf")]),
    ("certfile without keyfile", "upstreams: {u: {targets: ['http://h'], tls: {certfile: c.pem}}}\n",
     [("$.upstreams", "anyOf")]),
    ("redis store of the wrong scheme", "rate_limit_store: 'http://h'\n", [("$.rate_limit_store", "anyOf")]),
    ("compression type with parameters", "compression: {types: ['text/html; charset=utf-8']}\n",
     [("$.compression", "anyOf")]),
    ("compression type half a wildcard", "compression: {types: ['*/json']}\n", [("$.compression", "anyOf")]),
    ("unknown compression encoding", "compression: {encodings: [deflate]}\n", [("$.compression", "anyOf")]),
    ("gzip level out of range", "compression: {gzip_level: 10}\n", [("$.compression", "anyOf")]),
    ("route compression of the wrong type", "routes: [{name: a, path: /a, upstream: o, compression: gzip}]\n",
     [("$.routes", "anyOf")]),
    ("two problems at once", "logging: {level: loud}\nrate_limit_fail_open: 3\n",
     [("$.logging", "anyOf"), ("$.rate_limit_fail_open", "anyOf")]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in BAD_CONFIGS], ids=[n for n, _, _ in BAD_CONFIGS])
def test_what_the_schema_rejects_the_loader_rejects(text: str, expected: list[tuple[str, str]]) -> None:
    assert errors(text) == expected
    with pytest.raises(ConfigError):
        parse_config(textwrap.dedent(text), environ={})


def _leaf_errors(text: str) -> list[str]:
    """The innermost error's location, as an editor would underline it."""
    doc: Any = yaml.safe_load(text)
    best = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(doc))
    assert best is not None
    return [best.json_path, best.message]


def test_an_editor_is_pointed_at_the_wrong_value() -> None:
    assert _leaf_errors("server: {port: 70000}\n") == ["$.server.port", "70000 is greater than the maximum of 65535"]
    assert _leaf_errors("server: {hots: x}\n") == [
        "$.server", "Additional properties are not allowed ('hots' was unexpected)"]


# --- auth.api_keys, auth_methods, ip_allow / ip_deny (issue 17) ---

KEY_GOOD_CONFIGS = [
    ("api keys beside jwt", f"""\
        auth:
          jwt: {{algorithms: [HS256], secret: {SECRET}, claims_to_headers: {{sub: X-User}}}}
          api_keys:
            header: X-Partner-Key
            consumers:
              - {{subject: partner-a, key_sha256: {"ab" * 32}, scopes: [orders:read]}}
              - {{subject: partner-b, key: "${{PARTNER_B_KEY:-partner-b-key-0123456789}}", scopes: orders:read}}
        upstreams: {{o: {{targets: ["http://127.0.0.1:9001"]}}}}
        routes:
          - {{name: a, path: /a, upstream: o, auth_methods: [jwt, api_key], ip_allow: [10.0.0.0/8, "::1"],
              ip_deny: 10.0.5.0/24}}
          - {{name: b, path: /b, upstream: o, auth: optional, auth_methods: api_key, ip_deny: ["2001:db8::/32"]}}
        """),
    ("api keys alone, their own identity headers", """\
        auth:
          api_keys:
            claims_to_headers: {sub: X-Consumer, scope: X-Consumer-Scopes}
            consumers: [{subject: a, key: "${KEY:-0123456789abcdef}"}]
        """),
]


@pytest.mark.parametrize("text", [t for _, t in KEY_GOOD_CONFIGS], ids=[n for n, _ in KEY_GOOD_CONFIGS])
def test_what_the_loader_accepts_of_keys_and_ip_rules_the_schema_accepts(text: str) -> None:
    parse_config(textwrap.dedent(text), environ={})
    assert errors(text) == []


KEY_BAD_CONFIGS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("consumer without a key", "auth: {api_keys: {consumers: [{subject: a}]}}\n", [("$.auth", "anyOf")]),
    ("consumer with both", f"auth: {{api_keys: {{consumers: [{{subject: a, key: 0123456789abcdef, "
     f"key_sha256: {'ab' * 32}}}]}}}}\n", [("$.auth", "anyOf")]),
    ("short key", "auth: {api_keys: {consumers: [{subject: a, key: short}]}}\n", [("$.auth", "anyOf")]),
    ("no consumers", "auth: {api_keys: {consumers: []}}\n", [("$.auth", "anyOf")]),
    ("unknown auth method", "routes: [{name: a, path: /a, upstream: o, auth_methods: [basic]}]\n",
     [("$.routes", "anyOf")]),
    ("ip_allow of the wrong type", "routes: [{name: a, path: /a, upstream: o, ip_allow: {a: 1}}]\n",
     [("$.routes", "anyOf")]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in KEY_BAD_CONFIGS], ids=[n for n, _, _ in KEY_BAD_CONFIGS])
def test_what_the_schema_rejects_of_keys_and_ip_rules_the_loader_rejects(text: str,
                                                                          expected: list[tuple[str, str]]) -> None:
    assert errors(text) == expected
    with pytest.raises(ConfigError):
        parse_config(textwrap.dedent(text), environ={})
