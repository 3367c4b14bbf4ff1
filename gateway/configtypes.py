"""The configuration file's value types: how each is checked, and how the JSON Schema shows it, said once.

Each type is ``Annotated[loaded type, <validator>]`` for the pydantic models of
:mod:`gateway.schema`. The validator is a plain function (no lax coercion: ``"3"`` is not an
integer, ``1`` is not ``true``) that raises :func:`problem` with the message an operator
reads (``must be at most 65535``); the JSON Schema an editor sees is the *written* type
(``json_schema_input_type``), where a string holding a ``${VAR}`` reference may stand for any
scalar (``$defs/EnvRef``). Bounds and choices are arguments, so they are written once for both.

Values reach these validators after :func:`gateway.yamldoc.substitute`: a reference that is a
whole scalar has been typed like YAML (``port: ${PORT}`` is an integer), and a number so made
keeps its text for string keys (:class:`gateway.yamldoc.EnvText`). A reference that could not
be resolved is :data:`gateway.yamldoc.UNSET`, already reported: it fails with :data:`UNSET_ERROR`,
which :mod:`gateway.configerrors` drops.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    RootModel,
    ValidationInfo,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from .apikeys import MAX_KEY_BYTES, MIN_KEY_CHARS, RESERVED_KEY_HEADERS, digest_of
from .compression import ENCODINGS
from .policies.iprules import parse_rule
from .tables import JWT_ALGORITHMS, PROXIED_METHODS
from .yamldoc import UNSET, EnvText

__all__ = ["GATEWAY_ERROR", "UNSET_ERROR", "EnvRef", "Invalid", "kind", "problem", "scalar", "expect",
           "NULL_IS_EMPTY", "either", "bool_or_section", "ADMIN_TOKEN_MIN_BYTES", "AUTH_METHODS"]

# The error types pydantic carries for us: a problem with its message, and an already reported reference.
GATEWAY_ERROR = "gateway"
UNSET_ERROR = "gateway_unset"

# Methods a route or CORS may name but the proxy refuses with 405: refused here instead.
_UNPROXIED_METHODS = frozenset({"CONNECT", "TRACE"})

# The header-name token of RFC 9110.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
HEADER_NAME = re.compile(f"^{_TOKEN}$")

# A media type as compression.types names it: type/subtype, type/*, type/*+suffix or */*; no parameters.
_MEDIA_TOKEN = r"[!#$%&'+.^_`|~0-9A-Za-z-]+"  # a token without '*'
_MEDIA_RANGE = rf"(\*/\*|{_MEDIA_TOKEN}/(\*|\*\+{_MEDIA_TOKEN}|{_MEDIA_TOKEN}))"

ADMIN_TOKEN_MIN_BYTES = 32  # as for an HS* secret (SPEC §3): a guessable token guards reload and the config's view
_B64TOKEN = r"[A-Za-z0-9\-._~+/]+=*"  # RFC 6750 §2.1: what a Bearer credential may hold

AUTH_METHODS = ("jwt", "api_key")  # a route's auth_methods, in the order a route tries them


class Invalid(Exception):
    """A value is wrong; the message says why (its location is added by whoever reports it)."""


def problem(message: str) -> PydanticCustomError:
    """The error a validator raises: pydantic adds the location, :mod:`gateway.configerrors` prints it."""
    return PydanticCustomError(GATEWAY_ERROR, "{message}", {"message": message})


def kind(value: object) -> str:
    """What a value is, in an operator's words: ``a mapping``, ``a string``, ``nothing``."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _unset() -> PydanticCustomError:
    return PydanticCustomError(UNSET_ERROR, "an environment reference already reported")


def scalar(parse: Callable[[Any], Any], written: Any) -> PlainValidator:
    """A value checked by ``parse`` (returns the loaded value or raises :class:`Invalid`), shown in the
    JSON Schema as ``written``."""
    def validate(value: Any) -> Any:
        if value is UNSET:
            raise _unset()
        try:
            return parse(value)
        except Invalid as exc:
            raise problem(str(exc)) from None
    return PlainValidator(validate, json_schema_input_type=written)


