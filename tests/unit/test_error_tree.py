"""The error tree (gateway.errors): what a body shows apart from what the log gets."""

from __future__ import annotations

import json

import pytest

from gateway.errors import (
    BadGateway,
    GatewayError,
    InvalidToken,
    NoHealthyUpstream,
    UpstreamConnectError,
    UpstreamTimeout,
    render_error,
)


@pytest.mark.parametrize(("error", "status", "code", "message", "detail"), [
    (UpstreamConnectError(log_message="cannot connect to http://10.0.0.7:9001: Connection refused", refused=True),
     502, "bad_gateway", "the upstream could not be reached", "cannot connect to http://10.0.0.7:9001: Connection refused"),
    (UpstreamTimeout(log_message="http://10.0.0.7:9001 did not answer within 2s"),
     504, "upstream_timeout", "the upstream took too long to answer", "http://10.0.0.7:9001 did not answer within 2s"),
    (BadGateway("the upstream sent an invalid answer", log_message="http://10.0.0.7:9001 answered malformed HTTP"),
     502, "bad_gateway", "the upstream sent an invalid answer", "http://10.0.0.7:9001 answered malformed HTTP"),
    (NoHealthyUpstream(log_message="upstream 'billing' has no healthy target"),
     503, "no_healthy_upstream", "no healthy upstream target", "upstream 'billing' has no healthy target"),
    (InvalidToken("unknown key id", log_message="key id 'k1' is not in the JWK set from https://idp/jwks"),
     401, "invalid_token", "unknown key id", "key id 'k1' is not in the JWK set from https://idp/jwks"),
    (BadGateway(), 502, "bad_gateway", "the upstream failed to answer", "the upstream failed to answer"),
])
def test_the_body_shows_the_message_and_the_log_gets_the_detail(
        error: GatewayError, status: int, code: str, message: str, detail: str) -> None:
    assert (error.status, error.code, error.message, error.detail, str(error)) == (status, code, message, detail, message)
    assert json.loads(render_error(error, "rid")) == {"error": code, "message": message, "status": status,
                                                      "request_id": "rid"}


def test_flags_survive_the_split() -> None:
    assert UpstreamConnectError(log_message="x", refused=True).refused is True
    assert UpstreamTimeout(log_message="x", sent=False).sent is False
    assert InvalidToken("unknown key id", log_message="x").headers["WWW-Authenticate"] == \
        'Bearer realm="gateway", error="invalid_token", error_description="unknown key id"'
