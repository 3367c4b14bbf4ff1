"""RequestContext: the one object a request carries from admission to the access log."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .auth import Identity
    from .routing import Match


class RequestContext:
    """What is known about one request; filled in step by step, read by logs and metrics."""

    __slots__ = (
        "request_id", "client_ip", "match", "identity", "upstream", "target",
        "bytes_in", "bytes_out", "response_headers",
    )

    def __init__(self, request_id: str, client_ip: str) -> None:
        self.request_id = request_id
        self.client_ip = client_ip
        self.match: Match | None = None
        self.identity: Identity | None = None
        self.upstream: str | None = None
        self.target: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        # Headers every answer carries, gateway-made or relayed (rate-limit state, CORS).
        self.response_headers: dict[str, str] = {}

    @property
    def route_name(self) -> str:
        return self.match.route.name if self.match is not None else ""

    @property
    def subject(self) -> str | None:
        return self.identity.subject if self.identity is not None else None
