"""gateway.policies: each built-in step's decision as a table, the step runner, Reply."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders

from gateway.config import CorsConfig, RateLimitConfig, RouteConfig
from gateway.context import RequestContext
from gateway.errors import BodyTooLarge, HeadersTooLarge, MethodNotAllowed, NoRoute, RateLimited, UriTooLong
from gateway.framing import CHUNKED
from gateway.headers import TrustedProxies
from gateway.policies import (
    ORDER,
    BodyMode,
    Reply,
    Request,
    Response,
    Step,
    finish_compile,
    run_request_steps,
)
from gateway.policies.body import BodyStep
from gateway.policies.cors import CorsPolicy, CorsStep, merge_vary, preflight_method
from gateway.policies.gcra import GcraRule
from gateway.policies.ratelimit import LimitKey, MemoryStore, RateLimitStep
from gateway.policies.route import RouteStep
from gateway.routing import RouteTable

APP = "https://app.example.com"


def view(method: str = "GET", uri: str = "/api", headers: dict[str, str] | None = None, length: int = 0,
         remote_ip: str = "10.0.0.1") -> Request:
    path, _, query = uri.partition("?")
    return Request(method, uri, path, query, "127.0.0.1", remote_ip, HTTPHeaders(headers or {}),
                   RequestContext("rid", remote_ip), length)


def test_order_is_the_spec_order() -> None:
    assert ORDER == ("request_id", "route", "cors", "auth", "scopes", "ip_rules", "rate_limit", "body", "plugins",
                     "cache")


# --- body ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "length", "validate_json", "content_type", "mode", "json_check"), [
    ("GET", 0, False, "", BodyMode.NONE, False),
    ("POST", 10, False, "", BodyMode.BUFFER, False),  # within replay_buffer_bytes (100)
    ("POST", 100, False, "", BodyMode.BUFFER, False),
    ("POST", 101, False, "", BodyMode.STREAM, False),
    ("POST", CHUNKED, False, "", BodyMode.STREAM, False),
    ("PUT", CHUNKED, False, "", BodyMode.STREAM, False),
    ("GET", CHUNKED, False, "", BodyMode.BUFFER, False),  # GET/DELETE with a chunked body: not streamed
    ("DELETE", 500, False, "", BodyMode.STREAM, False),  # a known length streams whatever the method
    ("POST", 500, True, "application/json", BodyMode.BUFFER, True),
    ("POST", CHUNKED, True, "application/vnd.api+json", BodyMode.BUFFER, True),
    ("POST", 500, True, "text/plain", BodyMode.BUFFER, False),  # buffered, but not JSON: not checked
])
def test_body_mode(method: str, length: int, validate_json: bool, content_type: str, mode: int,
                   json_check: bool) -> None:
    request = view(method, headers={"Content-Type": content_type} if content_type else {}, length=length)
    assert BodyStep(1000, 100, validate_json).on_request(request) is None
    assert (request.body_mode, request.json_check) == (mode, json_check)
    assert request.body_limit == (1000 if length else 0)


@pytest.mark.parametrize(("length", "refused"), [(1000, False), (1001, True), (CHUNKED, False)])
def test_body_declared_over_the_limit_is_413(length: int, refused: bool) -> None:
    step = BodyStep(1000, 100, False)
    if refused:
        with pytest.raises(BodyTooLarge, match="request body is 1001 bytes; the limit is 1000"):
            step.on_request(view("POST", length=length))
    else:
        assert step.on_request(view("POST", length=length)) is None


# --- cors ---------------------------------------------------------------------------------------

CORS = CorsStep(CorsPolicy(CorsConfig(allow_origins=(APP,), allow_methods=("GET", "POST"))))


@pytest.mark.parametrize(("method", "headers", "expected"), [
    ("OPTIONS", {"Access-Control-Request-Method": "POST"}, "POST"),
    ("OPTIONS", {}, None),
    ("GET", {"Access-Control-Request-Method": "POST"}, None),
])
def test_preflight_method(method: str, headers: dict[str, str], expected: str | None) -> None:
    assert preflight_method(method, HTTPHeaders(headers)) == expected


@pytest.mark.parametrize(("method", "headers", "status", "allow_origin"), [
    ("OPTIONS", {"Origin": APP, "Access-Control-Request-Method": "POST"}, 204, APP),
    ("OPTIONS", {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, 204, None),
    ("OPTIONS", {"Origin": APP, "Access-Control-Request-Method": "DELETE"}, 204, None),
    ("OPTIONS", {"Origin": APP}, None, None),  # a plain OPTIONS goes on, upstream
    ("OPTIONS", {"Access-Control-Request-Method": "POST"}, None, None),
    ("GET", {"Origin": APP}, None, None),
])
def test_cors_answers_preflights_itself(method: str, headers: dict[str, str], status: int | None,
                                        allow_origin: str | None) -> None:
    answer = CORS.on_request(view(method, headers=headers))
    if status is None:
        assert answer is None
        return
    assert answer is not None and answer.status == status and answer.body == b""
    assert answer.headers.get("Access-Control-Allow-Origin") == allow_origin


@pytest.mark.parametrize(("origin", "upstream_vary", "expected"), [
    (APP, None, {"Access-Control-Allow-Origin": APP, "Vary": "Origin"}),
    (APP, "Accept-Encoding", {"Access-Control-Allow-Origin": APP, "Vary": "Accept-Encoding, Origin"}),
    (APP, "origin", {"Access-Control-Allow-Origin": APP, "Vary": "origin"}),
    ("https://evil.example", None, {"Vary": "Origin"}),
    (None, "*", {"Vary": "*"}),
])
def test_cors_on_response_decorates_and_merges_vary(origin: str | None, upstream_vary: str | None,
                                                    expected: dict[str, str]) -> None:
    out = HTTPHeaders({"Vary": upstream_vary} if upstream_vary else {})
    CORS.on_response(view(headers={"Origin": origin} if origin else {}), Response(200, out))
    assert dict(out) == expected


@pytest.mark.parametrize(("existing", "added", "expected"), [
    (["Accept"], "Origin", "Accept, Origin"),
    (["Accept, Origin"], "Origin", "Accept, Origin"),
    (["Accept", "Cookie"], "Origin", "Accept, Cookie, Origin"),
    (["*"], "Origin", "*"),
])
def test_merge_vary(existing: list[str], added: str, expected: str) -> None:
    assert merge_vary(existing, added) == expected


# --- route --------------------------------------------------------------------------------------

ROUTES = (RouteConfig(name="api", path="/api", upstream="up", methods=("GET",)),)


def route_step(trusted: tuple[str, ...] = ()) -> RouteStep:
    return RouteStep(RouteTable(ROUTES), {"api": "the api plan"}, TrustedProxies(trusted))  # type: ignore[dict-item]


@pytest.mark.parametrize(("method", "uri", "headers", "error"), [
    ("TRACE", "/api", {}, MethodNotAllowed),
    ("GET", "/api?" + "q" * 8200, {}, UriTooLong),
    ("GET", "/api", {f"X-{i}": "v" * 1000 for i in range(70)}, HeadersTooLarge),
    ("GET", "/nope", {}, NoRoute),
    ("POST", "/api", {}, MethodNotAllowed),  # the route takes GET only
])
def test_route_refusals(method: str, uri: str, headers: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        route_step().on_request(view(method, uri, headers))


def test_route_records_the_plan_the_match_and_the_client() -> None:
    request = view("GET", "/api/x?y=1", {"X-Forwarded-For": "203.0.113.9"}, remote_ip="10.0.0.1")
    assert route_step(("10.0.0.0/8",)).on_request(request) is None
    assert request.plan == "the api plan"
    assert request.ctx.match is not None and request.ctx.match.route.name == "api"
    assert (request.client_ip, request.ctx.client_ip, request.forwarded_for) == (
        "203.0.113.9", "203.0.113.9", "203.0.113.9, 10.0.0.1")


def test_a_preflight_is_routed_by_the_method_it_asks_about() -> None:
    request = view("OPTIONS", "/api", {"Origin": APP, "Access-Control-Request-Method": "GET"})
    route_step().on_request(request)
    assert request.plan == "the api plan"


# --- rate limit ---------------------------------------------------------------------------------

class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rate_limit_step_records_headers_then_refuses(io_loop: Any) -> None:
    refused: list[str] = []
    step = RateLimitStep("api", RateLimitConfig(requests=2, window_seconds=10, key="ip"), LimitKey("api", "ip"),
                         refused.append)
    step.store = MemoryStore(Clock())
    assert step.rule == GcraRule(2, 10)  # computed once, at build
    first = view()
    assert await step.on_request(first) is None
    assert first.rate_limit_headers == {"RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "5"}
    out = HTTPHeaders()
    step.on_response(first, Response(200, out))
    assert dict(out) == dict(HTTPHeaders(first.rate_limit_headers))
    await step.on_request(view())
    with pytest.raises(RateLimited) as caught:
        await step.on_request(view())
    assert caught.value.headers == {"RateLimit-Limit": "2", "RateLimit-Remaining": "0", "RateLimit-Reset": "10",
                                    "Retry-After": "5"}
    assert refused == ["api"]


async def test_rate_limit_step_without_a_store_lets_through(io_loop: Any) -> None:
    step = RateLimitStep("api", RateLimitConfig(requests=1, window_seconds=1), LimitKey("api", "ip"))
    assert await step.on_request(view()) is None


# --- the runner and Reply -----------------------------------------------------------------------

class Note(Step):
    def __init__(self, name: str, answer: Reply | None = None) -> None:
        self.name, self.answer = name, answer

    def on_request(self, request: Request) -> Reply | None:
        request.headers.add("X-Seen", self.name)
        return self.answer


class AsyncNote(Note):
    async def on_request(self, request: Request) -> Reply | None:  # type: ignore[override]
        return super().on_request(request)


async def test_steps_run_in_order_until_one_answers(io_loop: Any) -> None:
    stop = Reply(418, "no")
    steps = tuple(finish_compile(s) for s in (Note("a"), AsyncNote("b"), Note("c", stop), Note("d")))
    assert [s.awaits for s in steps] == [False, True, False, False]
    request = view()
    assert await run_request_steps(steps, request) is stop
    assert request.headers.get_list("X-Seen") == ["a", "b", "c"]
    assert request.passed == 2  # a and b let it go on: theirs are the on_response calls due
    assert "X-Seen" not in request.incoming  # the incoming headers are never changed


def test_headers_are_copied_only_when_asked_for() -> None:
    request = view(headers={"A": "1"})
    assert request.upstream_source() is request.incoming
    request.headers["B"] = "2"
    assert request.upstream_source() is request.headers
    assert dict(request.upstream_source()) == {"A": "1", "B": "2"}


@pytest.mark.parametrize(("body", "headers", "data", "content_type"), [
    ({"a": 1}, {}, b'{"a":1}', "application/json"),
    ("hé", {}, "hé".encode(), "text/plain; charset=utf-8"),
    (b"\x00\x01", {}, b"\x00\x01", "application/octet-stream"),
    ("<p>", {"content-type": "text/html"}, b"<p>", None),  # the plugin's own type wins
    (b"", {}, b"", None),
])
def test_reply_bodies(body: Any, headers: dict[str, str], data: bytes, content_type: str | None) -> None:
    reply = Reply(200, body, headers)
    assert reply.body == data
    assert reply.headers.get("Content-Type") == content_type
    assert reply.problem is None


def test_reply_error_is_a_spec_error() -> None:
    reply = Reply.error(402, "pay_up", "payment required", {"X-Why": "money"})
    assert reply.problem is not None
    assert (reply.problem.status, reply.problem.code, reply.problem.message, reply.problem.headers) == (
        402, "pay_up", "payment required", {"X-Why": "money"})
    from gateway.errors import render_error

    assert json.loads(render_error(reply.problem, "rid")) == {
        "error": "pay_up", "message": "payment required", "status": 402, "request_id": "rid"}


@pytest.mark.parametrize(("status", "body", "headers"), [
    (99, b"", {}), (600, b"", {}), (True, b"", {}), (200, 5, {}), (200, b"", {"X-A": "1\r\nX-B: 2"}),
    (200, b"", {"Bad Name": "v"}), (200, b"", {"X-A": 1}),
])
def test_reply_refuses_what_cannot_be_sent(status: Any, body: Any, headers: Any) -> None:
    with pytest.raises(ValueError):
        Reply(status, body, headers)
