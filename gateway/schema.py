"""The configuration file's JSON Schema (draft 2020-12), generated from pydantic models.

:func:`config_schema` is what ``gateway schema`` prints and what ``conf/gateway.schema.json``
holds (a test keeps the two equal). The models below describe the YAML *as written*: the
keys an operator types (``connect_timeout``, ``class``, ``timeout``), with units, defaults,
bounds and choices, so an editor (yaml-language-server) can complete and check a file.
Defaults and choices come from :mod:`gateway.config` and :mod:`gateway.tables`, not copies.

``${VAR}`` references: the schema checks the file as the editor sees it, before substitution.
Wherever a scalar may stand, a string holding a reference (``port: ${GATEWAY_PORT:-8080}``)
is also accepted (``$defs/EnvRef``); what the reference turns into is the loader's to check.

Contract: the schema accepts every configuration :func:`gateway.loader.parse_config`
accepts and rejects unknown keys and values of the wrong type (``additionalProperties:
false`` on every section). It is looser than the loader where JSON Schema cannot say it
(cross-references between sections, an HS secret's length, whether a file exists).
"""

# The models describe the file as written; their defaults come from gateway.config's dataclasses, whose
# types are the loaded ones (str, tuple), narrower than the written ones (Literal | EnvRef, str | list), and a
# key that is absent by default has a None default without accepting null. Both are right for the schema.
# mypy: disable-error-code="assignment, arg-type"

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from .compression import ENCODINGS
from .config import (
    AdminConfig,
    ApiKeysConfig,
    CacheConfig,
    CircuitBreakerConfig,
    CompressionConfig,
    CorsConfig,
    GatewayConfig,
    HealthCheckConfig,
    JwtConfig,
    LoggingConfig,
    RateLimitConfig,
    RetryConfig,
    RouteConfig,
    ServerConfig,
    TracingConfig,
    UpstreamConfig,
)
from .tables import JWT_ALGORITHMS, PROXIED_METHODS

