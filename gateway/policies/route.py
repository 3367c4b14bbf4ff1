"""The route step: what every request goes through before its route is known.

The method must be one the gateway proxies (405 otherwise), the request line
and the header block within their limits (414, 431); the client address is
worked out from ``X-Forwarded-For`` where the peer is a trusted proxy; then the
route table matches the request (404 ``no_route``, 405 for a method the route
does not take) and the route's compiled plan is recorded on the request view,
with its match on the request context. A CORS preflight is matched by the
method it asks about (:func:`gateway.policies.cors.preflight_method`), so a
route's ``methods`` need not list ``OPTIONS`` for browsers to call it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import HeadersTooLarge, MethodNotAllowed, UriTooLong
from ..headers import TrustedProxies, field
from ..routing import RouteTable
from ..tables import PROXIED_METHODS
from . import CompiledRoute, Request, Step
from .cors import preflight_method

__all__ = ["RouteStep", "MAX_REQUEST_LINE_BYTES", "MAX_HEADER_BYTES"]

MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024


class RouteStep(Step):
    """One runtime's route table and plans, and its trusted proxies."""

    name = "route"

    def __init__(self, routes: RouteTable, plans: Mapping[str, CompiledRoute], trusted_proxies: TrustedProxies) -> None:
        self.routes = routes
        self.plans = plans
        self.trusted_proxies = trusted_proxies

    def on_request(self, request: Request) -> None:
        """Record the plan (``request.plan``), the match (``request.ctx.match``) and the client
        address. Raises MethodNotAllowed, UriTooLong, HeadersTooLarge, NoRoute or BadRequest
        (a path the route table refuses)."""
        method, incoming = request.method, request.incoming
        if method not in PROXIED_METHODS:
            raise MethodNotAllowed(PROXIED_METHODS)
        if len(request.uri) + len(method) + 10 > MAX_REQUEST_LINE_BYTES:
            raise UriTooLong()
        if sum(len(k) + len(v) + 4 for k, v in incoming.get_all()) > MAX_HEADER_BYTES:
            raise HeadersTooLarge()
        request.forwarded_for, request.client_ip = self.trusted_proxies.forwarded_for(
            request.remote_ip, field(incoming, "X-Forwarded-For"))
        request.ctx.client_ip = request.client_ip
        match = self.routes.match(preflight_method(method, incoming) or method, request.host, request.path)
        request.ctx.match = match
        request.plan = self.plans[match.route.name]
        return None
