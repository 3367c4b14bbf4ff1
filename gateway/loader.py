"""YAML + ``${VAR:-default}`` → :class:`~gateway.config.GatewayConfig`.

The one place where every configuration key is validated. Problems are
collected, not raised one at a time: :func:`load_config` raises a single
:class:`~gateway.config.ConfigError` listing each problem with its location
(``routes[2].upstream: unknown upstream 'ordrs'``).

Reading the YAML itself as hostile input, and the ``${VAR:-default}`` references, are
:mod:`gateway.yamldoc`'s; this module turns that data into the frozen dataclasses.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .apikeys import MAX_KEY_BYTES, MIN_KEY_CHARS, RESERVED_KEY_HEADERS, digest_of
from .compression import ENCODINGS
from .config import (
    AdminConfig,
    AggregatePart,
    ApiKeyConsumer,
    ApiKeysConfig,
    AuthConfig,
    CacheConfig,
    CircuitBreakerConfig,
    CompressionConfig,
    ConfigError,
    CorsConfig,
    GatewayConfig,
    HeaderRules,
    HealthCheckConfig,
    JwtConfig,
    LoggingConfig,
    Origin,
    PluginConfig,
    RateLimitConfig,
    RetryConfig,
    RouteConfig,
    ServerConfig,
    ServerTls,
    TargetConfig,
    TracingConfig,
    UpstreamConfig,
    UpstreamTls,
)
from .policies.iprules import parse_rule
from .policies.plugins import PluginLoadError, load_plugin
from .routing import PATH_PARAM
from .tables import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    HMAC_MIN_SECRET_BYTES,
    JWT_ALGORITHMS,
    PROXIED_METHODS,
)
from .yamldoc import UNSET, EnvText, Problems, join_path, printable, read_document, substitute

__all__ = ["load_config", "parse_config", "ConfigError"]

# Methods a route or CORS may name but the proxy refuses with 405: refused here instead.
_UNPROXIED_METHODS = frozenset({"CONNECT", "TRACE"})

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# A media type as compression.types names it: type/subtype, type/*, type/*+suffix or */*; no parameters.
_MEDIA_TOKEN = r"[!#$%&'+.^_`|~0-9A-Za-z-]+"  # a token without '*'
_MEDIA_RANGE = re.compile(rf"^(?:\*/\*|{_MEDIA_TOKEN}/(?:\*|\*\+{_MEDIA_TOKEN}|{_MEDIA_TOKEN}))$")


def load_config(path: str, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the YAML file at ``path``. Raises ConfigError with every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_config(text, source=path, environ=environ)


def parse_config(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate YAML ``text``. Raises ConfigError with every problem, each with its location."""
    problems = Problems()
    raw = read_document(text, source, problems)
    if raw is None:
        problems.add("", "the configuration is empty (only comments or nothing): there is nothing to serve")
    raw = substitute(raw, "", os.environ if environ is None else environ, problems)
    config = _Builder(problems, os.path.dirname(os.path.abspath(source)) if source != "<string>" else ".").build(
        raw, source
    )
    if problems:
        raise ConfigError([printable(problem) for problem in problems])
    return config


class _Invalid(Exception):
    """A value is wrong; the message says why (its location is added by the caller)."""


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


# --- scalar parsers: each takes (value) and returns the typed value or raises _Invalid ---

def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_kind(value)}")
    return value


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise _Invalid(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be at most {maximum}")
        return int(value)
    return parse


def _seconds(minimum: float = 0.0, allow_zero: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number of seconds, got {_kind(value)}")
        if value < minimum or (value == 0 and not allow_zero):
            raise _Invalid("must be greater than 0" if not allow_zero else f"must be at least {minimum}")
        return float(value)
    return parse


def _str(choices: tuple[str, ...] | None = None, nonempty: bool = True) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, EnvText):
            value = value.text  # a string key set from the environment keeps the text as written
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_kind(value)}")
        if nonempty and not value:
            raise _Invalid("must not be empty")
        if choices is not None and value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got '{value}'")
        return value
    return parse


ADMIN_TOKEN_MIN_BYTES = 32  # as for an HS* secret (SPEC §3): a guessable token guards reload and the config's view
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1: what a Bearer credential may hold


def _admin_token(value: Any) -> str:
    """``admin.token``: a Bearer credential (RFC 6750 b64token) of at least 32 bytes."""
    token = _str()(value)
    if not _B64TOKEN.fullmatch(token):
        raise _Invalid("must be a Bearer token: letters, digits and - . _ ~ + / (then any '='), "
                       "e.g. the output of `openssl rand -hex 32`")
    if len(token) < ADMIN_TOKEN_MIN_BYTES:
        raise _Invalid(f"must be at least {ADMIN_TOKEN_MIN_BYTES} bytes, got {len(token)} "
                       "(`openssl rand -hex 32` makes one)")
    return token