def expect(container: type, what: str, nonempty: bool = False, got: bool = True) -> WrapValidator:
    """A list or mapping of sections: anything else is ``expected {what}, got {kind}`` at its own location
    (the sections inside are then checked one by one, each problem at its own index or key)."""
    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        if value is UNSET:
            raise _unset()
        if not isinstance(value, container) or (nonempty and not value):
            raise problem(f"expected {what}, got {kind(value)}" if got else f"expected {what}")
        return handler(value)
    return WrapValidator(validate)


# A section whose key is given with no value (``health_check:``) is the section with its defaults.
NULL_IS_EMPTY = BeforeValidator(lambda value: {} if value is None else value)


class EnvRef(RootModel[str]):
    """A string holding a ``${VAR}`` or ``${VAR:-default}`` reference, replaced from the environment
    when the file is loaded; the loader checks the value it turns into."""

    root: str = Field(pattern=r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}")


def _any_case(word: str) -> str:
    """A regex matching ``word`` in any letter case, without flags (JSON Schema regexes have none)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# --- parsers: each takes the value and returns the loaded value or raises Invalid ---

def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {kind(value)}")
    return value


def parse_int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {kind(value)}")
        if minimum is not None and value < minimum:
            raise Invalid(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum}")
        return int(value)
    return parse


def parse_seconds(allow_zero: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"expected a number of seconds, got {kind(value)}")
        if value < 0 or (value == 0 and not allow_zero):
            raise Invalid("must be greater than 0" if not allow_zero else "must be at least 0.0")
        return float(value)
    return parse


def parse_str(choices: tuple[str, ...] | None = None, nonempty: bool = True) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, EnvText):
            value = value.text  # a string key set from the environment keeps the text as written
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {kind(value)}")
        if nonempty and not value:
            raise Invalid("must not be empty")
        if choices is not None and value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got '{value}'")
        return value
    return parse


def parse_str_list(item: Callable[[Any], str] | None = None) -> Callable[[Any], tuple[str, ...]]:
    """A list of strings, or one string for a one-item list; the first bad item is the problem."""
    item = item or parse_str()

    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise Invalid(f"expected a list, got {kind(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except Invalid as exc:
                raise Invalid(f"item {i}: {exc}") from None
        return tuple(out)
    return parse


def parse_header_name(value: Any) -> str:
    value = parse_str()(value)
    if not HEADER_NAME.match(value):
        raise Invalid(f"'{value}' is not a valid header name")
    return value


def parse_method(value: Any) -> str:
    value = parse_str()(value).upper()
    if value not in PROXIED_METHODS:
        what = f"'{value}' is not proxied" if value in _UNPROXIED_METHODS else f"unknown HTTP method '{value}'"
        raise Invalid(f"{what} (supported: {', '.join(PROXIED_METHODS)})")
    return value


def parse_path(value: Any) -> str:
    value = parse_str()(value)
    if not value.startswith("/"):
        raise Invalid(f"must start with '/', got '{value}'")
    if any(seg in (".", "..") for seg in value.split("/")) or "//" in value or "?" in value or "#" in value:
        raise Invalid(f"'{value}' is not a clean path")
    return value


def parse_part_path(value: Any) -> str:
    value = parse_str()(value)
    if not value.startswith("/"):
        raise Invalid(f"must start with '/', got '{value}'")
    return value


def parse_header_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"expected a string, got {kind(value)}")
    text = str(value)
    if "\r" in text or "\n" in text:
        raise Invalid("header values cannot hold line breaks")
    return text


def parse_header_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of header to value, got {kind(value)}")
    return {parse_header_name(k): parse_header_value(v) for k, v in value.items()}


def parse_claim_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of claim to header name, got {kind(value)}")
    return {parse_str()(claim): parse_header_name(header) for claim, header in value.items()}


def parse_cidr(value: Any) -> str:
    value = parse_str()(value)
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Invalid(f"'{value}' is not an IP address or CIDR") from None
    return value


def parse_http_url(value: Any) -> str:
    value = parse_str()(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"'{value}' is not an http(s) URL")
    return value


def parse_target_url(value: Any) -> str:
    value = parse_str()(value)
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 \
            or parts.query or parts.fragment or parts.username:
        raise Invalid(f"'{value}' is not a valid http(s) target URL")
    return value


def parse_statuses(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of status codes, got {kind(value)}")
    return tuple(parse_int(100, 599)(v) for v in value)


def parse_rate_limit_key(value: Any) -> str:
    value = parse_str()(value)
    if value in ("subject", "ip"):
        return value
    if value.startswith("header:") and HEADER_NAME.match(value[7:]):
        return value
    raise Invalid(f"expected subject, ip or header:NAME, got '{value}'")


def parse_rate_limit_store(value: Any) -> str:
    value = parse_str()(value)
    if value == "memory":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise Invalid(f"expected 'memory' or a redis:// URL, got '{value}'")
    return value


def parse_plugin_config(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping, got {kind(value)}")
    return value


def parse_admin_token(value: Any) -> str:
    """``admin.token``: a Bearer credential (RFC 6750 b64token) of at least 32 bytes."""
    token = parse_str()(value)
    if not re.fullmatch(_B64TOKEN, token):
        raise Invalid("must be a Bearer token: letters, digits and - . _ ~ + / (then any '='), "
                      "e.g. the output of `openssl rand -hex 32`")
    if len(token) < ADMIN_TOKEN_MIN_BYTES:
        raise Invalid(f"must be at least {ADMIN_TOKEN_MIN_BYTES} bytes, got {len(token)} "
                      "(`openssl rand -hex 32` makes one)")
    return token


def parse_key_header(value: Any) -> str:
    """``auth.api_keys.header``: a header name the gateway neither reads nor sets for another purpose."""
    name = parse_header_name(value)
    if name.lower() in RESERVED_KEY_HEADERS:
        raise Invalid(f"'{name}' is a header the gateway reads or sets itself; name another (X-Api-Key)")
    return name


def parse_key_claim_headers(value: Any) -> dict[str, str]:
    mapping = parse_claim_headers(value)
    for claim in mapping:
        if claim not in ("sub", "scope"):
            raise Invalid(f"a consumer has the claims sub and scope only, not '{claim}'")
    return mapping


def parse_subject(value: Any) -> str:
    value = parse_str()(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise Invalid("must not hold control characters (it is sent upstream as a header value)")
    return value


def parse_plaintext_key(value: Any) -> bytes:
    """A plaintext API key, checked and hashed at once: what is loaded is its SHA-256 digest only.
    A message never echoes the key."""
    if isinstance(value, EnvText):
        value = value.text
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {kind(value)}")
    if not all("!" <= c <= "~" for c in value):
        raise Invalid("must be printable ASCII without spaces (a header value carries it as is)")
    if not MIN_KEY_CHARS <= len(value) <= MAX_KEY_BYTES:
        raise Invalid(f"must be {MIN_KEY_CHARS} to {MAX_KEY_BYTES} characters (`gateway key` makes one)")
    return digest_of(value)


def parse_key_digest(value: Any) -> bytes:
    value = parse_str()(value)
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise Invalid("expected the 64 hex digits of a SHA-256 digest (`gateway key` prints one)")
    return bytes.fromhex(value)


def parse_ip_rule(value: Any) -> str:
    """A CIDR or an address as :func:`gateway.policies.iprules.parse_rule` takes it (host bits set refused)."""
    value = parse_str()(value)
    try:
        parse_rule(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return value


def parse_media_ranges(value: Any) -> tuple[str, ...]:
    types = parse_str_list()(value)
    if not types:
        raise Invalid("must name at least one type")
    for i, media in enumerate(types):
        if not re.fullmatch(_MEDIA_RANGE, media):
            raise Invalid(f"item {i}: '{media}' is not a media type (type/subtype, type/*, type/*+suffix or */*)")
    return tuple(media.lower() for media in types)


def parse_encodings(value: Any) -> tuple[str, ...]:
    names = parse_str_list(parse_str(ENCODINGS))(value)
    if not names:
        raise Invalid(f"must name at least one of {', '.join(ENCODINGS)}")
    if len(set(names)) != len(names):
        raise Invalid("lists an encoding twice")
    return names


def either(what: str) -> WrapValidator:
    """A key that is ``true``, ``false`` or a section (``compression``): anything else is ``expected {what},
    got {kind}`` at the key, before the union picks its branch."""
    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        if value is UNSET:
            raise _unset()
        if not isinstance(value, (bool, dict)):
            raise problem(f"expected {what}, got {kind(value)}")
        return handler(value)
    return WrapValidator(validate)


def bool_or_section(value: Any) -> str:
    """The branch of a ``true | false | section`` union (a tag of gateway.schema.TAGS)."""
    return "<bool>" if isinstance(value, bool) else "<section>"


def _file(value: Any, info: ValidationInfo) -> str:
    """A file that must exist: as given when it exists from here, else relative to the config's folder
    (``base_dir`` in the validation context)."""
    if value is UNSET:
        raise _unset()
    try:
        value = parse_str()(value)
    except Invalid as exc:
        raise problem(str(exc)) from None
    base_dir = (info.context or {}).get("base_dir", ".")
    resolved = value if os.path.isabs(value) or os.path.exists(value) else os.path.join(base_dir, value)
    if not os.path.isfile(resolved):
        raise problem(f"no such file: {value}")
    return resolved


# --- the types, each with its written form for the JSON Schema ---

def parse_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected a number from 0 to 1, got {kind(value)}")
    if not 0 <= value <= 1:
        raise Invalid(f"must be from 0 to 1, got {value}")
    return float(value)


def parse_otlp_endpoint(value: Any) -> str:
    """An OTLP/HTTP traces URL; one without a path gets the standard ``/v1/traces``."""
    value = parse_str()(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"'{value}' is not an http(s) URL")
    if parts.username is not None or parts.fragment:
        raise Invalid(f"'{value}' must not hold user info or a fragment")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise Invalid(f"'{value}' has an invalid port") from None
    return value if parts.path not in ("", "/") else value.rstrip("/") + "/v1/traces"


def Int(ge: int | None = None, le: int | None = None) -> PlainValidator:  # noqa: N802 - reads as a type
    return scalar(parse_int(ge, le), Annotated[int, Field(ge=ge, le=le)] | EnvRef)


def Choice(*choices: str) -> PlainValidator:  # noqa: N802 - reads as a type
    return scalar(parse_str(choices), Literal[choices] | EnvRef)  # type: ignore[valid-type]


_Text = Annotated[str, Field(min_length=1)]  # any non-empty string (a reference is one)
_WrittenHeaderName = Annotated[str, Field(pattern=f"^{_TOKEN}$")] | EnvRef
_WrittenMethod = Annotated[str, Field(pattern=f"^({'|'.join(_any_case(m) for m in PROXIED_METHODS)})$")] | EnvRef
_WrittenAlgorithm = Annotated[str, WithJsonSchema({"enum": sorted(JWT_ALGORITHMS)})] | EnvRef
_WrittenHttpUrl = Annotated[str, Field(pattern=r"^https?://[^/?#]+")] | EnvRef

Bool = Annotated[bool, scalar(parse_bool, bool | EnvRef)]
NonNegativeInt = Annotated[int, Int(ge=0)]
PositiveInt = Annotated[int, Int(ge=1)]
Port = Annotated[int, Int(ge=0, le=65535)]
Seconds = Annotated[float, scalar(parse_seconds(), Annotated[float, Field(gt=0)] | EnvRef)]  # greater than 0
SecondsOrZero = Annotated[float, scalar(parse_seconds(allow_zero=True), Annotated[float, Field(ge=0)] | EnvRef)]
Text = Annotated[str, scalar(parse_str(), _Text)]
AnyText = Annotated[str, scalar(parse_str(nonempty=False), str)]  # may be empty
LowerText = Annotated[str, scalar(lambda value: parse_str()(value).lower(), _Text)]  # a host name
TextList = Annotated[tuple[str, ...], scalar(parse_str_list(), _Text | list[_Text])]  # one string: a one-item list
Cidrs = Annotated[tuple[str, ...], scalar(parse_str_list(parse_cidr), _Text | list[_Text])]
HeaderName = Annotated[str, scalar(parse_header_name, _WrittenHeaderName)]
HeaderNames = Annotated[tuple[str, ...], scalar(parse_str_list(parse_header_name),
                                                _WrittenHeaderName | list[_WrittenHeaderName])]
HeaderMap = Annotated[dict[str, str], scalar(parse_header_map, dict[Annotated[str, Field(pattern=f"^{_TOKEN}$")],
                                                                    Annotated[str, Field(pattern=r"^[^\r\n]*$")]
                                                                    | int | float])]
ClaimHeaders = Annotated[dict[str, str], scalar(parse_claim_headers, dict[str, _WrittenHeaderName])]
# Starts with '/', no '//', no '.' or '..' segment, no query or fragment.
Path = Annotated[str, scalar(parse_path, Annotated[str, Field(pattern=r"^(?!.*//)(?!.*/\.\.?(/|$))/[^?#]*$")]
                             | EnvRef)]
PartPath = Annotated[str, scalar(parse_part_path, Annotated[str, Field(pattern="^/")] | EnvRef)]
Methods = Annotated[tuple[str, ...], scalar(parse_str_list(parse_method), _WrittenMethod | list[_WrittenMethod])]
Algorithms = Annotated[tuple[str, ...], scalar(parse_str_list(), _WrittenAlgorithm | list[_WrittenAlgorithm])]
HttpUrl = Annotated[str, scalar(parse_http_url, _WrittenHttpUrl)]
TargetUrl = Annotated[str, scalar(parse_target_url, _WrittenHttpUrl)]
OtlpEndpoint = Annotated[str, scalar(parse_otlp_endpoint, _WrittenHttpUrl)]
Ratio = Annotated[float, scalar(parse_ratio, Annotated[float, Field(ge=0, le=1)] | EnvRef)]
Statuses = Annotated[tuple[int, ...], scalar(parse_statuses, list[Annotated[int, Field(ge=100, le=599)] | EnvRef])]
RateLimitKey = Annotated[str, scalar(parse_rate_limit_key, Annotated[str, Field(pattern=f"^(subject|ip|header:{_TOKEN})$")]
                                     | EnvRef)]
RateLimitStore = Annotated[str, scalar(parse_rate_limit_store, Annotated[str, Field(pattern="^(memory|rediss?://.+)$")]
                                       | EnvRef)]
PluginConfigMap = Annotated[dict[str, Any], scalar(parse_plugin_config, dict[str, Any] | None)]
File = Annotated[str, PlainValidator(_file, json_schema_input_type=_Text)]
AdminToken = Annotated[str, scalar(parse_admin_token, Annotated[str, Field(pattern=rf"^(?=.{{{ADMIN_TOKEN_MIN_BYTES},}}$)"
                                                                                   rf"{_B64TOKEN}$")] | EnvRef)]
KeyHeader = Annotated[str, scalar(parse_key_header, _WrittenHeaderName)]
KeyClaimHeaders = Annotated[dict[str, str], scalar(parse_key_claim_headers,
                                                   dict[Literal["sub", "scope"], _WrittenHeaderName])]
Subject = Annotated[str, scalar(parse_subject, _Text)]
PlaintextKey = Annotated[bytes, scalar(parse_plaintext_key, Annotated[str, Field(
    pattern=f"^[!-~]{{{MIN_KEY_CHARS},{MAX_KEY_BYTES}}}$")] | EnvRef)]
KeyDigest = Annotated[bytes, scalar(parse_key_digest, Annotated[str, Field(pattern="^[0-9a-fA-F]{64}$")] | EnvRef)]
_WrittenAuthMethod = Literal[AUTH_METHODS] | EnvRef  # type: ignore[valid-type]
AuthMethods = Annotated[tuple[str, ...], scalar(parse_str_list(parse_str(AUTH_METHODS)),
                                                _WrittenAuthMethod | list[_WrittenAuthMethod])]
IpRules = Annotated[tuple[str, ...], scalar(parse_str_list(parse_ip_rule), _Text | list[_Text])]
_WrittenMediaRange = Annotated[str, Field(pattern=f"^{_MEDIA_RANGE}$")] | EnvRef
MediaRanges = Annotated[tuple[str, ...], scalar(parse_media_ranges, _WrittenMediaRange | list[_WrittenMediaRange])]
_WrittenEncoding = Literal[ENCODINGS] | EnvRef  # type: ignore[valid-type]
Encodings = Annotated[tuple[str, ...], scalar(parse_encodings, _WrittenEncoding | list[_WrittenEncoding])]
# A mapping's key naming a section (an upstream): any scalar, as text.
Name = Annotated[str, PlainValidator(str, json_schema_input_type=str)]
