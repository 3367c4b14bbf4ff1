"""WebSocket routes (SPEC §6): what is decided once per route, and the pure rules of the relay.

The relay itself (a handshake through the policy steps, then messages both ways)
is :mod:`gateway.http.websocket` and :mod:`gateway.http.wsrelay`. This module holds
what they look up:

- :class:`WebSocketPlan`: a ``websocket: true`` route's limits, compiled at load
  (``RoutePlan.websocket``; None on every other route, which so pays nothing).
- :func:`handshake_error`: RFC 6455 §4.2.1's checks of a client's handshake, as
  the gateway's JSON errors (400 ``bad_request``; 426 ``upgrade_required`` with
  ``Sec-WebSocket-Version: 13`` for another version, as RFC 6455 §4.4 says).
- :class:`WebSocketOriginStep`: the CORS origin check of a handshake (browsers
  apply no same-origin rule to WebSockets, so the gateway must: an ``Origin``
  the route's CORS section does not allow is 403 ``origin_not_allowed``; no
  ``Origin``, as non-browser clients send, passes).
- :func:`close_for_other_side`: which close code and reason one side gets when
  the other side's connection ended, the table the relay follows.
- :func:`upstream_url`: the ``ws://``/``wss://`` URL of a target.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from tornado.httputil import HTTPHeaders

from .config import RouteConfig, TargetConfig
from .errors import BadRequest, GatewayError
from .policies import Request, Step
from .policies.cors import CorsPolicy

__all__ = ["WebSocketPlan", "UpgradeRequired", "OriginNotAllowed", "WebSocketOriginStep", "handshake_error",
           "accept_value", "is_upgrade", "close_for_other_side", "upstream_url", "HANDSHAKE_FIELDS",
           "GOING_AWAY", "MESSAGE_TOO_BIG", "BAD_GATEWAY", "UNSENDABLE_CODES"]

GOING_AWAY = 1001  # RFC 6455 §7.4.1: an endpoint is going away (a server going down, a client gone)
MESSAGE_TOO_BIG = 1009
BAD_GATEWAY = 1014  # IANA's registry: a gateway got an invalid answer from (or lost) its upstream
# Codes that only report what happened and are never sent in a close frame (RFC 6455 §7.4.1).
UNSENDABLE_CODES = frozenset({1005, 1006, 1015})

# Each leg negotiates its own handshake: the client's key, version and extensions never reach the
# upstream (the gateway makes its own), nor the upstream's accept and extensions the client.
HANDSHAKE_FIELDS = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                              "sec-websocket-accept"})

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class UpgradeRequired(GatewayError):
    status, code, default_message = 426, "upgrade_required", "this route speaks WebSocket version 13"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, {"Sec-WebSocket-Version": "13"})


class OriginNotAllowed(GatewayError):
    status, code, default_message = 403, "origin_not_allowed", "this origin may not open a WebSocket here"


@dataclass(frozen=True)
class WebSocketPlan:
    """A ``websocket: true`` route's relay limits."""

    idle_seconds: float
    max_message_bytes: int

    @classmethod
    def for_route(cls, route: RouteConfig) -> WebSocketPlan | None:
        """The route's plan, or None for a route that relays no upgrade."""
        if not route.websocket:
            return None
        return cls(route.websocket_idle_seconds, route.websocket_max_message_bytes)


def is_upgrade(headers: HTTPHeaders) -> bool:
    """Whether the request asks for a WebSocket: ``Upgrade: websocket`` (any case)."""
    return any(token.strip().lower() == "websocket" for token in headers.get("Upgrade", "").split(","))


def handshake_error(method: str, headers: HTTPHeaders, declared_length: int) -> GatewayError | None:
    """What is wrong with a client's opening handshake (RFC 6455 §4.2.1), or None.

    A GET, no body, ``Connection`` naming ``upgrade``, one ``Sec-WebSocket-Key`` that is 16 bytes in
    base64, ``Sec-WebSocket-Version: 13`` (another: 426 with the version the gateway speaks).
    """
    if method != "GET":
        return BadRequest("a WebSocket handshake is a GET")
    if declared_length != 0:
        return BadRequest("a WebSocket handshake has no body")
    if not any(token.strip().lower() == "upgrade" for token in headers.get("Connection", "").split(",")):
        return BadRequest("a WebSocket handshake needs Connection: Upgrade")
    keys = headers.get_list("Sec-WebSocket-Key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return BadRequest("a WebSocket handshake needs one Sec-WebSocket-Key of 16 bytes in base64")
    if headers.get_list("Sec-WebSocket-Version") != ["13"]:
        return UpgradeRequired()
    return None


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip().encode() + _GUID).digest()).decode()


class WebSocketOriginStep(Step):
    """In the CORS slot of a ``websocket: true`` route that has a CORS policy: a handshake whose
    ``Origin`` the policy does not allow is refused (403); plain requests are CORS's as ever."""

    name = "websocket_origin"

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy

    def on_request(self, request: Request) -> None:
        incoming = request.incoming
        origin = incoming.get("Origin")
        if origin is not None and is_upgrade(incoming) \
                and "Access-Control-Allow-Origin" not in self.policy.response_headers(origin):
            raise OriginNotAllowed(log_message=f"WebSocket handshake from origin {origin!r} refused")
        return None


def close_for_other_side(side: str, received: tuple[int | None, str | None] | None,
                         sent: tuple[int | None, str | None] | None) -> tuple[int | None, str | None]:
    """The close code and reason for the other side, when ``side`` ("client" or "upstream") ended.

    ``received``: the close frame that side sent (code None: a frame with no code), None when it sent
    none. ``sent``: the close the gateway itself sent that side first (1009 for a message over the
    limit), None when it sent none. A close that side sent is passed on as it came, a code that may
    not be sent (1005, 1006, 1015) as a close with no code; one the gateway sent goes to both sides;
    a connection that simply dropped closes the other side with 1014 (the upstream was lost) or
    1001 (the client went away).
    """
    if received is not None:
        code, reason = received
        if code is None or code in UNSENDABLE_CODES:
            return None, None
        return code, reason
    if sent is not None and sent[0] is not None:
        return sent
    if side == "upstream":
        return BAD_GATEWAY, "upstream connection lost"
    return GOING_AWAY, "client went away"


def upstream_url(target: TargetConfig, path_and_query: str) -> str:
    """The target's WebSocket URL for ``path_and_query`` (its base path put in front)."""
    origin = target.origin
    scheme = "wss" if origin.scheme == "https" else "ws"
    return f"{scheme}://{origin.netloc}{target.base_path}{path_and_query}"
