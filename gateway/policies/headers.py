"""The header rules of a route, both ways, compiled at load.

Upstream (the request): hop-by-hop fields go, and so do the client's copies of
what the gateway sets itself (``X-Forwarded-*``, ``X-Request-Id``,
``traceparent``, ``Content-Length``, the identity headers of
``claims_to_headers``), the forwarding headers backends trust
(``Forwarded``, ``X-Real-IP``...), ``Authorization`` when
``auth.jwt.forward_authorization`` is off, the API key header of
``auth.api_keys`` (on every route: a key is the gateway's credential, never
the upstream's; the upstream gets the identity headers), and the ``_`` spellings of any of
these (and of the rate-limit key's header); then the route's
``request_headers`` rules. Downstream (a relayed answer): hop-by-hop fields go,
then the route's ``response_headers`` rules. The plans are applied where the
headers are sent (:class:`gateway.headers.HeaderPlan` does the filtering).
"""

from __future__ import annotations

from ..apikeys import ApiKeyRing
from ..auth import Authenticator
from ..config import RouteConfig
from ..headers import FORWARDING_HEADERS, STRIPPED_FROM_CLIENTS, HeaderPlan

__all__ = ["HeaderRules"]


class HeaderRules:
    """What every route of one runtime shares: the names the gateway owns upstream."""

    def __init__(self, authenticator: Authenticator | None, keys: ApiKeyRing | None = None) -> None:
        identity_headers = authenticator.identity_header_names if authenticator is not None else ()
        if keys is not None:
            identity_headers = tuple(dict.fromkeys((*identity_headers, *keys.identity_header_names)))
        self.gateway_set = (*FORWARDING_HEADERS, *identity_headers)
        drop = (*self.gateway_set, *STRIPPED_FROM_CLIENTS)
        if authenticator is not None and not authenticator.forward_authorization:
            drop = (*drop, "authorization")
        if keys is not None:
            drop = (*drop, keys.header)
        self.drop_upstream = drop

    def request_plan(self, route: RouteConfig, guarded: str | None) -> HeaderPlan:
        """The plan of ``route``'s requests; ``guarded``: a header a policy decides on (the
        rate-limit key's), whose ``_`` spelling is dropped too."""
        return HeaderPlan(route.request_headers, self.drop_upstream, reserved=self.gateway_set,
                          fold_underscores=True, guarded=(guarded,) if guarded else ())

    def response_plan(self, route: RouteConfig) -> HeaderPlan:
        """The plan of ``route``'s relayed answers."""
        return HeaderPlan(route.response_headers)