__all__ = ["SCHEMA_DIALECT", "ConfigFile", "config_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# The header-name token of RFC 9110 (the loader's _HEADER_NAME).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


def _any_case(word: str) -> str:
    """A regex matching ``word`` in any letter case, without flags (JSON Schema regexes have none)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


class EnvRef(RootModel[str]):
    """A string holding a ``${VAR}`` or ``${VAR:-default}`` reference, replaced from the environment
    when the file is loaded; the loader checks the value it turns into."""

    root: str = Field(pattern=r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}")


# --- scalar types, each also accepting a ${VAR} reference ---
Bool = bool | EnvRef
NonNegativeInt = Annotated[int, Field(ge=0)] | EnvRef
PositiveInt = Annotated[int, Field(ge=1)] | EnvRef
Port = Annotated[int, Field(ge=0, le=65535)] | EnvRef
Seconds = Annotated[float, Field(gt=0)] | EnvRef  # greater than 0
SecondsOrZero = Annotated[float, Field(ge=0)] | EnvRef
Text = Annotated[str, Field(min_length=1)]  # any non-empty string (a reference is one)
TextList = Text | list[Text]  # a single string is a one-item list
HeaderName = Annotated[str, Field(pattern=f"^{_TOKEN}$")] | EnvRef
HeaderNames = HeaderName | list[HeaderName]
HeaderValue = Annotated[str, Field(pattern=r"^[^\r\n]*$")] | int | float
# Starts with '/', no '//', no '.' or '..' segment, no query or fragment (the loader's _path).
Path = Annotated[str, Field(pattern=r"^(?!.*//)(?!.*/\.\.?(/|$))/[^?#]*$")] | EnvRef
Method = Annotated[str, Field(pattern=f"^({'|'.join(_any_case(m) for m in PROXIED_METHODS)})$")] | EnvRef
Methods = Method | list[Method]
Algorithm = Annotated[str, WithJsonSchema({"enum": sorted(JWT_ALGORITHMS)})] | EnvRef
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^/?#]+")] | EnvRef
_MEDIA_TOKEN = r"[!#$%&'+.^_`|~0-9A-Za-z-]+"  # a token without '*' (the loader's)
MediaRange = Annotated[str, Field(pattern=rf"^(\*/\*|{_MEDIA_TOKEN}/(\*|\*\+{_MEDIA_TOKEN}|{_MEDIA_TOKEN}))$")] | EnvRef
Encoding = Literal[ENCODINGS] | EnvRef  # type: ignore[valid-type]  # the choices of gateway.compression


class _Section(BaseModel):
    # python-re: the clean-path pattern needs look-ahead, which pydantic's default engine lacks.
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


class ServerTls(_Section):
    """TLS on the main listener."""

    certfile: Text = Field(description="PEM certificate chain; a relative path is relative to this file")
    keyfile: Text = Field(description="PEM private key")


class Server(_Section):
    """The main listener."""

    host: Text = Field(ServerConfig.host, description="address to listen on")
    port: Port = Field(ServerConfig.port, description="TCP port")
    processes: Annotated[int, Field(ge=0, le=1024)] | EnvRef = Field(
        ServerConfig.processes, description="worker processes; 0 = one per CPU core")
    max_body_bytes: NonNegativeInt = Field(ServerConfig.max_body_bytes, description="largest request body, bytes")
    trusted_proxies: TextList = Field(default_factory=list, description="CIDRs whose X-Forwarded-For is believed")
    drain_seconds: SecondsOrZero = Field(ServerConfig.drain_seconds,
                                         description="on SIGTERM, seconds to finish requests in flight")
    body_timeout_seconds: Seconds = Field(ServerConfig.body_timeout_seconds,
                                          description="a request body silent this long is answered 408, seconds")
    tls: ServerTls | None = None


class Admin(_Section):
    """The admin listener (health, readiness, metrics)."""

    host: Text = Field(AdminConfig.host, description="address to listen on")
    port: Port = Field(AdminConfig.port, description="TCP port; 0 = an ephemeral port, logged at start")
    token: Annotated[str, Field(pattern=r"^(?=.{32,}$)[A-Za-z0-9\-._~+/]+=*$")] | EnvRef | None = Field(
        AdminConfig.token, description="when set, every admin data endpoint needs Authorization: Bearer <token>; "
                                       "at least 32 bytes (e.g. `openssl rand -hex 32`)")


class Jwt(_Section):
    """JWT bearer tokens. HS* need ``secret``; public-key algorithms need one of
    ``public_key_file`` or ``jwks_url``; the two families do not mix."""

    algorithms: Algorithm | list[Algorithm] = Field(default_factory=lambda: list(JwtConfig.algorithms),
                                                    description="accepted JWS algorithms ('none' never is)")
    secret: str = Field(default=None, description="HMAC secret; at least as many bytes as the hash")
    public_key_file: Text = Field(default=None, description="PEM public key")
    jwks_url: HttpUrl = Field(default=None, description="JWKS endpoint, http(s)")
    jwks_refresh_seconds: Seconds = Field(JwtConfig.jwks_refresh_seconds, description="JWKS refresh, seconds")
    issuer: Text = Field(default=None, description="required iss claim")
    audience: TextList = Field(default_factory=list, description="accepted aud values")
    leeway_seconds: SecondsOrZero = Field(JwtConfig.leeway_seconds, description="clock skew allowed, seconds")
    required_claims: TextList = Field(default_factory=lambda: list(JwtConfig.required_claims))
    scope_claim: Text = Field(JwtConfig.scope_claim, description="the claim that holds the scopes")
    claims_to_headers: dict[str, HeaderName] = Field(default_factory=dict,
                                                     description="claim -> request header set upstream")
    forward_authorization: Bool = Field(JwtConfig.forward_authorization,
                                        description="pass the Authorization header upstream")
    max_token_bytes: Annotated[int, Field(ge=256)] | EnvRef = Field(JwtConfig.max_token_bytes,
                                                                    description="longest token, bytes")
    cache_size: NonNegativeInt = Field(JwtConfig.cache_size, description="verified tokens kept; 0 disables")


class ApiKeyConsumer(_Section):
    """One API key and who it speaks for; exactly one of ``key`` or ``key_sha256``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["key"]}, {"required": ["key_sha256"]}]})
    subject: Text = Field(description="the caller's identity, as a token's sub claim")
    key: Annotated[str, Field(pattern=r"^[!-~]{16,1024}$")] | EnvRef = Field(
        default=None, description="the key itself (16-1024 printable ASCII), e.g. ${PARTNER_KEY}; hashed at load")
    key_sha256: Annotated[str, Field(pattern="^[0-9a-fA-F]{64}$")] | EnvRef = Field(
        default=None, description="SHA-256 of the key, hex (`gateway key --subject S` prints it)")
    scopes: TextList = Field(default_factory=list, description="the consumer's scopes")


