"""The configuration file, described once: pydantic models that validate it and print its JSON Schema.

:mod:`gateway.loader` validates a file with :class:`ConfigFile` (strict: every value by its type in
:mod:`gateway.configtypes`, unknown keys refused) and builds the frozen dataclasses of
:mod:`gateway.config` from it; :func:`config_schema` is what ``gateway schema`` prints and what
``conf/gateway.schema.json`` holds (a test keeps the two equal), so an editor (yaml-language-server)
completes and checks a file against the same description.

How a model maps onto its dataclass (:func:`gateway.loader.build`): ``builds`` names the dataclass; a
field's name is the dataclass attribute and its ``alias``, if any, the key an operator types
(``connect_timeout_seconds`` / ``connect_timeout``); a key not given is not passed, so the
dataclass's default applies (defaults shown in the schema are read from the dataclasses, not copied).
A section in a mapping (``upstreams``) gets its key as ``name``. A field of ``into`` loads into an
attribute of another name (``key`` / ``key_sha256`` of an API key consumer: a plaintext key is hashed at
load, so both are the digest). ``true | false | section`` keys (``compression``) are a tagged union, as
a target is (URL or section); :data:`TAGS` are the branch names, left out of the problems' locations.

``${VAR}`` references: the schema checks the file as the editor sees it, before substitution;
wherever a scalar may stand, a string holding a reference is also accepted (``$defs/EnvRef``).
The loader validates the values the references turn into.

What the models cannot say (cross-references between sections, an HS secret's length, exactly one
of ``upstream`` or ``aggregate``) is :mod:`gateway.configchecks`'s, a pass after validation; the
schema is there looser than the loader.
"""

# The models' defaults come from gateway.config's dataclasses, whose types are the loaded ones (tuple), and
# a key that is absent by default has a None default without accepting null (so such a field is None when
# the key is not given, which gateway.configchecks tests). Both are right for the schema and the loader.
# mypy: disable-error-code="assignment, arg-type"

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from . import config
from .configtypes import (
    NULL_IS_EMPTY,
    AdminToken,
    Algorithms,
    AnyText,
    AuthMethods,
    Bool,
    Choice,
    Cidrs,
    ClaimHeaders,
    Encodings,
    File,
    HeaderMap,
    HeaderNames,
    HttpUrl,
    Int,
    IpRules,
    KeyClaimHeaders,
    KeyDigest,
    KeyHeader,
    LowerText,
    MediaRanges,
    Methods,
    Name,
    NonNegativeInt,
    OtlpEndpoint,
    PartPath,
    Path,
    PlaintextKey,
    PluginConfigMap,
    Port,
    PositiveInt,
    RateLimitKey,
    RateLimitStore,
    Ratio,
    Seconds,
    SecondsOrZero,
    Statuses,
    Subject,
    TargetUrl,
    Text,
    TextList,
    bool_or_section,
    either,
    expect,
)

