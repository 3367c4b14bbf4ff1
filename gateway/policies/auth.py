"""The auth step: the bearer token of ``Authorization`` verified, its identity recorded.

Verification itself (signatures, claims, keys, the cache of verified tokens) is
:mod:`gateway.auth` and :mod:`gateway.jwks`; this step is what a route asks of
it. ``auth: required``: no token is a 401 ``missing_token``; ``auth: optional``:
no token goes on anonymous (``subject`` None). A token that does not verify is
a 401 ``invalid_token`` either way; a repeated ``Authorization`` header is a 400.
A route with ``auth: none`` has no auth step.
"""

from __future__ import annotations

from ..auth import Authenticator
from ..errors import MissingToken
from ..headers import single_value
from . import Request, Step

__all__ = ["AuthStep"]


class AuthStep(Step):
    """Verify the request's bearer token; ``required``: refuse a request without one."""

    name = "auth"

    def __init__(self, authenticator: Authenticator, required: bool) -> None:
        self.authenticator = authenticator
        self.required = required

    async def on_request(self, request: Request) -> None:
        """Raises MissingToken, InvalidToken or BadRequest (a repeated header)."""
        identity = await self.authenticator.authenticate(single_value(request.incoming, "Authorization"))
        if identity is None and self.required:
            raise MissingToken()
        request.ctx.identity = identity
        return None