class ApiKeys(_Section):
    """API keys: consumers identified by a key in one request header."""

    header: HeaderName = Field(ApiKeysConfig.header, description="the request header that carries the key")
    consumers: list[ApiKeyConsumer] = Field(min_length=1)
    claims_to_headers: dict[Literal["sub", "scope"], HeaderName] = Field(
        default_factory=dict, description="identity headers when auth.jwt is absent (else its claims_to_headers)")


class Auth(_Section):
    jwt: Jwt | None = None
    api_keys: ApiKeys | None = None


class Target(_Section):
    url: HttpUrl = Field(description="http(s)://host[:port][/base-path]")
    weight: Annotated[int, Field(ge=1, le=1000)] | EnvRef = 1


class Retry(_Section):
    attempts: Annotated[int, Field(ge=1, le=10)] | EnvRef = Field(RetryConfig.attempts,
                                                                  description="tries in all, the first included")
    backoff_seconds: SecondsOrZero = RetryConfig.backoff_seconds
    max_backoff_seconds: SecondsOrZero = RetryConfig.max_backoff_seconds
    on_statuses: list[Annotated[int, Field(ge=100, le=599)] | EnvRef] = Field(
        default_factory=lambda: list(RetryConfig.on_statuses), description="upstream statuses retried")
    budget_ratio: SecondsOrZero = Field(RetryConfig.budget_ratio,
                                        description="retries add at most this share of extra load")
    replay_buffer_bytes: NonNegativeInt = Field(RetryConfig.replay_buffer_bytes,
                                                description="bodies up to this size are buffered and replayable")


class HealthCheck(_Section):
    """Active health checks (present, even empty, turns them on)."""

    path: Path = HealthCheckConfig.path
    interval_seconds: Seconds = HealthCheckConfig.interval_seconds
    timeout_seconds: Seconds = HealthCheckConfig.timeout_seconds
    healthy_threshold: PositiveInt = HealthCheckConfig.healthy_threshold
    unhealthy_threshold: PositiveInt = HealthCheckConfig.unhealthy_threshold


class CircuitBreaker(_Section):
    failure_threshold: PositiveInt = CircuitBreakerConfig.failure_threshold
    open_seconds: Seconds = CircuitBreakerConfig.open_seconds


class UpstreamTls(_Section):
    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"certfile": ["keyfile"],
                                                                       "keyfile": ["certfile"]}})
    ca_file: Text = Field(default=None, description="PEM CA bundle to verify the upstream with")
    certfile: Text = Field(default=None, description="client certificate (with keyfile)")
    keyfile: Text = Field(default=None, description="client key (with certfile)")


class Upstream(_Section):
    targets: list[HttpUrl | Target] = Field(min_length=1, description="where requests go: URLs or {url, weight}")
    balance: Literal["round_robin", "least_conn", "random"] | EnvRef = UpstreamConfig.balance
    connect_timeout: Seconds = Field(UpstreamConfig.connect_timeout_seconds, description="seconds")
    request_timeout: Seconds = Field(UpstreamConfig.request_timeout_seconds, description="seconds")
    retry: Retry | None = None
    health_check: HealthCheck | None = None
    circuit_breaker: CircuitBreaker | None = None
    tls: UpstreamTls | None = None
    max_idle_connections: NonNegativeInt = Field(UpstreamConfig.max_idle_connections,
                                                 description="kept-alive idle connections per target")


class Cors(_Section):
    allow_origins: TextList = Field(default_factory=list, description="origins, or '*'")
    allow_methods: Methods = Field(default_factory=lambda: list(CorsConfig.allow_methods))
    allow_headers: HeaderNames = Field(default_factory=lambda: list(CorsConfig.allow_headers))
    expose_headers: HeaderNames = Field(default_factory=list)
    allow_credentials: Bool = CorsConfig.allow_credentials
    max_age_seconds: NonNegativeInt = CorsConfig.max_age_seconds