__all__ = ["SCHEMA_DIALECT", "TAGS", "ConfigFile", "Section", "config_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class Section(BaseModel):
    """One section of the file: its keys are the fields (by alias); any other key is refused."""

    # python-re: the clean-path pattern needs look-ahead, which pydantic's default engine lacks.
    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")
    builds: ClassVar[Any]  # the gateway.config dataclass this section loads into
    # A field loaded into a dataclass attribute of another name ({field: attribute}); the checks make sure
    # that at most one field of those naming one attribute is given (an API key or its digest).
    into: ClassVar[dict[str, str]] = {}


class ServerTls(Section):
    """TLS on the main listener."""

    builds = config.ServerTls
    certfile: File = Field(description="PEM certificate chain; a relative path is relative to this file")
    keyfile: File = Field(description="PEM private key")


class Server(Section):
    """The main listener."""

    builds = config.ServerConfig
    host: Text = Field(config.ServerConfig.host, description="address to listen on")
    port: Port = Field(config.ServerConfig.port, description="TCP port")
    processes: Annotated[int, Int(ge=0, le=1024)] = Field(
        config.ServerConfig.processes, description="worker processes; 0 = one per CPU core")
    max_body_bytes: NonNegativeInt = Field(config.ServerConfig.max_body_bytes, description="largest request body, bytes")
    trusted_proxies: Cidrs = Field(default_factory=tuple, description="CIDRs whose X-Forwarded-For is believed")
    drain_seconds: SecondsOrZero = Field(config.ServerConfig.drain_seconds,
                                         description="on SIGTERM, seconds to finish requests in flight")
    body_timeout_seconds: Seconds = Field(config.ServerConfig.body_timeout_seconds,
                                          description="a request body silent this long is answered 408, seconds")
    tls: ServerTls | None = None


class Admin(Section):
    """The admin listener (health, readiness, metrics)."""

    builds = config.AdminConfig
    host: Text = Field(config.AdminConfig.host, description="address to listen on")
    port: Port = Field(config.AdminConfig.port, description="TCP port; 0 = an ephemeral port, logged at start")
    token: AdminToken = Field(default=None, description=(
        "when set, every admin data endpoint needs Authorization: Bearer <token>; "
        "at least 32 bytes (e.g. `openssl rand -hex 32`)"))


class Jwt(Section):
    """JWT bearer tokens. HS* need ``secret``; public-key algorithms need one of
    ``public_key_file`` or ``jwks_url``; the two families do not mix."""

    builds = config.JwtConfig
    algorithms: Algorithms = Field(default_factory=lambda: config.JwtConfig.algorithms,
                                   description="accepted JWS algorithms ('none' never is)")
    secret: AnyText = Field(default=None, description="HMAC secret; at least as many bytes as the hash")
    public_key_file: File = Field(default=None, description="PEM public key")
    jwks_url: HttpUrl = Field(default=None, description="JWKS endpoint, http(s)")
    jwks_refresh_seconds: Seconds = Field(config.JwtConfig.jwks_refresh_seconds, description="JWKS refresh, seconds")
    issuer: Text = Field(default=None, description="required iss claim")
    audience: TextList = Field(default_factory=tuple, description="accepted aud values")
    leeway_seconds: SecondsOrZero = Field(config.JwtConfig.leeway_seconds, description="clock skew allowed, seconds")
    required_claims: TextList = Field(default_factory=lambda: config.JwtConfig.required_claims)
    scope_claim: Text = Field(config.JwtConfig.scope_claim, description="the claim that holds the scopes")
    claims_to_headers: ClaimHeaders = Field(default_factory=dict, description="claim -> request header set upstream")
    forward_authorization: Bool = Field(config.JwtConfig.forward_authorization,
                                        description="pass the Authorization header upstream")
    max_token_bytes: Annotated[int, Int(ge=256)] = Field(config.JwtConfig.max_token_bytes,
                                                         description="longest token, bytes")
    cache_size: NonNegativeInt = Field(config.JwtConfig.cache_size, description="verified tokens kept; 0 disables")


class ApiKeyConsumer(Section):
    """One API key and who it speaks for; exactly one of ``key`` or ``key_sha256`` (both load as the
    digest: the plaintext key is hashed at load and not kept)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["key"]}, {"required": ["key_sha256"]}]})
    builds = config.ApiKeyConsumer
    into = {"key": "key_sha256"}
    subject: Subject = Field(description="the caller's identity, as a token's sub claim")
    key: PlaintextKey = Field(
        default=None, description="the key itself (16-1024 printable ASCII), e.g. ${PARTNER_KEY}; hashed at load")
    key_sha256: KeyDigest = Field(default=None, description="SHA-256 of the key, hex (`gateway key --subject S` prints it)")
    scopes: TextList = Field(default_factory=tuple, description="the consumer's scopes")


class ApiKeys(Section):
    """API keys: consumers identified by a key in one request header."""

    builds = config.ApiKeysConfig
    header: KeyHeader = Field(config.ApiKeysConfig.header, description="the request header that carries the key")
    consumers: Annotated[list[Annotated[ApiKeyConsumer, NULL_IS_EMPTY]], Field(min_length=1),
                         expect(list, "a non-empty list of consumers", nonempty=True, got=False)]
    claims_to_headers: KeyClaimHeaders = Field(
        default_factory=dict, description="identity headers when auth.jwt is absent (else its claims_to_headers)")


class Auth(Section):
    builds = config.AuthConfig
    jwt: Jwt | None = None
    api_keys: ApiKeys | None = None


class Target(Section):
    builds = config.TargetConfig  # built by gateway.loader (origin and base path from the URL)
    url: TargetUrl = Field(description="http(s)://host[:port][/base-path]")
    weight: Annotated[int, Int(ge=1, le=1000)] = 1


# A section in a list or mapping given as null is the section with no keys (``routes: [~]`` is a route
# without its name and path), as for a section key given with no value (configtypes.NULL_IS_EMPTY).
# A target is a URL or {url, weight}; the tags pick the branch (no per-branch error noise) and are
# left out of the locations by gateway.configerrors.
TAGS = frozenset({"<url>", "<target>", "<bool>", "<section>"})
TargetEntry = Annotated[Annotated[TargetUrl, Tag("<url>")] | Annotated[Target, NULL_IS_EMPTY, Tag("<target>")],
                        Discriminator(lambda value: "<url>" if isinstance(value, str) else "<target>")]


class Retry(Section):
    builds = config.RetryConfig
    attempts: Annotated[int, Int(ge=1, le=10)] = Field(config.RetryConfig.attempts,
                                                       description="tries in all, the first included")
    backoff_seconds: SecondsOrZero = config.RetryConfig.backoff_seconds
    max_backoff_seconds: SecondsOrZero = config.RetryConfig.max_backoff_seconds
    on_statuses: Statuses = Field(default_factory=lambda: config.RetryConfig.on_statuses,
                                  description="upstream statuses retried")
    budget_ratio: SecondsOrZero = Field(config.RetryConfig.budget_ratio,
                                        description="retries add at most this share of extra load")
    replay_buffer_bytes: NonNegativeInt = Field(config.RetryConfig.replay_buffer_bytes,
                                                description="bodies up to this size are buffered and replayable")


class HealthCheck(Section):
    """Active health checks (present, even empty, turns them on)."""

    builds = config.HealthCheckConfig
    path: Path = config.HealthCheckConfig.path
    interval_seconds: Seconds = config.HealthCheckConfig.interval_seconds
    timeout_seconds: Seconds = config.HealthCheckConfig.timeout_seconds
    healthy_threshold: PositiveInt = config.HealthCheckConfig.healthy_threshold
    unhealthy_threshold: PositiveInt = config.HealthCheckConfig.unhealthy_threshold


class CircuitBreaker(Section):
    builds = config.CircuitBreakerConfig
    failure_threshold: PositiveInt = config.CircuitBreakerConfig.failure_threshold
    open_seconds: Seconds = config.CircuitBreakerConfig.open_seconds


class UpstreamTls(Section):
    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"certfile": ["keyfile"],
                                                                       "keyfile": ["certfile"]}})
    builds = config.UpstreamTls
    ca_file: File = Field(default=None, description="PEM CA bundle to verify the upstream with")
    certfile: File = Field(default=None, description="client certificate (with keyfile)")
    keyfile: File = Field(default=None, description="client key (with certfile)")


class Upstream(Section):
    builds = config.UpstreamConfig
    targets: Annotated[list[TargetEntry], Field(min_length=1),
                       expect(list, "a non-empty list of targets", nonempty=True, got=False)] = Field(
        description="where requests go: URLs or {url, weight}")
    balance: Annotated[str, Choice("round_robin", "least_conn", "random")] = config.UpstreamConfig.balance
    connect_timeout_seconds: Seconds = Field(config.UpstreamConfig.connect_timeout_seconds, alias="connect_timeout",
                                             description="seconds")
    request_timeout_seconds: Seconds = Field(config.UpstreamConfig.request_timeout_seconds, alias="request_timeout",
                                             description="seconds")
    retry: Retry | None = None
    health_check: Annotated[HealthCheck | None, NULL_IS_EMPTY] = None
    circuit_breaker: Annotated[CircuitBreaker | None, NULL_IS_EMPTY] = None
    tls: Annotated[UpstreamTls | None, NULL_IS_EMPTY] = None
    max_idle_connections: NonNegativeInt = Field(config.UpstreamConfig.max_idle_connections,
                                                 description="kept-alive idle connections per target")


class Cors(Section):
    builds = config.CorsConfig
    allow_origins: TextList = Field(default_factory=tuple, description="origins, or '*'")
    allow_methods: Methods = Field(default_factory=lambda: config.CorsConfig.allow_methods)
    allow_headers: HeaderNames = Field(default_factory=lambda: config.CorsConfig.allow_headers)
    expose_headers: HeaderNames = Field(default_factory=tuple)
    allow_credentials: Bool = config.CorsConfig.allow_credentials
    max_age_seconds: NonNegativeInt = config.CorsConfig.max_age_seconds


class RateLimit(Section):
    builds = config.RateLimitConfig
    requests: PositiveInt = Field(description="requests allowed per window")
    window_seconds: Seconds = Field(description="the window, seconds")
    key: RateLimitKey = Field(config.RateLimitConfig.key, description="subject | ip | header:NAME")


class HeaderRules(Section):
    builds = config.HeaderRules
    set: HeaderMap = Field(default_factory=dict)
    remove: HeaderNames = Field(default_factory=tuple)


class Cache(Section):
    """GET/HEAD 200 answers kept (SPEC §8)."""

    builds = config.CacheConfig
    ttl_seconds: Seconds = Field(config.CacheConfig.ttl_seconds, description=(
        "freshness when the upstream gives none (max-age, s-maxage, Expires), and the cap on what it gives, seconds"))
    shared: Bool = Field(config.CacheConfig.shared, description=(
        "on an authenticated route: one entry for every caller instead of one per subject"))
    max_entry_bytes: PositiveInt = Field(config.CacheConfig.max_entry_bytes,
                                         description="larger answers stream through uncached, bytes")


class Compression(Section):
    """gzip and br of answers whose type matches (SPEC §8)."""

    builds = config.CompressionConfig
    min_bytes: NonNegativeInt = Field(config.CompressionConfig.min_bytes,
                                      description="a declared Content-Length below this is not compressed, bytes")
    types: MediaRanges = Field(
        default_factory=lambda: config.CompressionConfig.types,
        description="Content-Types compressed: type/subtype, type/*, type/*+suffix or */* (parameters ignored)")
    encodings: Encodings = Field(default_factory=lambda: config.CompressionConfig.encodings,
                                 description="offered codings, preferred first when the client weighs them equally")
    gzip_level: Annotated[int, Int(ge=1, le=9)] = Field(config.CompressionConfig.gzip_level,
                                                        description="zlib level 1-9")
    brotli_quality: Annotated[int, Int(ge=0, le=11)] = Field(config.CompressionConfig.brotli_quality,
                                                             description="brotli quality 0-11")


# ``compression``: true, false or the section; the tags pick the branch, as for a target.
BoolOrCompression = Annotated[Annotated[Bool, Tag("<bool>")] | Annotated[Compression, Tag("<section>")],
                              Discriminator(bool_or_section)]


class AggregatePart(Section):
    builds = config.AggregatePart
    name: Text
    upstream: Text = Field(description="a name from upstreams")
    path: PartPath = Field(description="may hold {param} placeholders captured by the route's path")


class Route(Section):
    """One route; exactly one of ``upstream`` or ``aggregate``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["upstream"]},
                                                           {"required": ["aggregate"]}]})
    builds = config.RouteConfig
    name: Text
    path: Path = Field(description="a prefix; {param} segments only on aggregate routes")
    upstream: Text = Field(default=None, description="a name from upstreams")
    methods: Methods = Field(default=None, description="default: every method")
    host: LowerText = Field(default=None, description="match this Host only")
    strip_prefix: Bool = config.RouteConfig.strip_prefix
    rewrite_prefix: Path = Field(default=None, description="replaces the matched prefix (implies strip_prefix)")
    auth: Annotated[str, Choice("required", "optional", "none")] = Field(
        default=None, description="default: required when auth.jwt is configured, else none")
    scopes: TextList = Field(default_factory=tuple, description="all needed (auth required or optional)")
    rate_limit: Annotated[RateLimit | None, NULL_IS_EMPTY] = None
    validate_json: Bool = config.RouteConfig.validate_json
    request_headers: HeaderRules | None = None
    response_headers: HeaderRules | None = None
    timeout_seconds: Seconds = Field(default=None, alias="timeout",
                                     description="overrides the upstream's request_timeout, seconds")
    cors: Cors | None = Field(default=None, description="overrides the global cors section")
    aggregate: Annotated[list[Annotated[AggregatePart, NULL_IS_EMPTY]], Field(min_length=1),
                         expect(list, "a non-empty list of parts", nonempty=True, got=False)] = Field(
        default=None, description="GET several upstreams and merge their JSON")
    plugins: TextList = Field(default_factory=tuple, description="names from plugins, run in this order")
    auth_methods: AuthMethods = Field(
        default=None, description="credentials this route accepts; default: every configured one")
    ip_allow: IpRules = Field(default=None, description="CIDRs let in (the client address after trusted_proxies)")
    ip_deny: IpRules = Field(default=None, description="CIDRs refused with 403; deny wins over allow")
    websocket: Bool = Field(config.RouteConfig.websocket, description="relay Upgrade: websocket handshakes (SPEC §6)")
    websocket_idle_seconds: Seconds = Field(config.RouteConfig.websocket_idle_seconds,
                                            description="no frame either way this long: close 1001 (websocket routes)")
    websocket_max_message_bytes: Annotated[int, Int(ge=1, le=1 << 30)] = Field(
        config.RouteConfig.websocket_max_message_bytes, description="a larger message: close 1009 (websocket routes)")
    cache: Cache | None = Field(default=None, description="keep GET/HEAD answers (upstream routes)")
    compression: Annotated[BoolOrCompression, either("true, false or a mapping")] = Field(
        default=None, description="false: off; true: the global section (or the defaults); or the route's own")


