"""Typed, immutable configuration: one frozen dataclass per section of SPEC §3.

The loader (:mod:`gateway.loader`) is the only producer of these objects and
has already validated every value; everything else only reads them. Units are
in the names (``*_seconds``, ``*_bytes``). Each part of the gateway receives
its own section; only what assembles a process (the command line, logging setup,
:mod:`gateway.process`, :mod:`gateway.server` and :mod:`gateway.runtime`) reads
the whole :class:`GatewayConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """A configuration that cannot be served. ``problems`` lists every one, each with its location."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ListenError(Exception):
    """A listener that cannot be opened (address in use, no permission, unknown host): one line
    that names the section and the address, e.g. ``server: cannot listen on 127.0.0.1:8080:
    Address already in use``. Unlike a :class:`ConfigError` the file may be fine."""


@dataclass(frozen=True)
class ServerTls:
    certfile: str
    keyfile: str


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 1  # 0 = one per CPU core
    max_body_bytes: int = 10 * 1024 * 1024
    trusted_proxies: tuple[str, ...] = ()  # CIDRs, validated by the loader
    drain_seconds: float = 10.0
    body_timeout_seconds: float = 60.0  # a request body silent this long: 408
    tls: ServerTls | None = None


@dataclass(frozen=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8081  # 0 = an ephemeral port, logged at start
    token: str | None = None  # when set, every admin data endpoint needs Authorization: Bearer <token>


@dataclass(frozen=True)
class JwtConfig:
    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = None
    public_key_file: str | None = None
    jwks_url: str | None = None
    jwks_refresh_seconds: float = 300.0
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway_seconds: float = 0.0
    required_claims: tuple[str, ...] = ("exp",)
    scope_claim: str = "scope"
    claims_to_headers: Mapping[str, str] = field(default_factory=dict)
    forward_authorization: bool = True
    max_token_bytes: int = 8192
    cache_size: int = 10000  # verified tokens kept; 0 disables the cache


@dataclass(frozen=True)
class ApiKeyConsumer:
    """One API key: who it speaks for. The loader hashes a plaintext ``key`` at load, so only
    the digest is kept (no plaintext key in this object, its repr or a dump of it)."""

    subject: str
    key_sha256: bytes  # the 32-byte SHA-256 digest of the key
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiKeysConfig:
    header: str = "X-Api-Key"
    consumers: tuple[ApiKeyConsumer, ...] = ()
    # Identity headers for consumers when auth.jwt is absent (with auth.jwt, its claims_to_headers apply):
    # claim (sub, scope) -> header.
    claims_to_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthConfig:
    jwt: JwtConfig | None = None
    api_keys: ApiKeysConfig | None = None


@dataclass(frozen=True)
class Origin:
    """Where a target lives: what a pooled connection is keyed by."""

    scheme: str  # http | https
    host: str
    port: int

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


@dataclass(frozen=True)
class TargetConfig:
    url: str  # as written, for humans and metrics labels
    origin: Origin
    base_path: str = ""  # a path in the target URL is put before every forwarded path
    weight: int = 1


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 1  # tries in all, the first included
    backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0
    on_statuses: tuple[int, ...] = (502, 503, 504)
    budget_ratio: float = 0.2  # retries may add at most this share of extra load
    replay_buffer_bytes: int = 1024 * 1024  # bodies up to this size are buffered and replayable


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str = "/health"
    interval_seconds: float = 5.0
    timeout_seconds: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True)
class CircuitBreakerConfig:
    failure_threshold: int = 5
    open_seconds: float = 30.0


@dataclass(frozen=True)
class UpstreamTls:
    ca_file: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    targets: tuple[TargetConfig, ...]
    balance: str = "round_robin"  # round_robin | least_conn | random
    connect_timeout_seconds: float = 2.0
    request_timeout_seconds: float = 30.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    health_check: HealthCheckConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    tls: UpstreamTls | None = None
    max_idle_connections: int = 64  # kept-alive idle connections per target