class RateLimit(_Section):
    requests: PositiveInt = Field(description="requests allowed per window")
    window_seconds: Seconds = Field(description="the window, seconds")
    key: Annotated[str, Field(pattern=f"^(subject|ip|header:{_TOKEN})$")] | EnvRef = Field(
        RateLimitConfig.key, description="subject | ip | header:NAME")


class HeaderRules(_Section):
    set: dict[Annotated[str, Field(pattern=f"^{_TOKEN}$")], HeaderValue] = Field(default_factory=dict)
    remove: HeaderNames = Field(default_factory=list)


class Cache(_Section):
    """GET/HEAD 200 answers kept (SPEC §8)."""

    ttl_seconds: Seconds = Field(CacheConfig.ttl_seconds, description=(
        "freshness when the upstream gives none (max-age, s-maxage, Expires), and the cap on what it gives, seconds"))
    shared: Bool = Field(CacheConfig.shared, description=(
        "on an authenticated route: one entry for every caller instead of one per subject"))
    max_entry_bytes: PositiveInt = Field(CacheConfig.max_entry_bytes,
                                         description="larger answers stream through uncached, bytes")


class AggregatePart(_Section):
    name: Text
    upstream: Text = Field(description="a name from upstreams")
    path: Annotated[str, Field(pattern="^/")] | EnvRef = Field(
        description="may hold {param} placeholders captured by the route's path")


class Compression(_Section):
    """gzip and br of answers whose type matches (SPEC §8)."""

    min_bytes: NonNegativeInt = Field(CompressionConfig.min_bytes,
                                      description="a declared Content-Length below this is not compressed, bytes")
    types: MediaRange | list[MediaRange] = Field(
        default_factory=lambda: list(CompressionConfig.types),
        description="Content-Types compressed: type/subtype, type/*, type/*+suffix or */* (parameters ignored)")
    encodings: Encoding | list[Encoding] = Field(
        default_factory=lambda: list(CompressionConfig.encodings),
        description="offered codings, preferred first when the client weighs them equally")
    gzip_level: Annotated[int, Field(ge=1, le=9)] | EnvRef = Field(CompressionConfig.gzip_level,
                                                                   description="zlib level 1-9")
    brotli_quality: Annotated[int, Field(ge=0, le=11)] | EnvRef = Field(CompressionConfig.brotli_quality,
                                                                        description="brotli quality 0-11")


