"""The CORS step: which cross-origin browser requests a route accepts, and the headers that say so.

:class:`CorsPolicy` is built once from a :class:`gateway.config.CorsConfig`
and computes every header value in ``__init__`` (as starlette's
``middleware/cors.py`` does); a request only looks things up. The policy
answers preflights itself (the proxy does not forward them) and decorates
actual responses. Protocol: https://fetch.spec.whatwg.org/#http-cors-protocol.

Matching: origins compare case-insensitively (the configured spelling may
differ from the browser's serialisation) and the request's own spelling is
echoed; methods compare exactly (Fetch upper-cases only the standard ones);
header names in ``Access-Control-Request-Headers`` compare case-insensitively.
``"*"`` in ``allow_origins``, ``allow_methods`` or ``allow_headers`` allows any.
With credentials a ``"*"`` origin is echoed, since browsers refuse ``*`` then.
The CORS-safelisted ``Accept``, ``Accept-Language`` and ``Content-Language`` are
always allowed; ``Content-Type`` must be listed (a JSON body needs a preflight).

Whenever the answer depends on the request's ``Origin`` (anything but a plain
``*`` policy), responses carry ``Vary: Origin``, including those for a missing
or refused origin, so that a shared cache never serves one origin's answer to
another, merged with any ``Vary`` the upstream sent.

:class:`CorsStep` owns the whole of it on the request path: it answers a
preflight itself (the proxy never forwards one) and adds the actual-response
headers to every other answer of its route in ``on_response``.
:func:`preflight_method` is what the route step matches a preflight by.
"""

from __future__ import annotations

from collections.abc import Mapping

from tornado.httputil import HTTPHeaders

from ..config import CorsConfig
from ..headers import header_value
from . import Reply, Request, Response, Step

__all__ = ["CorsPolicy", "CorsStep", "preflight_method", "merge_vary"]

_ALWAYS_ALLOWED_HEADERS = frozenset({"accept", "accept-language", "content-language"})


class CorsPolicy:
    """One CORS section, compiled."""

    def __init__(self, config: CorsConfig) -> None:
        self._allow_any_origin = "*" in config.allow_origins
        self._origins = frozenset(origin.lower() for origin in config.allow_origins if origin != "*")
        self._credentials = config.allow_credentials
        # A "*" policy without credentials answers every origin with the same "*".
        self._star = self._allow_any_origin and not self._credentials
        self._vary: dict[str, str] = {} if self._star else {"Vary": "Origin"}

        self._allow_any_method = "*" in config.allow_methods
        self._methods = frozenset(method for method in config.allow_methods if method != "*")
        self._allow_any_header = "*" in config.allow_headers
        self._headers = _ALWAYS_ALLOWED_HEADERS | {
            name.lower() for name in config.allow_headers if name != "*"
        }

        preflight = {}
        if self._methods and not self._allow_any_method:
            preflight["Access-Control-Allow-Methods"] = ", ".join(config.allow_methods)
        listed_headers = [name for name in config.allow_headers if name != "*"]
        if listed_headers and not self._allow_any_header:
            preflight["Access-Control-Allow-Headers"] = ", ".join(listed_headers)
        preflight["Access-Control-Max-Age"] = str(config.max_age_seconds)
        if self._credentials:
            preflight["Access-Control-Allow-Credentials"] = "true"
        preflight["Vary"] = "Origin"
        self._preflight = preflight

        actual = {}
        if config.expose_headers:
            actual["Access-Control-Expose-Headers"] = ", ".join(config.expose_headers)
        if self._credentials:
            actual["Access-Control-Allow-Credentials"] = "true"
        actual.update(self._vary)
        self._actual = actual

    def is_preflight(self, method: str, headers: Mapping[str, str]) -> bool:
        """True for ``OPTIONS`` with both ``Origin`` and ``Access-Control-Request-Method``."""
        return (
            method == "OPTIONS"
            and header_value(headers, "Origin") is not None
            and header_value(headers, "Access-Control-Request-Method") is not None
        )

    def preflight_headers(
        self, origin: str, request_method: str, request_headers: str | None
    ) -> dict[str, str] | None:
        """The headers of a successful preflight answer, or ``None`` when the origin,
        the method or one of the comma-separated ``request_headers`` is not allowed."""
        if not self._origin_allowed(origin):
            return None
        if not (self._allow_any_method or request_method in self._methods):
            return None
        requested = [name.strip().lower() for name in (request_headers or "").split(",")]
        requested = [name for name in requested if name]
        if not self._allow_any_header and any(name not in self._headers for name in requested):
            return None
        headers = {"Access-Control-Allow-Origin": "*" if self._star else origin}
        if self._allow_any_method:
            headers["Access-Control-Allow-Methods"] = request_method
        if self._allow_any_header and requested:
            headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        headers.update(self._preflight)
        return headers

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers to add to an actual (non-preflight) response: nothing but
        ``Vary: Origin`` for an absent or refused origin; the allowed origin (or
        ``*``), ``Vary``, ``Expose-Headers`` and ``Allow-Credentials`` otherwise."""
        if origin is None or not self._origin_allowed(origin):
            return dict(self._vary)
        headers = {"Access-Control-Allow-Origin": "*" if self._star else origin}
        headers.update(self._actual)
        return headers

    def _origin_allowed(self, origin: str) -> bool:
        return self._allow_any_origin or origin.lower() in self._origins


def preflight_method(method: str, headers: HTTPHeaders) -> str | None:
    """The method a preflight asks about (``Access-Control-Request-Method`` of an ``OPTIONS``),
    which is what its route is matched by; None for any other request."""
    return headers.get("Access-Control-Request-Method") if method == "OPTIONS" else None


class CorsStep(Step):
    """A route's CORS policy on the request path: preflights answered (204, with the
    preflight headers when allowed, none when not), every other answer decorated."""

    name = "cors"

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy

    def on_request(self, request: Request) -> Reply | None:
        incoming = request.incoming
        if request.method == "OPTIONS":
            origin, asked = incoming.get("Origin"), incoming.get("Access-Control-Request-Method")
            if origin and asked:
                allowed = self.policy.preflight_headers(origin, asked, incoming.get("Access-Control-Request-Headers"))
                return Reply(204, headers=allowed)
        return None

    def on_response(self, request: Request, response: Response) -> None:
        out = response.headers
        for name, value in self.policy.response_headers(request.incoming.get("Origin")).items():
            if name == "Vary" and "Vary" in out:
                value = merge_vary(out.get_list("Vary"), value)  # keep the upstream's own Vary
            out[name] = value


def merge_vary(existing: list[str], added: str) -> str:
    """One ``Vary`` value: the upstream's fields, then those of ``added`` it lacks
    (field names compare case-insensitively; ``*`` already varies on everything)."""
    fields = [f.strip() for line in existing for f in line.split(",") if f.strip()]
    if "*" not in fields:
        seen = {f.lower() for f in fields}
        fields += [f.strip() for f in added.split(",") if f.strip() and f.strip().lower() not in seen]
    return ", ".join(fields)