class Plugin(Section):
    builds = config.PluginConfig  # built by gateway.loader once configchecks has loaded the plugin
    name: Text
    class_path: Text = Field(alias="class", description="path/to/file.py:Class or package.module:Class")
    config: PluginConfigMap = Field(default=None, description="passed to the plugin")


class Logging(Section):
    builds = config.LoggingConfig
    level: Annotated[str, Choice("debug", "info", "warning", "error")] = config.LoggingConfig.level
    format: Annotated[str, Choice("json", "text")] = config.LoggingConfig.format
    access_log: Bool = config.LoggingConfig.access_log


class Tracing(Section):
    """OpenTelemetry spans (a server span per request, a client span per upstream try), exported in
    batches over OTLP/HTTP (protobuf). Absent (or null): no span is made; ``{}``: the defaults."""

    builds = config.TracingConfig
    otlp_endpoint: OtlpEndpoint = Field(config.TracingConfig.otlp_endpoint,
                                        description="the collector's OTLP/HTTP traces URL; no path: /v1/traces")
    service_name: Text = Field(config.TracingConfig.service_name, description="the service.name resource attribute")
    sample_ratio: Ratio = Field(config.TracingConfig.sample_ratio,
                                description="share of new traces recorded (a caller's sampled flag is followed)")
    max_queue_spans: Annotated[int, Int(ge=1, le=1_000_000)] = Field(
        config.TracingConfig.max_queue_spans, description="finished spans waiting for export; beyond: dropped and counted")
    max_batch_spans: Annotated[int, Int(ge=1, le=100_000)] = Field(
        config.TracingConfig.max_batch_spans, description="spans per export request (at most max_queue_spans)")
    export_interval_seconds: Seconds = Field(config.TracingConfig.export_interval_seconds,
                                             description="a partial batch waits at most this long, seconds")
    export_timeout_seconds: Seconds = Field(config.TracingConfig.export_timeout_seconds,
                                            description="one export request, connect and answer, seconds")


