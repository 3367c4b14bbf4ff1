"""The body step: the rules a request body is held to, decided on the headers alone.

Before any body byte is read: a declared ``Content-Length`` over
``server.max_body_bytes`` is a 413, and the body's way is chosen
(:class:`~gateway.policies.BodyMode`):

- none: the request has no body;
- buffered (replayable, so retryable): a declared length up to the upstream's
  ``replay_buffer_bytes``, any body of a method that cannot stream (``GET``,
  ``DELETE``... with a chunked body) and every body of a ``validate_json`` route,
  whose JSON (``Content-Type`` ``application/json`` or ``+json``) is checked as it
  arrives (:mod:`gateway.jsonbody`);
- streamed: larger or of unknown length, fed to the upstream as it arrives and
  never retried.

The limit is enforced on what arrives too (a chunked body has no declared
length): the verdict carries it for the conductor to count against.
"""

from __future__ import annotations

from ..errors import BodyTooLarge
from ..framing import CHUNKED
from ..jsonbody import is_json_media_type
from . import BodyMode, Request, Step

__all__ = ["BodyStep"]

_STREAMING_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyStep(Step):
    """One route's body rules: ``max_body_bytes`` (the server's), the upstream's
    ``replay_buffer_bytes`` and the route's ``validate_json``."""

    name = "body"

    def __init__(self, max_body_bytes: int, replay_buffer_bytes: int, validate_json: bool) -> None:
        self.max_body_bytes = max_body_bytes
        self.replay_buffer_bytes = replay_buffer_bytes
        self.validate_json = validate_json

    def on_request(self, request: Request) -> None:
        """Record the body's mode, limit and check on ``request``; raises BodyTooLarge."""
        length = request.declared_length
        if length == 0:
            return None
        limit = request.body_limit = self.max_body_bytes
        if length > limit:
            raise BodyTooLarge(f"request body is {length} bytes; the limit is {limit}")
        streamable = length != CHUNKED or request.method in _STREAMING_METHODS
        if self.validate_json or not streamable or 0 <= length <= self.replay_buffer_bytes:
            request.body_mode = BodyMode.BUFFER
            request.json_check = self.validate_json and is_json_media_type(request.incoming.get("Content-Type", ""))
        else:
            request.body_mode = BodyMode.STREAM
        return None