class Route(_Section):
    """One route; exactly one of ``upstream`` or ``aggregate``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["upstream"]},
                                                           {"required": ["aggregate"]}]})
    name: Text
    path: Path = Field(description="a prefix; {param} segments only on aggregate routes")
    upstream: Text = Field(default=None, description="a name from upstreams")
    methods: Methods = Field(default=None, description="default: every method")
    host: Text = Field(default=None, description="match this Host only")
    strip_prefix: Bool = RouteConfig.strip_prefix
    rewrite_prefix: Path = Field(default=None, description="replaces the matched prefix (implies strip_prefix)")
    auth: Literal["required", "optional", "none"] | EnvRef = Field(
        default=None, description="default: required when auth.jwt is configured, else none")
    scopes: TextList = Field(default_factory=list, description="all needed (auth required or optional)")
    rate_limit: RateLimit | None = None
    validate_json: Bool = RouteConfig.validate_json
    request_headers: HeaderRules | None = None
    response_headers: HeaderRules | None = None
    timeout: Seconds = Field(default=None, description="overrides the upstream's request_timeout, seconds")
    cors: Cors | None = Field(default=None, description="overrides the global cors section")
    aggregate: list[AggregatePart] = Field(default=None, min_length=1,
                                           description="GET several upstreams and merge their JSON")
    plugins: TextList = Field(default_factory=list, description="names from plugins, run in this order")
    auth_methods: Literal["jwt", "api_key"] | list[Literal["jwt", "api_key"]] = Field(
        default=None, description="credentials this route accepts; default: every configured one")
    ip_allow: TextList = Field(default=None, description="CIDRs let in (the client address after trusted_proxies)")
    ip_deny: TextList = Field(default=None, description="CIDRs refused with 403; deny wins over allow")
    websocket: Bool = Field(RouteConfig.websocket, description="relay Upgrade: websocket handshakes (SPEC §6)")
    websocket_idle_seconds: Seconds = Field(RouteConfig.websocket_idle_seconds,
                                            description="no frame either way this long: close 1001 (websocket routes)")
    websocket_max_message_bytes: PositiveInt = Field(RouteConfig.websocket_max_message_bytes,
                                                     description="a larger message: close 1009 (websocket routes)")
    cache: Cache | None = Field(default=None, description="keep GET/HEAD answers (upstream routes)")
    compression: Bool | Compression = Field(
        default=None, description="false: off; true: the global section (or the defaults); or the route's own")


class Plugin(_Section):
    name: Text
    class_: Text = Field(alias="class", description="path/to/file.py:Class or package.module:Class")
    config: dict[str, Any] | None = Field(default=None, description="passed to the plugin")


class Logging(_Section):
    level: Literal["debug", "info", "warning", "error"] | EnvRef = LoggingConfig.level
    format: Literal["json", "text"] | EnvRef = LoggingConfig.format
    access_log: Bool = LoggingConfig.access_log


class Tracing(_Section):
    """OpenTelemetry spans (a server span per request, a client span per upstream try), exported in
    batches over OTLP/HTTP (protobuf). Absent: no span is made."""

    otlp_endpoint: HttpUrl = Field(TracingConfig.otlp_endpoint,
                                   description="the collector's OTLP/HTTP traces URL; no path: /v1/traces")
    service_name: Text = Field(TracingConfig.service_name, description="the service.name resource attribute")
    sample_ratio: Annotated[float, Field(ge=0, le=1)] | EnvRef = Field(
        TracingConfig.sample_ratio, description="share of new traces recorded (a caller's sampled flag is followed)")
    max_queue_spans: Annotated[int, Field(ge=1, le=1_000_000)] | EnvRef = Field(
        TracingConfig.max_queue_spans, description="finished spans waiting for export; beyond: dropped and counted")
    max_batch_spans: Annotated[int, Field(ge=1, le=100_000)] | EnvRef = Field(
        TracingConfig.max_batch_spans, description="spans per export request (at most max_queue_spans)")
    export_interval_seconds: Seconds = Field(TracingConfig.export_interval_seconds,
                                             description="a partial batch waits at most this long, seconds")
    export_timeout_seconds: Seconds = Field(TracingConfig.export_timeout_seconds,
                                            description="one export request, connect and answer, seconds")


class ConfigFile(_Section):
    """The gateway's configuration file (SPEC §3)."""

    model_config = ConfigDict(title="gateway configuration")
    server: Server | None = None
    admin: Admin | None = None
    auth: Auth | None = None
    upstreams: dict[str, Upstream] | None = Field(default=None, description="name -> upstream")
    routes: list[Route] | None = Field(default=None, description="matched longest path first")
    rate_limit_store: Annotated[str, Field(pattern="^(memory|rediss?://.+)$")] | EnvRef = Field(
        GatewayConfig.rate_limit_store, description="memory | redis://host:port/db")
    rate_limit_fail_open: Bool = Field(GatewayConfig.rate_limit_fail_open,
                                       description="serve when the rate-limit store is down")
    cors: Cors | None = None
    logging: Logging | None = None
    plugins: list[Plugin] | None = None
    cache_store: Annotated[str, Field(pattern="^(memory|rediss?://.+)$")] | EnvRef = Field(
        GatewayConfig.cache_store, description="memory | redis://host:port/db (shared by every instance)")
    cache_max_bytes: Annotated[int, Field(ge=1024)] | EnvRef = Field(
        GatewayConfig.cache_max_bytes, description="the memory cache store's bound (least recently used out), bytes")
    compression: Bool | Compression | None = Field(
        default=None, description="gzip/br of matching answers, for every route that does not say otherwise")
    tracing: Tracing | None = None


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a configuration file, keys as written in YAML."""
    schema = ConfigFile.model_json_schema(by_alias=True)
    return {"$schema": SCHEMA_DIALECT, **schema}