class ConfigFile(Section):
    """The gateway's configuration file (SPEC §3)."""

    model_config = ConfigDict(title="gateway configuration")
    builds = config.GatewayConfig
    server: Server | None = None
    admin: Admin | None = None
    auth: Auth | None = None
    upstreams: Annotated[dict[Name, Annotated[Upstream, NULL_IS_EMPTY]], expect(dict, "a mapping of name to upstream")] | None = Field(
        default=None, description="name -> upstream")
    routes: Annotated[list[Annotated[Route, NULL_IS_EMPTY]], expect(list, "a list of routes")] | None = Field(
        default=None, description="matched longest path first")
    rate_limit_store: RateLimitStore = Field(config.GatewayConfig.rate_limit_store,
                                             description="memory | redis://host:port/db")
    rate_limit_fail_open: Bool = Field(config.GatewayConfig.rate_limit_fail_open,
                                       description="serve when the rate-limit store is down")
    cors: Cors | None = None
    logging: Logging | None = None
    plugins: Annotated[list[Annotated[Plugin, NULL_IS_EMPTY]], expect(list, "a list of plugins")] | None = None
    cache_store: RateLimitStore = Field(config.GatewayConfig.cache_store,
                                        description="memory | redis://host:port/db (shared by every instance)")
    cache_max_bytes: Annotated[int, Int(ge=1024)] = Field(
        config.GatewayConfig.cache_max_bytes, description="the memory cache store's bound (least recently used out), bytes")
    compression: Annotated[BoolOrCompression, either("a mapping")] | None = Field(
        default=None, description="gzip/br of matching answers, for every route that does not say otherwise")
    tracing: Tracing | None = None


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a configuration file, keys as written in YAML."""
    schema = ConfigFile.model_json_schema(by_alias=True)
    return {"$schema": SCHEMA_DIALECT, **schema}

