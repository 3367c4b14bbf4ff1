"""HeaderPlan: what a route passes on, drops and sets, compiled once per route."""

from __future__ import annotations

from gateway.config import HeaderRules
from gateway.headers import HeaderPlan, tornado_headers


def test_hop_by_hop_connection_listed_and_removed_fields_are_dropped_in_order() -> None:
    plan = HeaderPlan(HeaderRules(set={"X-Env": "prod"}, remove=("X-Debug",)))
    fields = [("Accept", "*/*"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
              ("Keep-Alive", "5"), ("X-Debug", "on"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
              ("X-Env", "client")]
    assert plan.apply(fields) == [("Accept", "*/*"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                  ("X-Env", "prod")]


def test_reserved_names_cannot_be_set_by_a_rule() -> None:
    plan = HeaderPlan(HeaderRules(set={"X-Request-Id": "fixed", "Authorization": "Basic dXA="}, remove=()),
                      always_drop=("x-request-id", "authorization"), reserved=("x-request-id",))
    assert plan.apply([("X-Request-Id", "client"), ("Authorization", "Bearer t")]) == [
        ("Authorization", "Basic dXA=")]


def test_tornado_headers_keep_repeated_fields_as_separate_lines() -> None:
    out = tornado_headers([("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2")])
    assert out.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert out["Content-Type"] == "text/plain"
