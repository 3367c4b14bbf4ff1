"""gateway.headers: what a route passes on, drops and sets (compiled once per route), and single_value."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders

import gateway
from gateway.config import HeaderRules
from gateway.errors import BadRequest
from gateway.headers import (
    FORWARDING_HEADERS,
    STRIPPED_FROM_CLIENTS,
    HeaderPlan,
    field,
    single_value,
    tornado_headers,
)


def test_hop_by_hop_connection_listed_and_removed_fields_are_dropped_in_order() -> None:
    plan = HeaderPlan(HeaderRules(set={"X-Env": "prod"}, remove=("X-Debug",)))
    fields = [("Accept", "*/*"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
              ("Keep-Alive", "5"), ("X-Debug", "on"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
              ("X-Env", "client")]
    assert plan.apply(fields) == [("Accept", "*/*"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                  ("X-Env", "prod")]


@pytest.mark.parametrize(("connection", "kept"), [
    ("keep-alive", ["X-Private", "X-Other"]),
    ("close", ["X-Private", "X-Other"]),
    ("Keep-Alive, X-Private", ["X-Other"]),
    ("x-private,x-other", []),
    ("keep-alive", ["X-Private", "X-Other"]),  # the same value again: remembered, same answer
    ("Keep-Alive, X-Private", ["X-Other"]),
])
def test_a_plan_remembers_what_each_connection_value_adds(connection: str, kept: list[str]) -> None:
    plan = PLAN_FOR_CONNECTION
    out = plan.apply([("Connection", connection), ("X-Private", "1"), ("Keep-Alive", "5"), ("X-Other", "2")])
    assert [name for name, _ in out] == kept


PLAN_FOR_CONNECTION = HeaderPlan(HeaderRules(set={}, remove=()))


def test_reserved_names_cannot_be_set_by_a_rule() -> None:
    plan = HeaderPlan(HeaderRules(set={"X-Request-Id": "fixed", "Authorization": "Basic dXA="}, remove=()),
                      always_drop=("x-request-id", "authorization"), reserved=("x-request-id",))
    assert plan.apply([("X-Request-Id", "client"), ("Authorization", "Bearer t")]) == [
        ("Authorization", "Basic dXA=")]


def test_tornado_headers_keep_repeated_fields_as_separate_lines() -> None:
    out = tornado_headers([("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2")])
    assert out.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert out["Content-Type"] == "text/plain"


# A request plan as the runtime builds it: the gateway's own names, a route rule, a guarded key header.
REQUEST_PLAN = HeaderPlan(
    HeaderRules(set={"X-Api-Version": "2"}, remove=("X-Debug-Token",)),
    always_drop=(*FORWARDING_HEADERS, "X-User-Id", "X-User-Scopes", *STRIPPED_FROM_CLIENTS),
    reserved=(*FORWARDING_HEADERS, "X-User-Id", "X-User-Scopes"),
    fold_underscores=True, guarded=("X-Api-Key",))


@pytest.mark.parametrize(
    "name",
    [
        # identity headers of claims_to_headers, in every '_'/'-' mix and case
        "X_User_Id", "X-User_Id", "X_User-Id", "x_user_id", "X_USER_ID", "X_User_Scopes",
        # what the gateway sets: forwarding, request id, framing
        "X_Forwarded_For", "X-Forwarded_Proto", "X_Forwarded_Host", "X_Forwarded_Prefix", "X_Request_Id",
        "Content_Length",
        # hop-by-hop
        "Transfer_Encoding", "Keep_Alive", "Proxy_Authorization", "Proxy_Connection",
        # always stripped from clients
        "X_Real_IP", "X_Forwarded_Port", "X_Forwarded_Ssl",
        # the route's own rules
        "X_Api_Version", "X_Debug_Token",
        # the header a policy reads (the rate-limit key): a backend must see the value the policy saw
        "X_Api_Key", "X-Api_Key",
    ],
)
def test_an_underscore_spelling_of_an_owned_name_is_dropped(name: str) -> None:
    assert REQUEST_PLAN.apply([("Accept", "*/*"), (name, "spoofed")]) == [
        ("Accept", "*/*"), ("X-Api-Version", "2")]


@pytest.mark.parametrize(
    "name", ["Forwarded", "X-Real-IP", "x-real-ip", "X-Forwarded-Port", "X-Forwarded-Ssl", "X-User-Id",
             "X-Forwarded-For", "X-Debug-Token"])
def test_the_client_copy_of_an_owned_or_stripped_name_is_dropped(name: str) -> None:
    assert REQUEST_PLAN.apply([(name, "spoofed")]) == [("X-Api-Version", "2")]


@pytest.mark.parametrize(
    ("name", "value"),
    [("X_Custom", "1"), ("X_User", "1"), ("X_User_Ident", "1"), ("My_Header", "1"), ("X-Api-Key", "k"),
     ("Accept_Language", "en")],
)
def test_an_underscore_name_that_folds_onto_nothing_owned_passes(name: str, value: str) -> None:
    assert REQUEST_PLAN.apply([(name, value)]) == [(name, value), ("X-Api-Version", "2")]


def test_a_response_plan_does_not_fold() -> None:
    plan = HeaderPlan(HeaderRules(set={}, remove=("Server",)))
    assert plan.apply([("X_Request_Id", "a"), ("Server_", "b"), ("Keep_Alive", "c")]) == [
        ("X_Request_Id", "a"), ("Server_", "b"), ("Keep_Alive", "c")]


def _headers(*lines: tuple[str, str]) -> HTTPHeaders:
    headers = HTTPHeaders()
    for name, value in lines:
        headers.add(name, value)
    return headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (_headers(), None),
        (_headers(("Authorization", "Bearer a")), "Bearer a"),
        (_headers(("authorization", "Bearer a")), "Bearer a"),
        (_headers(("Authorization", "Bearer a, Bearer b")), "Bearer a, Bearer b"),  # one line, as sent
        (_headers(("Authorization", "")), ""),
        (_headers(("X-Other", "1"), ("X-Other", "2"), ("Authorization", "Bearer a")), "Bearer a"),
        ({"authorization": "Bearer a"}, "Bearer a"),  # a plain mapping, case-insensitively
        ({}, None),
    ],
)
def test_single_value(headers: Mapping[str, str], expected: str | None) -> None:
    assert single_value(headers, "Authorization") == expected


@pytest.mark.parametrize(
    "lines",
    [
        (("Authorization", "Bearer a"), ("Authorization", "Bearer b")),
        (("Authorization", "Bearer a"), ("authorization", "Bearer a")),
        (("Authorization", ""), ("AUTHORIZATION", "Bearer a")),
    ],
)
def test_single_value_refuses_a_repeated_header(lines: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(BadRequest, match="^the Authorization header is repeated$") as caught:
        single_value(_headers(*lines), "Authorization")
    assert (caught.value.status, caught.value.code) == (400, "bad_request")


@pytest.mark.parametrize("block", [
    "Host: gw\r\n",
    "Host: gw\r\nX-Request-Id: abc\r\nTraceparent: 00-1-2-01\r\n",
    "x-forwarded-for: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\ncontent-length: 0\r\n",
    "X-REQUEST-ID: upper\r\nX-Empty:\r\n",
])
@pytest.mark.parametrize("name", ["X-Request-Id", "Traceparent", "X-Forwarded-For", "Content-Length", "X-Empty",
                                  "Host"])
def test_field_is_what_httpheaders_get_answers(block: str, name: str) -> None:
    headers = HTTPHeaders.parse(block)
    assert field(headers, name) == headers.get(name)


def test_every_name_the_package_asks_field_for_is_in_tornados_normalized_form() -> None:
    """field() reads HTTPHeaders._as_list by the name as given: a name not in the form Tornado keys
    that table by (``traceparent`` rather than ``Traceparent``) would never be found."""
    asked = set()
    for path in Path(gateway.__file__).parent.rglob("*.py"):
        asked |= set(re.findall(r'\bfield\([^,()]+, "([^"]+)"\)', path.read_text()))
    assert {"X-Request-Id", "Traceparent", "X-Forwarded-For", "Content-Length"} <= asked
    assert [name for name in sorted(asked) if HTTPHeaders({name: "x"})._as_list.keys() != {name}] == []
