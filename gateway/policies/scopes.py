"""The scopes step: a route's ``scopes`` against the caller's.

A caller with an identity (a verified token or an API key's consumer) must hold
every scope the route lists (403 ``insufficient_scope``, naming the missing
ones; the RFC 6750 Bearer challenge only for a token's caller); an anonymous
caller on an ``auth: optional`` route is not checked here (the auth step let it
in). A route without ``scopes`` has no scopes step.
"""

from __future__ import annotations

from ..errors import InsufficientScope
from . import Request, Step

__all__ = ["ScopesStep"]


class ScopesStep(Step):
    """Refuse a caller that lacks one of ``required``."""

    name = "scopes"

    def __init__(self, required: tuple[str, ...]) -> None:
        self.required = required

    def on_request(self, request: Request) -> None:
        """Raises InsufficientScope."""
        identity = request.ctx.identity
        if identity is not None:
            missing = [scope for scope in self.required if scope not in identity.scopes]
            if missing:
                raise InsufficientScope(missing, bearer=identity.method == "jwt")
        return None
