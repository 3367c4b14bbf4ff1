"""The gateway's error tree and its one JSON renderer.

Every error the gateway itself answers with is a :class:`GatewayError`; each
subclass is one row of SPEC §4 and carries its ``status``, its ``code``, a
message for people and optional response headers. What is shown is kept apart
from what is logged (as Tornado's ``HTTPError(log_message, reason=)`` does):
``message`` goes into the body and says what a client can act on;
``log_message`` holds what only the operator may see (an upstream's address and
port, a socket or TLS library's words, an upstream's name) and goes to the log
with the request id. SPEC §4: error bodies never name an internal address, port,
certificate or library message::

    GatewayError
    ├── BadRequest            400 bad_request
    ├── InvalidJson           400 invalid_json
    ├── MissingToken          401 missing_token
    ├── InvalidToken          401 invalid_token
    ├── InsufficientScope     403 insufficient_scope
    ├── MissingCredentials    401 missing_credentials
    ├── InvalidApiKey         401 invalid_api_key
    ├── Forbidden             403 forbidden
    ├── NoRoute               404 no_route
    ├── MethodNotAllowed      405 method_not_allowed
    ├── RequestTimeout        408 request_timeout
    ├── BodyTooLarge          413 body_too_large
    ├── UriTooLong            414 uri_too_long
    ├── RateLimited           429 rate_limited
    ├── HeadersTooLarge       431 headers_too_large
    ├── InternalError         500 internal_error
    ├── BadGateway            502 bad_gateway
    │   └── UpstreamConnectError   (``refused``: nothing was sent)
    ├── NoHealthyUpstream     503 no_healthy_upstream
    ├── ServiceUnavailable    503 service_unavailable
    └── UpstreamTimeout       504 upstream_timeout

Library exceptions (tornado, jwt, redis) are translated into this tree where
that library is called; :func:`render_error` is the only place that turns an
error into bytes for the client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class GatewayError(Exception):
    """An error the gateway answers itself, before any upstream byte reached the client."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "internal error"

    def __init__(self, message: str | None = None, headers: Mapping[str, str] | None = None, *,
                 log_message: str | None = None) -> None:
        self.message = message or self.default_message
        self.log_message = log_message
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    @property
    def detail(self) -> str:
        """What the log says about this error: ``log_message`` when there is one, else ``message``."""
        return self.log_message or self.message


class BadRequest(GatewayError):
    status, code, default_message = 400, "bad_request", "malformed request"


class InvalidJson(GatewayError):
    status, code, default_message = 400, "invalid_json", "request body is not valid JSON"


def _bearer_challenge(error: str | None = None, description: str | None = None) -> str:
    challenge = 'Bearer realm="gateway"'
    if error:
        challenge += f', error="{error}"'
    if description:
        challenge += ', error_description="{}"'.format(description.replace('"', "'"))
    return challenge


class MissingToken(GatewayError):
    status, code, default_message = 401, "missing_token", "a bearer token is required"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, {"WWW-Authenticate": _bearer_challenge()})


class InvalidToken(GatewayError):
    status, code, default_message = 401, "invalid_token", "the bearer token is not valid"

    def __init__(self, message: str | None = None, *, log_message: str | None = None) -> None:
        super().__init__(message, log_message=log_message)
        self.headers["WWW-Authenticate"] = _bearer_challenge("invalid_token", self.message)


class InsufficientScope(GatewayError):
    status, code, default_message = 403, "insufficient_scope", "the token lacks a required scope"

    def __init__(self, missing: tuple[str, ...] | list[str] = (), bearer: bool = True) -> None:
        needed = " ".join(missing)
        message = f"missing scope: {needed}" if needed else None
        super().__init__(message)
        if bearer:  # RFC 6750 §3.1; an API-key caller gets no Bearer challenge (it holds no token)
            challenge = _bearer_challenge("insufficient_scope", self.message)
            if needed:
                challenge += f', scope="{needed}"'
            self.headers["WWW-Authenticate"] = challenge


class MissingCredentials(GatewayError):
    """No credential on a route that takes an API key (with or without a bearer token).
    ``challenges``: the route's ``WWW-Authenticate`` value (a 401 must carry one, RFC 9110 §15.5.2)."""

    status, code, default_message = 401, "missing_credentials", "credentials are required"

    def __init__(self, message: str | None = None, challenges: str = 'Key realm="gateway"') -> None:
        super().__init__(message, {"WWW-Authenticate": challenges})


class InvalidApiKey(GatewayError):
    """An API key that names no consumer (or is empty or too long). The message never holds the key."""

    status, code, default_message = 401, "invalid_api_key", "the API key is not valid"

    def __init__(self, message: str | None = None, challenges: str = 'Key realm="gateway"') -> None:
        super().__init__(message, {"WWW-Authenticate": challenges})


class Forbidden(GatewayError):
    """The route's IP rules do not let the client's address in."""

    status, code, default_message = 403, "forbidden", "this address may not use this route"


class NoRoute(GatewayError):
    status, code, default_message = 404, "no_route", "no route matches this request"


class MethodNotAllowed(GatewayError):
    status, code, default_message = 405, "method_not_allowed", "method not allowed on this route"

    def __init__(self, allowed: tuple[str, ...] | list[str]) -> None:
        super().__init__(None, {"Allow": ", ".join(allowed)})


class RequestTimeout(GatewayError):
    """The request body sent nothing for ``server.body_timeout_seconds``."""

    status, code, default_message = 408, "request_timeout", "the request body stalled"


class BodyTooLarge(GatewayError):
    status, code, default_message = 413, "body_too_large", "request body too large"


class UriTooLong(GatewayError):
    status, code, default_message = 414, "uri_too_long", "request line too long"


class RateLimited(GatewayError):
    status, code, default_message = 429, "rate_limited", "rate limit exceeded"


class HeadersTooLarge(GatewayError):
    status, code, default_message = 431, "headers_too_large", "request headers too large"


class InternalError(GatewayError):
    status, code, default_message = 500, "internal_error", "internal error"


class BadGateway(GatewayError):
    status, code, default_message = 502, "bad_gateway", "the upstream failed to answer"


class UpstreamConnectError(BadGateway):
    """The upstream could not be reached. ``refused``: no byte of the request was sent, so any
    method may be tried again elsewhere."""

    default_message = "the upstream could not be reached"

    def __init__(self, message: str | None = None, refused: bool = False, *,
                 log_message: str | None = None) -> None:
        super().__init__(message, log_message=log_message)
        self.refused = refused


class NoHealthyUpstream(GatewayError):
    status, code, default_message = 503, "no_healthy_upstream", "no healthy upstream target"


class ServiceUnavailable(GatewayError):
    status, code, default_message = 503, "service_unavailable", "service unavailable"


class UpstreamTimeout(GatewayError):
    """The upstream was too slow. ``sent`` is False when it timed out while connecting."""

    status, code, default_message = 504, "upstream_timeout", "the upstream took too long to answer"

    def __init__(self, message: str | None = None, sent: bool = True, *, log_message: str | None = None) -> None:
        super().__init__(message, log_message=log_message)
        self.sent = sent


def render_error(error: GatewayError, request_id: str) -> bytes:
    """The JSON body of SPEC §4 for ``error``."""
    return json.dumps(
        {"error": error.code, "message": error.message, "status": error.status, "request_id": request_id},
        separators=(",", ":"),
    ).encode()
