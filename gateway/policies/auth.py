"""The auth step: the caller's credential verified, its identity recorded.

Verification itself is :mod:`gateway.auth` (bearer tokens: signatures, claims,
keys, the cache of verified tokens) and :mod:`gateway.apikeys` (API keys); this
step is what a route asks of them, by its ``auth_methods`` (``jwt``, ``api_key``;
default every configured one):

- ``auth: required``: no credential is a 401: ``missing_token`` on a JWT-only
  route (SPEC §4, unchanged), ``missing_credentials`` on a route that takes an API
  key. ``auth: optional``: no credential goes on anonymous (``subject`` None).
- A token that does not verify is a 401 ``invalid_token``; a key that names no
  consumer (or is empty, or too long) a 401 ``invalid_api_key``, either way.
- A repeated ``Authorization`` or key header is a 400; so is a request that
  presents both a bearer token and a key on a route that takes both (two
  credentials would be two identities; the gateway does not pick one).
- A credential of a method the route does not take is not looked at: a key on a
  JWT-only route is no credential (and is never forwarded: the key header is
  dropped upstream on every route), an ``Authorization`` header on a key-only
  route is the upstream's business.

``WWW-Authenticate`` on the 401s lists what the route takes, RFC 6750 first:
``Bearer realm="gateway"`` for JWT (what an RFC 6750 client looks for) and
``Key realm="gateway"`` for keys (Kong key-auth's challenge), comma-joined when
the route takes both (RFC 9110 §11.6.1). A route with ``auth: none`` has no auth
step.
"""

from __future__ import annotations

from ..apikeys import ApiKeyRing
from ..auth import Authenticator
from ..errors import BadRequest, InvalidApiKey, MissingCredentials, MissingToken
from ..headers import single_value
from . import Request, Step

__all__ = ["AuthStep"]

_BEARER = 'Bearer realm="gateway"'
_KEY = 'Key realm="gateway"'


class AuthStep(Step):
    """Verify the request's credential with the methods the route takes; ``required``: refuse a
    request without one. ``authenticator`` None: the route takes no JWT; ``keys`` None: no key."""

    name = "auth"

    def __init__(self, authenticator: Authenticator | None, required: bool, keys: ApiKeyRing | None = None) -> None:
        self.authenticator = authenticator
        self.required = required
        self.keys = keys
        self.key_header = keys.header if keys is not None else ""
        self.challenges = ", ".join(c for c, on in ((_BEARER, authenticator is not None), (_KEY, keys is not None))
                                    if on)

    async def on_request(self, request: Request) -> None:
        """Raises MissingToken, MissingCredentials, InvalidToken, InvalidApiKey or BadRequest
        (a repeated header, two credentials)."""
        incoming = request.incoming
        keys, authenticator = self.keys, self.authenticator
        if keys is None:  # JWT only
            identity = await authenticator.authenticate(  # type: ignore[union-attr]
                single_value(incoming, "Authorization"))
            if identity is None and self.required:
                raise MissingToken()
            request.ctx.identity = identity
            return None
        key = single_value(incoming, self.key_header)
        if authenticator is not None:
            authorization = single_value(incoming, "Authorization")
            if key is not None and _is_bearer(authorization):
                raise BadRequest(f"send one credential: a bearer token or an {self.key_header} key, not both")
            identity = await authenticator.authenticate(authorization)
            if identity is not None:
                request.ctx.identity = identity
                return None
        if key is None:
            if self.required:
                raise MissingCredentials(
                    f"an API key in {self.key_header}" + (" or a bearer token" if authenticator else "")
                    + " is required", self.challenges)
            return None
        try:
            request.ctx.identity = keys.identify(key)
        except InvalidApiKey as error:
            error.headers["WWW-Authenticate"] = self.challenges
            raise
        return None


def _is_bearer(authorization: str | None) -> bool:
    """Whether an ``Authorization`` value is of the Bearer scheme (as :meth:`Authenticator.authenticate` reads it)."""
    return authorization is not None and authorization.strip().partition(" ")[0].lower() == "bearer"
