"""The scopes step: a route's ``scopes`` against the verified token's.

A caller with a token must hold every scope the route lists (403
``insufficient_scope``, naming the missing ones); an anonymous caller on an
``auth: optional`` route is not checked here (the auth step let it in). A route
without ``scopes`` has no scopes step.
"""

from __future__ import annotations

from ..auth import Authenticator
from . import Request, Step

__all__ = ["ScopesStep"]


class ScopesStep(Step):
    """Refuse a token that lacks one of ``required``."""

    name = "scopes"

    def __init__(self, authenticator: Authenticator, required: tuple[str, ...]) -> None:
        self.check = authenticator.check_scopes
        self.required = required

    def on_request(self, request: Request) -> None:
        """Raises InsufficientScope."""
        identity = request.ctx.identity
        if identity is not None:
            self.check(identity, self.required)
        return None