@dataclass(frozen=True)
class CorsConfig:
    allow_origins: tuple[str, ...] = ()  # "*" allowed
    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    allow_headers: tuple[str, ...] = ("Authorization", "Content-Type")
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_seconds: int = 600


@dataclass(frozen=True)
class RateLimitConfig:
    requests: int
    window_seconds: float
    key: str = "subject"  # subject | ip | header:NAME


@dataclass(frozen=True)
class HeaderRules:
    set: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheConfig:
    """A route's response cache (SPEC §8; gateway.cache)."""

    ttl_seconds: float = 60.0  # freshness when the upstream gives none, and the cap on what it gives
    shared: bool = False  # on an authenticated route: one entry for every caller (else one per subject)
    max_entry_bytes: int = 1024 * 1024  # larger answers stream through uncached


@dataclass(frozen=True)
class AggregatePart:
    name: str
    upstream: str
    path: str  # may hold {param} placeholders captured by the route's path


@dataclass(frozen=True)
class CompressionConfig:
    """``compression`` (SPEC §8): gzip and br of answers whose type matches, over ``min_bytes``."""

    min_bytes: int = 1024  # a declared Content-Length below this is sent as it is
    types: tuple[str, ...] = ("application/json", "text/*")  # type/subtype, type/* or */*; parameters ignored
    encodings: tuple[str, ...] = ("br", "gzip")  # offered, in the gateway's order of preference on equal q
    gzip_level: int = 1  # zlib 1-9; 1 is nginx's default and costs a third of 6 (README, Compression)
    brotli_quality: int = 1  # brotli 0-11; 1 is smaller than gzip's 6 on JSON, at the CPU of gzip's 1


@dataclass(frozen=True)
class RouteConfig:
    name: str
    path: str
    upstream: str | None = None
    methods: tuple[str, ...] | None = None  # None = every method
    host: str | None = None
    strip_prefix: bool = False
    rewrite_prefix: str | None = None
    auth: str = "none"  # required | optional | none (the loader applies SPEC's default)
    scopes: tuple[str, ...] = ()
    rate_limit: RateLimitConfig | None = None
    validate_json: bool = False
    request_headers: HeaderRules = field(default_factory=HeaderRules)
    response_headers: HeaderRules = field(default_factory=HeaderRules)
    timeout_seconds: float | None = None
    cors: CorsConfig | None = None  # overrides the global section for this route
    aggregate: tuple[AggregatePart, ...] | None = None
    plugins: tuple[str, ...] = ()  # names from the plugins section, run in this order
    auth_methods: tuple[str, ...] = ()  # jwt | api_key; the loader fills in every configured one
    ip_allow: tuple[str, ...] = ()  # CIDRs, validated by the loader; empty: no allow list
    ip_deny: tuple[str, ...] = ()  # CIDRs; deny wins over allow
    websocket: bool = False  # relay `Upgrade: websocket` handshakes (SPEC §6)
    websocket_idle_seconds: float = 300.0  # a socket with no frame either way this long: close 1001
    websocket_max_message_bytes: int = 1024 * 1024  # a larger message: close 1009
    cache: CacheConfig | None = None  # GET/HEAD answers kept (SPEC §8)
    # None: the global section; False: off; True: the global section or the defaults; or the route's own
    compression: CompressionConfig | bool | None = None


@dataclass(frozen=True)
class PluginConfig:
    """One entry of ``plugins:`` (SPEC §7), its plugin already built by the loader."""

    name: str
    class_path: str  # as written: path/to/file.py:Class or package.module:Class
    config: Mapping[str, Any]
    plugin: Any = field(compare=False, repr=False)  # a gateway.plugin.Plugin: config sits below the plugin API


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"  # json | text
    access_log: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    rate_limit_store: str = "memory"  # memory | redis://host:port/db
    rate_limit_fail_open: bool = True
    cors: CorsConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    plugins: tuple[PluginConfig, ...] = ()
    source: str = ""  # the file it came from
    cache_store: str = "memory"  # memory | redis://host:port/db (shared by every instance)
    cache_max_bytes: int = 64 * 1024 * 1024  # the memory store's bound (LRU)
    compression: CompressionConfig | None = None  # off unless given
