"""The JSON 400 written in place of Tornado's bare one (gateway.malformed.malformed_answer)."""

from __future__ import annotations

import json

import pytest

from gateway.malformed import malformed_answer


@pytest.mark.parametrize("request_id", ["0123456789abcdef0123456789abcdef", "client-id.1", "a"])
def test_the_answer_is_spec_json_with_its_framing(request_id: str) -> None:
    head, _, body = malformed_answer(request_id).partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    assert dict(line.split(": ", 1) for line in lines[1:]) == {
        "Content-Type": "application/json", "Cache-Control": "no-store", "Content-Length": str(len(body)),
        "Connection": "close", "X-Request-Id": request_id}
    assert json.loads(body) == {"error": "bad_request", "message": "malformed request", "status": 400,
                                "request_id": request_id}