def _str_list(item: Callable[[Any], str] | None = None) -> Callable[[Any], tuple[str, ...]]:
    item = item or _str()

    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _Invalid(f"expected a list, got {_kind(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except _Invalid as exc:
                raise _Invalid(f"item {i}: {exc}") from None
        return tuple(out)
    return parse


def _header_name(value: Any) -> str:
    value = _str()(value)
    if not _HEADER_NAME.match(value):
        raise _Invalid(f"'{value}' is not a valid header name")
    return value


def _method(value: Any) -> str:
    value = _str()(value).upper()
    if value not in PROXIED_METHODS:
        what = f"'{value}' is not proxied" if value in _UNPROXIED_METHODS else f"unknown HTTP method '{value}'"
        raise _Invalid(f"{what} (supported: {', '.join(PROXIED_METHODS)})")
    return value


def _path(value: Any) -> str:
    value = _str()(value)
    if not value.startswith("/"):
        raise _Invalid(f"must start with '/', got '{value}'")
    if any(seg in (".", "..") for seg in value.split("/")) or "//" in value or "?" in value or "#" in value:
        raise _Invalid(f"'{value}' is not a clean path")
    return value


def _header_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    text = str(value)
    if "\r" in text or "\n" in text:
        raise _Invalid("header values cannot hold line breaks")
    return text


def _cidr(value: Any) -> str:
    value = _str()(value)
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _Invalid(f"'{value}' is not an IP address or CIDR") from None
    return value


def _ip_rule(value: Any) -> str:
    value = _str()(value)
    try:
        parse_rule(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return value


def _auth_method(value: Any) -> str:
    return _str(("jwt", "api_key"))(value)


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number from 0 to 1, got {_kind(value)}")
    if not 0 <= value <= 1:
        raise _Invalid(f"must be from 0 to 1, got {value}")
    return float(value)


def _otlp_endpoint(value: Any) -> str:
    """An OTLP/HTTP traces URL; one without a path gets the standard ``/v1/traces``."""
    value = _str()(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid(f"'{value}' is not an http(s) URL")
    if parts.username is not None or parts.fragment:
        raise _Invalid(f"'{value}' must not hold user info or a fragment")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise _Invalid(f"'{value}' has an invalid port") from None
    return value if parts.path not in ("", "/") else value.rstrip("/") + "/v1/traces"


FieldTable = Mapping[str, tuple[str, Callable[[Any], Any]]]


class _Builder:
    """Walks the raw YAML tree section by section, collecting problems."""

    def __init__(self, problems: Problems, base_dir: str) -> None:
        self.problems = problems
        self.base_dir = base_dir
        self.plugin_names: set[str] = set()

    # --- generic helpers ---

    def fields(self, raw: Any, path: str, table: FieldTable, required: tuple[str, ...] = ()) -> dict[str, Any]:
        """Parse the mapping ``raw`` by ``table`` (yaml key -> (attribute, parser)) into dataclass kwargs."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problems.add(path, f"expected a mapping, got {_kind(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            where = join_path(path, key)
            if key not in table:
                self.problems.add(where, "unknown key")
                continue
            attr, parse = table[key]
            if value is UNSET:
                continue
            try:
                out[attr] = parse(value)
            except _Invalid as exc:
                self.problems.add(where, str(exc))
        for key in required:
            if key not in raw:
                self.problems.add(join_path(path, key), "is required")
        return out

    def section(self, parse: Callable[[Any, str], Any], path: str) -> Callable[[Any], Any]:
        """Adapt a nested-section builder to the scalar-parser signature used in field tables."""
        return lambda value: parse(value, path)

    def file(self, path: str) -> Callable[[Any], str]:
        def parse(value: Any) -> str:
            value = _str()(value)
            resolved = value if os.path.isabs(value) or os.path.exists(value) else os.path.join(self.base_dir, value)
            if not os.path.isfile(resolved):
                raise _Invalid(f"no such file: {value}")
            return resolved
        return parse

    # --- sections ---

    def build(self, raw: Any, source: str) -> GatewayConfig:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problems.add("", f"expected a mapping at the top level, got {_kind(raw)}")
            return GatewayConfig(source=source)
        top = self.fields(raw, "", {
            "server": ("server", self.section(self.server, "server")),
            "admin": ("admin", self.section(self.admin, "admin")),
            "auth": ("auth", self.section(self.auth, "auth")),
            "upstreams": ("upstreams", self.section(self.upstreams, "upstreams")),
            "routes": ("routes", lambda v: v),  # parsed below, once upstreams and auth are known
            "rate_limit_store": ("rate_limit_store", self.rate_limit_store),
            "rate_limit_fail_open": ("rate_limit_fail_open", _bool),
            "cors": ("cors", self.section(self.cors, "cors")),
            "logging": ("logging", self.section(self.logging, "logging")),
            "plugins": ("plugins", self.section(self.plugins, "plugins")),
            "cache_store": ("cache_store", self.cache_store),
            "cache_max_bytes": ("cache_max_bytes", _int(1024)),
            "compression": ("compression", self.section(self.compression, "compression")),
            "tracing": ("tracing", self.section(self.tracing, "tracing")),
        })
        auth: AuthConfig = top.get("auth") or AuthConfig()
        upstreams: dict[str, UpstreamConfig] = top.get("upstreams") or {}
        top["routes"] = self.routes(top.get("routes"), "routes", upstreams, auth)
        self.check_cache(top)
        return GatewayConfig(source=source, **top)

    def check_cache(self, top: dict[str, Any]) -> None:
        """A memory store too small for a route's largest entry would never keep one of them."""
        if top.get("cache_store", GatewayConfig.cache_store) != "memory":
            return
        limit = top.get("cache_max_bytes", GatewayConfig.cache_max_bytes)
        for i, route in enumerate(top["routes"]):
            if route.cache is not None and route.cache.max_entry_bytes > limit:
                self.problems.add(f"routes[{i}].cache.max_entry_bytes",
                                  f"is larger than cache_max_bytes ({limit}): such answers could never be kept")

    def plugins(self, raw: Any, path: str) -> tuple[PluginConfig, ...]:
        """``plugins:``, each plugin built with its config (SPEC §7). A plugin that cannot be
        imported or built is a problem at its entry's ``class`` or ``config``."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problems.add(path, f"expected a list of plugins, got {_kind(raw)}")
            return ()
        out: list[PluginConfig] = []
        names: dict[str, int] = {}
        for i, item in enumerate(raw):
            where = join_path(path, i)
            kw = self.fields(item, where, {
                "name": ("name", _str()), "class": ("class_path", _str()), "config": ("config", self.plugin_config),
            }, required=("name", "class"))
            if "name" not in kw or "class_path" not in kw:
                continue
            name = kw["name"]
            if name in names:
                self.problems.add(join_path(where, "name"), f"duplicate plugin name '{name}' (also {path}[{names[name]}])")
                continue
            names[name] = i
            self.plugin_names.add(name)  # known to routes even when it fails to load (reported once, here)
            if any(p.startswith(join_path(where, "config")) for p in self.problems):
                continue
            config = kw.get("config", {})
            try:
                plugin = load_plugin(kw["class_path"], config, self.base_dir)
            except PluginLoadError as exc:
                self.problems.add(join_path(where, exc.field), str(exc))
                continue
            out.append(PluginConfig(name=name, class_path=kw["class_path"], config=config, plugin=plugin))
        return tuple(out)

    def plugin_config(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _Invalid(f"expected a mapping, got {_kind(value)}")
        return value

    def route_plugins(self, value: Any) -> tuple[str, ...]:
        names = _str_list()(value)
        for name in names:
            if name not in self.plugin_names:
                known = ", ".join(sorted(self.plugin_names)) or "none are configured"
                raise _Invalid(f"unknown plugin '{name}' (plugins: {known})")
        if len(set(names)) != len(names):
            raise _Invalid("lists a plugin twice")
        return names

    def server(self, raw: Any, path: str) -> ServerConfig:
        kw = self.fields(raw, path, {
            "host": ("host", _str()),
            "port": ("port", _int(0, 65535)),
            "processes": ("processes", _int(0, 1024)),
            "max_body_bytes": ("max_body_bytes", _int(0)),
            "trusted_proxies": ("trusted_proxies", _str_list(_cidr)),
            "drain_seconds": ("drain_seconds", _seconds(allow_zero=True)),
            "body_timeout_seconds": ("body_timeout_seconds", _seconds()),
            "tls": ("tls", self.section(self.server_tls, join_path(path, "tls"))),
        })
        return ServerConfig(**kw)

    def server_tls(self, raw: Any, path: str) -> ServerTls | None:
        if raw is None:
            return None
        kw = self.fields(raw, path, {
            "certfile": ("certfile", self.file(path)), "keyfile": ("keyfile", self.file(path)),
        }, required=("certfile", "keyfile"))
        return ServerTls(**kw) if len(kw) == 2 else None

    def admin(self, raw: Any, path: str) -> AdminConfig:
        return AdminConfig(**self.fields(raw, path, {
            "host": ("host", _str()), "port": ("port", _int(0, 65535)),
            "token": ("token", _admin_token),
        }))

    def auth(self, raw: Any, path: str) -> AuthConfig:
        kw = self.fields(raw, path, {"jwt": ("jwt", self.section(self.jwt, join_path(path, "jwt"))),
                                     "api_keys": ("api_keys", self.section(self.api_keys, join_path(path, "api_keys")))})
        jwt, keys = kw.get("jwt"), kw.get("api_keys")
        if jwt is not None and keys is not None and keys.claims_to_headers and jwt.claims_to_headers:
            self.problems.add(join_path(join_path(path, "api_keys"), "claims_to_headers"),
                              "set it once, in auth.jwt.claims_to_headers: it applies to API-key consumers too")
        return AuthConfig(**kw)

    def api_keys(self, raw: Any, path: str) -> ApiKeysConfig | None:
        """``auth.api_keys``: the header and the consumers, each key kept as its SHA-256 digest only."""
        if raw is None:
            return None
        kw = self.fields(raw, path, {
            "header": ("header", self.key_header),
            "consumers": ("consumers", lambda v: self.consumers(v, join_path(path, "consumers"))),
            "claims_to_headers": ("claims_to_headers", self.key_claim_headers),
        }, required=("consumers",))
        return ApiKeysConfig(**kw)

    def key_claim_headers(self, value: Any) -> dict[str, str]:
        mapping = self.claim_headers(value)
        for claim in mapping:
            if claim not in ("sub", "scope"):
                raise _Invalid(f"a consumer has the claims sub and scope only, not '{claim}'")
        return mapping

    def key_header(self, value: Any) -> str:
        name = _header_name(value)
        if name.lower() in RESERVED_KEY_HEADERS:
            raise _Invalid(f"'{name}' is a header the gateway reads or sets itself; name another (X-Api-Key)")
        return name

    def consumers(self, raw: Any, path: str) -> tuple[ApiKeyConsumer, ...]:
        if not isinstance(raw, list) or not raw:
            raise _Invalid("expected a non-empty list of consumers")
        out: list[ApiKeyConsumer] = []
        seen: dict[bytes, int] = {}
        for i, item in enumerate(raw):
            where = join_path(path, i)
            kw = self.fields(item, where, {
                "subject": ("subject", self.subject),
                "key": ("key", self.plaintext_key),
                "key_sha256": ("key_sha256", self.key_digest),
                "scopes": ("scopes", _str_list()),
            }, required=("subject",))
            has_key, has_digest = "key" in kw, "key_sha256" in kw
            if has_key == has_digest:
                if not any(p.startswith(join_path(where, "key")) for p in self.problems):
                    self.problems.add(where, "needs exactly one of key or key_sha256")
                continue
            digest = kw.pop("key") if has_key else kw.pop("key_sha256")
            if "subject" not in kw:
                continue
            if digest in seen:
                self.problems.add(join_path(where, "key" if has_key else "key_sha256"),
                                  f"the same key as {path}[{seen[digest]}]: a key names one consumer")
                continue
            seen[digest] = i
            out.append(ApiKeyConsumer(key_sha256=digest, **kw))
        return tuple(out)

    def subject(self, value: Any) -> str:
        value = _str()(value)
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise _Invalid("must not hold control characters (it is sent upstream as a header value)")
        return value

    def plaintext_key(self, value: Any) -> bytes:
        """A plaintext key, checked and hashed at once: the config keeps its digest only."""
        if isinstance(value, EnvText):
            value = value.text
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_kind(value)}")  # never echo a key's value
        if not all("!" <= c <= "~" for c in value):
            raise _Invalid("must be printable ASCII without spaces (a header value carries it as is)")
        if not MIN_KEY_CHARS <= len(value) <= MAX_KEY_BYTES:
            raise _Invalid(f"must be {MIN_KEY_CHARS} to {MAX_KEY_BYTES} characters (`gateway key` makes one)")
        return digest_of(value)

    def key_digest(self, value: Any) -> bytes:
        value = _str()(value)
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise _Invalid("expected the 64 hex digits of a SHA-256 digest (`gateway key` prints one)")
        return bytes.fromhex(value)

    def jwt(self, raw: Any, path: str) -> JwtConfig | None:
        if raw is None:
            return None
        kw = self.fields(raw, path, {
            "algorithms": ("algorithms", _str_list()),
            "secret": ("secret", _str(nonempty=False)),
            "public_key_file": ("public_key_file", self.file(path)),
            "jwks_url": ("jwks_url", self.http_url),
            "jwks_refresh_seconds": ("jwks_refresh_seconds", _seconds()),
            "issuer": ("issuer", _str()),
            "audience": ("audience", _str_list()),
            "leeway_seconds": ("leeway_seconds", _seconds(allow_zero=True)),
            "required_claims": ("required_claims", _str_list()),
            "scope_claim": ("scope_claim", _str()),
            "claims_to_headers": ("claims_to_headers", self.claim_headers),
            "forward_authorization": ("forward_authorization", _bool),
            "max_token_bytes": ("max_token_bytes", _int(256)),
            "cache_size": ("cache_size", _int(0)),
        })
        algorithms = kw.get("algorithms", JwtConfig.algorithms)
        for alg in algorithms:
            if alg.lower() == "none":
                self.problems.add(join_path(path, "algorithms"), "'none' is never allowed")
            elif alg not in JWT_ALGORITHMS:
                self.problems.add(join_path(path, "algorithms"), f"unknown algorithm '{alg}'")
        if not algorithms:
            self.problems.add(join_path(path, "algorithms"), "at least one algorithm is required")
        hs = [a for a in algorithms if a in HMAC_ALGORITHMS]
        asym = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
        if hs and asym:
            self.problems.add(join_path(path, "algorithms"),
                              "mixes HS* with public-key algorithms, which invites algorithm confusion")
        secret = kw.get("secret")
        if hs:
            if secret is None:
                self.problems.add(join_path(path, "secret"), f"is required for {', '.join(hs)}")
            else:
                needed = max(HMAC_MIN_SECRET_BYTES[a] for a in hs)
                if len(secret.encode()) < needed:
                    self.problems.add(join_path(path, "secret"),
                                      f"must be at least {needed} bytes for {', '.join(sorted(hs))}")
        elif secret is not None:
            self.problems.add(join_path(path, "secret"), "is only used with HS* algorithms")
        if asym:
            sources = [k for k in ("public_key_file", "jwks_url") if k in kw]
            if len(sources) != 1 and not any(p.startswith(join_path(path, "public_key_file")) for p in self.problems):
                self.problems.add(path, f"{', '.join(asym)} need exactly one of public_key_file or jwks_url")
        elif "public_key_file" in kw or "jwks_url" in kw:
            self.problems.add(path, "public_key_file and jwks_url need a public-key algorithm (RS*/PS*/ES*/EdDSA)")
        return JwtConfig(**kw)

    def claim_headers(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _Invalid(f"expected a mapping of claim to header name, got {_kind(value)}")
        out = {}
        for claim, header in value.items():
            out[_str()(claim)] = _header_name(header)
        return out

    def http_url(self, value: Any) -> str:
        value = _str()(value)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Invalid(f"'{value}' is not an http(s) URL")
        return value

    def upstreams(self, raw: Any, path: str) -> dict[str, UpstreamConfig]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.add(path, f"expected a mapping of name to upstream, got {_kind(raw)}")
            return {}
        out = {}
        for name, body in raw.items():
            upstream = self.upstream(str(name), body, join_path(path, name))
            if upstream is not None:
                out[str(name)] = upstream
        return out

    def upstream(self, name: str, raw: Any, path: str) -> UpstreamConfig:
        kw = self.fields(raw, path, {
            "targets": ("targets", lambda v: self.targets(v, join_path(path, "targets"))),
            "balance": ("balance", _str(("round_robin", "least_conn", "random"))),
            "connect_timeout": ("connect_timeout_seconds", _seconds()),
            "request_timeout": ("request_timeout_seconds", _seconds()),
            "retry": ("retry", self.section(self.retry, join_path(path, "retry"))),
            "health_check": ("health_check", self.section(self.health_check, join_path(path, "health_check"))),
            "circuit_breaker": ("circuit_breaker",
                                self.section(self.circuit_breaker, join_path(path, "circuit_breaker"))),
            "tls": ("tls", self.section(self.upstream_tls, join_path(path, "tls"))),
            "max_idle_connections": ("max_idle_connections", _int(0)),
        }, required=("targets",))
        # An upstream with broken targets is still known by name, so routes naming it are not
        # reported twice; the problems already recorded keep it from being served.
        kw.setdefault("targets", ())
        return UpstreamConfig(name=name, **kw)

    def targets(self, raw: Any, path: str) -> tuple[TargetConfig, ...]:
        if not isinstance(raw, list) or not raw:
            raise _Invalid("expected a non-empty list of targets")
        out = []
        for i, item in enumerate(raw):
            where = join_path(path, i)
            if isinstance(item, str):
                item = {"url": item}
            kw = self.fields(item, where, {"url": ("url", _str()), "weight": ("weight", _int(1, 1000))},
                             required=("url",))
            if "url" not in kw:
                continue
            parts = urlsplit(kw["url"])
            try:
                port = parts.port
            except ValueError:
                port = -1
            if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 \
                    or parts.query or parts.fragment or parts.username:
                self.problems.add(join_path(where, "url") if isinstance(raw[i], dict) else where,
                                  f"'{kw['url']}' is not a valid http(s) target URL")
                continue
            origin = Origin(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))
            out.append(TargetConfig(url=kw["url"], origin=origin, base_path=parts.path.rstrip("/"),
                                    weight=kw.get("weight", 1)))
        return tuple(out)

    def retry(self, raw: Any, path: str) -> RetryConfig:
        kw = self.fields(raw, path, {
            "attempts": ("attempts", _int(1, 10)),
            "backoff_seconds": ("backoff_seconds", _seconds(allow_zero=True)),
            "max_backoff_seconds": ("max_backoff_seconds", _seconds(allow_zero=True)),
            "on_statuses": ("on_statuses", self.statuses),
            "budget_ratio": ("budget_ratio", _seconds(allow_zero=True)),
            "replay_buffer_bytes": ("replay_buffer_bytes", _int(0)),
        })
        return RetryConfig(**kw)

    def statuses(self, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list of status codes, got {_kind(value)}")
        return tuple(_int(100, 599)(v) for v in value)

    def health_check(self, raw: Any, path: str) -> HealthCheckConfig:
        return HealthCheckConfig(**self.fields(raw, path, {
            "path": ("path", _path),
            "interval_seconds": ("interval_seconds", _seconds()),
            "timeout_seconds": ("timeout_seconds", _seconds()),
            "healthy_threshold": ("healthy_threshold", _int(1)),
            "unhealthy_threshold": ("unhealthy_threshold", _int(1)),
        }))

    def circuit_breaker(self, raw: Any, path: str) -> CircuitBreakerConfig:
        return CircuitBreakerConfig(**self.fields(raw, path, {
            "failure_threshold": ("failure_threshold", _int(1)),
            "open_seconds": ("open_seconds", _seconds()),
        }))

    def upstream_tls(self, raw: Any, path: str) -> UpstreamTls:
        kw = self.fields(raw, path, {
            "ca_file": ("ca_file", self.file(path)),
            "certfile": ("certfile", self.file(path)),
            "keyfile": ("keyfile", self.file(path)),
        })
        if ("certfile" in kw) != ("keyfile" in kw):
            self.problems.add(path, "certfile and keyfile go together")
        return UpstreamTls(**kw)

    def rate_limit_store(self, value: Any) -> str:
        value = _str()(value)
        if value == "memory":
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise _Invalid(f"expected 'memory' or a redis:// URL, got '{value}'")
        return value

    def cache_store(self, value: Any) -> str:
        return self.rate_limit_store(value)  # the same choice: memory or a redis:// URL

    def cache(self, raw: Any, path: str) -> CacheConfig | None:
        if raw is None:
            return None
        return CacheConfig(**self.fields(raw, path, {
            "ttl_seconds": ("ttl_seconds", _seconds()),
            "shared": ("shared", _bool),
            "max_entry_bytes": ("max_entry_bytes", _int(1)),
        }))

    def cors(self, raw: Any, path: str) -> CorsConfig | None:
        if raw is None:
            return None
        kw = self.fields(raw, path, {
            "allow_origins": ("allow_origins", _str_list()),
            "allow_methods": ("allow_methods", _str_list(_method)),
            "allow_headers": ("allow_headers", _str_list(_header_name)),
            "expose_headers": ("expose_headers", _str_list(_header_name)),
            "allow_credentials": ("allow_credentials", _bool),
            "max_age_seconds": ("max_age_seconds", _int(0)),
        })
        if kw.get("allow_credentials") and "*" in kw.get("allow_origins", ()):
            self.problems.add(join_path(path, "allow_origins"), "'*' cannot be used with allow_credentials")
        return CorsConfig(**kw)

    def logging(self, raw: Any, path: str) -> LoggingConfig:
        return LoggingConfig(**self.fields(raw, path, {
            "level": ("level", _str(("debug", "info", "warning", "error"))),
            "format": ("format", _str(("json", "text"))),
            "access_log": ("access_log", _bool),
        }))

    def tracing(self, raw: Any, path: str) -> TracingConfig | None:
        """``tracing:`` (SPEC §9). An empty section (``tracing: {}``) turns tracing on with the
        defaults; an absent one leaves it off."""
        if raw is None:
            return None
        kw = self.fields(raw, path, {
            "otlp_endpoint": ("otlp_endpoint", _otlp_endpoint),
            "service_name": ("service_name", _str()),
            "sample_ratio": ("sample_ratio", _ratio),
            "max_queue_spans": ("max_queue_spans", _int(1, 1_000_000)),
            "max_batch_spans": ("max_batch_spans", _int(1, 100_000)),
            "export_interval_seconds": ("export_interval_seconds", _seconds()),
            "export_timeout_seconds": ("export_timeout_seconds", _seconds()),
        })
        queue = kw.get("max_queue_spans", TracingConfig.max_queue_spans)
        if kw.get("max_batch_spans", TracingConfig.max_batch_spans) > queue:
            self.problems.add(join_path(path, "max_batch_spans"), f"must be at most max_queue_spans ({queue})")
        return TracingConfig(**kw)

    def header_rules(self, raw: Any, path: str) -> HeaderRules:
        kw = self.fields(raw, path, {
            "set": ("set", lambda v: self.header_map(v)),
            "remove": ("remove", _str_list(_header_name)),
        })
        return HeaderRules(**kw)

    def header_map(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _Invalid(f"expected a mapping of header to value, got {_kind(value)}")
        return {_header_name(k): _header_value(v) for k, v in value.items()}

    def rate_limit(self, raw: Any, path: str) -> RateLimitConfig | None:
        kw = self.fields(raw, path, {
            "requests": ("requests", _int(1)),
            "window_seconds": ("window_seconds", _seconds()),
            "key": ("key", self.rate_limit_key),
        }, required=("requests", "window_seconds"))
        if "requests" not in kw or "window_seconds" not in kw:
            return None
        return RateLimitConfig(**kw)

    def rate_limit_key(self, value: Any) -> str:
        value = _str()(value)
        if value in ("subject", "ip"):
            return value
        if value.startswith("header:") and _HEADER_NAME.match(value[7:]):
            return value
        raise _Invalid(f"expected subject, ip or header:NAME, got '{value}'")

    def routes(self, raw: Any, path: str, upstreams: Mapping[str, UpstreamConfig], auth: AuthConfig
               ) -> tuple[RouteConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problems.add(path, f"expected a list of routes, got {_kind(raw)}")
            return ()
        out: list[RouteConfig] = []
        names: dict[str, int] = {}
        matches: dict[tuple[str | None, str, frozenset[str] | None], tuple[int, str]] = {}
        for i, item in enumerate(raw):
            route = self.route(item, join_path(path, i), upstreams, auth)
            if route is None:
                continue
            if route.name in names:
                self.problems.add(join_path(join_path(path, i), "name"),
                                  f"duplicate route name '{route.name}' (also routes[{names[route.name]}])")
            names.setdefault(route.name, i)
            # The later of two routes that match the same requests could never be reached.
            # Disjoint method sets on one path are fine; overlapping ones are an order question.
            same = (route.host, PATH_PARAM.sub("{}", route.path.rstrip("/") or "/"),
                    frozenset(route.methods) if route.methods is not None else None)
            if same in matches:
                j, other = matches[same]
                self.problems.add(join_path(path, i), f"same host, path and methods as routes[{j}] ('{other}')")
            matches.setdefault(same, (i, route.name))
            out.append(route)
        return tuple(out)

    def route(self, raw: Any, path: str, upstreams: Mapping[str, UpstreamConfig], auth: AuthConfig
              ) -> RouteConfig | None:
        kw = self.fields(raw, path, {
            "name": ("name", _str()),
            "path": ("path", _path),
            "methods": ("methods", _str_list(_method)),
            "host": ("host", lambda v: _str()(v).lower()),
            "upstream": ("upstream", _str()),
            "strip_prefix": ("strip_prefix", _bool),
            "rewrite_prefix": ("rewrite_prefix", _path),
            "auth": ("auth", _str(("required", "optional", "none"))),
            "scopes": ("scopes", _str_list()),
            "rate_limit": ("rate_limit", self.section(self.rate_limit, join_path(path, "rate_limit"))),
            "validate_json": ("validate_json", _bool),
            "request_headers": ("request_headers", self.section(self.header_rules, join_path(path, "request_headers"))),
            "response_headers": ("response_headers",
                                 self.section(self.header_rules, join_path(path, "response_headers"))),
            "timeout": ("timeout_seconds", _seconds()),
            "cors": ("cors", self.section(self.cors, join_path(path, "cors"))),
            "aggregate": ("aggregate", lambda v: self.aggregate(v, join_path(path, "aggregate"), upstreams)),
            "plugins": ("plugins", self.route_plugins),
            "auth_methods": ("auth_methods", _str_list(_auth_method)),
            "ip_allow": ("ip_allow", _str_list(_ip_rule)),
            "ip_deny": ("ip_deny", _str_list(_ip_rule)),
            "websocket": ("websocket", _bool),
            "websocket_idle_seconds": ("websocket_idle_seconds", _seconds()),
            "websocket_max_message_bytes": ("websocket_max_message_bytes", _int(minimum=1, maximum=1 << 30)),
            "cache": ("cache", self.section(self.cache, join_path(path, "cache"))),
            "compression": ("compression", self.section(self.route_compression, join_path(path, "compression"))),
        }, required=("name", "path"))
        if "name" not in kw or "path" not in kw:
            return None
        has_upstream, has_aggregate = "upstream" in kw, "aggregate" in kw
        if has_upstream == has_aggregate and not any(p.startswith(join_path(path, "aggregate")) for p in self.problems):
            self.problems.add(path, "needs exactly one of upstream or aggregate")
        if has_upstream and kw["upstream"] not in upstreams:
            self.problems.add(join_path(path, "upstream"), f"unknown upstream '{kw['upstream']}'")
        params = set(PATH_PARAM.findall(kw["path"]))
        if params and not has_aggregate:
            self.problems.add(join_path(path, "path"), "only aggregate routes may capture {params}")
        for j, part in enumerate(kw.get("aggregate") or ()):
            for name in sorted(set(PATH_PARAM.findall(part.path)) - params):
                self.problems.add(join_path(join_path(join_path(path, "aggregate"), j), "path"),
                                  f"'{{{name}}}' is not captured by the route's path")
        if has_aggregate and kw.get("methods") and set(kw["methods"]) - {"GET", "HEAD"}:
            self.problems.add(join_path(path, "methods"), "aggregate routes answer GET only")
        if has_aggregate:
            kw["methods"] = ("GET",)  # HEAD follows GET; anything else is a 405
        if kw.get("rewrite_prefix") and not kw.get("strip_prefix"):
            kw["strip_prefix"] = True  # a rewrite replaces the prefix, so it is stripped first
        configured = tuple(m for m, section in (("jwt", auth.jwt), ("api_key", auth.api_keys)) if section is not None)
        mode = kw.get("auth", "required" if configured else "none")
        if mode != "none" and not configured:
            self.problems.add(join_path(path, "auth"), f"'{mode}' needs auth.jwt or auth.api_keys to be configured")
        if kw.get("scopes") and mode == "none":
            self.problems.add(join_path(path, "scopes"), "scopes need auth: required or optional")
        kw["auth"] = mode
        kw["auth_methods"] = self.auth_methods(kw.get("auth_methods"), join_path(path, "auth_methods"), mode,
                                               configured)
        if "ip_allow" in kw and not kw["ip_allow"]:
            self.problems.add(join_path(path, "ip_allow"), "an empty allow list refuses every client: "
                                                          "list the CIDRs to let in, or leave the key out")
        self.route_websocket(kw, path)
        if kw.get("cache") is not None:
            if has_aggregate:
                self.problems.add(join_path(path, "cache"), "aggregate routes are not cached (only upstream answers are)")
            elif kw.get("methods") is not None and "GET" not in kw["methods"] and "HEAD" not in kw["methods"]:
                self.problems.add(join_path(path, "cache"), "the route serves no GET or HEAD: nothing could be cached")
        return RouteConfig(**kw)

    def auth_methods(self, methods: tuple[str, ...] | None, path: str, mode: str, configured: tuple[str, ...]
                     ) -> tuple[str, ...]:
        """A route's ``auth_methods``: default every configured method (none on an ``auth: none`` route)."""
        if methods is None:
            return configured if mode != "none" else ()
        if mode == "none":
            self.problems.add(path, "auth_methods need auth: required or optional")
            return ()
        if not methods:
            self.problems.add(path, "must name at least one of jwt, api_key")
        for method in methods:
            if method not in configured:
                section = "auth.jwt" if method == "jwt" else "auth.api_keys"
                self.problems.add(path, f"'{method}' needs {section} to be configured")
        if len(set(methods)) != len(methods):
            self.problems.add(path, "lists a method twice")
        return tuple(m for m in ("jwt", "api_key") if m in methods)

    def route_websocket(self, kw: dict[str, Any], path: str) -> None:
        """SPEC §6: a WebSocket route relays to one upstream and takes GET (the handshake); its limits
        mean nothing on a route that relays no upgrade, so setting them there is a mistake, said so."""
        if not kw.get("websocket"):
            for key in ("websocket_idle_seconds", "websocket_max_message_bytes"):
                if key in kw:
                    self.problems.add(join_path(path, key), "only applies to a route with websocket: true")
            return
        if "aggregate" in kw:
            self.problems.add(join_path(path, "websocket"), "an aggregate route cannot relay WebSockets")
        if kw.get("methods") is not None and "GET" not in kw["methods"]:
            self.problems.add(join_path(path, "methods"), "a websocket route must allow GET (the handshake)")

    def aggregate(self, raw: Any, path: str, upstreams: Mapping[str, UpstreamConfig]
                  ) -> tuple[AggregatePart, ...]:
        if not isinstance(raw, list) or not raw:
            raise _Invalid("expected a non-empty list of parts")
        out = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            where = join_path(path, i)
            kw = self.fields(item, where, {
                "name": ("name", _str()), "upstream": ("upstream", _str()), "path": ("path", _str()),
            }, required=("name", "upstream", "path"))
            if len(kw) != 3:
                continue
            if kw["upstream"] not in upstreams:
                self.problems.add(join_path(where, "upstream"), f"unknown upstream '{kw['upstream']}'")
            if not kw["path"].startswith("/"):
                self.problems.add(join_path(where, "path"), f"must start with '/', got '{kw['path']}'")
            if kw["name"] in seen:
                self.problems.add(join_path(where, "name"), f"duplicate part name '{kw['name']}'")
            seen.add(kw["name"])
            out.append(AggregatePart(**kw))
        return tuple(out)

    def compression(self, raw: Any, path: str) -> CompressionConfig | None:
        """The global ``compression`` section: a mapping (``{}`` for the defaults), ``true`` for the
        defaults, ``false`` or nothing for none."""
        if raw is None or raw is False:
            return None
        if raw is True:
            return CompressionConfig()
        kw = self.fields(raw, path, {
            "min_bytes": ("min_bytes", _int(0)),
            "types": ("types", _media_ranges),
            "encodings": ("encodings", _encodings),
            "gzip_level": ("gzip_level", _int(1, 9)),
            "brotli_quality": ("brotli_quality", _int(0, 11)),
        })
        return CompressionConfig(**kw)

    def route_compression(self, raw: Any, path: str) -> CompressionConfig | bool:
        """A route's ``compression``: ``false`` (off), ``true`` (the global section, or the defaults)
        or a mapping of its own (replacing the global section for this route)."""
        if isinstance(raw, bool):
            return raw
        if not isinstance(raw, dict):
            raise _Invalid(f"expected true, false or a mapping, got {_kind(raw)}")
        return self.compression(raw, path) or CompressionConfig()


def _media_ranges(value: Any) -> tuple[str, ...]:
    types = _str_list()(value)
    if not types:
        raise _Invalid("must name at least one type")
    for i, media in enumerate(types):
        if not _MEDIA_RANGE.match(media):
            raise _Invalid(f"item {i}: '{media}' is not a media type (type/subtype, type/*, type/*+suffix or */*)")
    return tuple(media.lower() for media in types)


def _encodings(value: Any) -> tuple[str, ...]:
    names = _str_list(_str(ENCODINGS))(value)
    if not names:
        raise _Invalid(f"must name at least one of {', '.join(ENCODINGS)}")
    if len(set(names)) != len(names):
        raise _Invalid("lists an encoding twice")
    return names
