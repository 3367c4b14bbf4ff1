"""gateway.configerrors: pydantic's errors in the loader's words, and the order problems are listed in."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_core import ErrorDetails

from gateway.configerrors import Located, translate
from gateway.configtypes import GATEWAY_ERROR, UNSET_ERROR
from gateway.yamldoc import UNSET


def error(kind: str, loc: tuple[Any, ...], value: Any = None, **ctx: Any) -> ErrorDetails:
    return ErrorDetails(type=kind, loc=loc, msg="pydantic's words", input=value, ctx=ctx)


@pytest.mark.parametrize(("details", "expected"), [
    (error(GATEWAY_ERROR, ("server", "port"), 1, message="must be at most 65535"),
     (("server", "port"), "must be at most 65535")),
    (error("extra_forbidden", ("servre",), 1), (("servre",), "unknown key")),
    (error("invalid_key", (0,), 0), ((0,), "unknown key")),
    (error("missing", ("routes", 0, "name"), {}), (("routes", 0, "name"), "is required")),
    (error("model_type", ("server",), [1]), (("server",), "expected a mapping, got a list")),
    (error("model_type", (), "x"), ((), "expected a mapping at the top level, got a string")),
    (error("dict_type", ("a",), None), (("a",), "expected a mapping, got nothing")),
    (error("list_type", ("a",), 1.5), (("a",), "expected a list, got a number")),
    # the tags of the target union are not part of a location
    (error("missing", ("upstreams", "u", "targets", 1, "<target>", "url"), {}),
     (("upstreams", "u", "targets", 1, "url"), "is required")),
    (error("model_type", ("upstreams", "u", "targets", 1, "<target>"), 3),
     (("upstreams", "u", "targets", 1), "expected a mapping, got an integer")),
    # an unset ${VAR} is reported once, by the substitution
    (error(UNSET_ERROR, ("server", "port"), UNSET), None),
    (error("model_type", ("server",), UNSET), None),
    # a kind the models never raise is still a located line
    (error("too_long", ("a",), []), (("a",), "pydantic's words")),
])
def test_translate(details: ErrorDetails, expected: tuple[tuple[Any, ...], str] | None) -> None:
    assert translate(details) == expected


def test_problems_are_listed_in_the_order_of_the_file() -> None:
    raw = {"routes": [{"upstream": "x", "name": "a", True: 1}], "server": {"port": "p", "host": 3}, None: 1}
    found = Located()
    found.add(("routes", 0), "a route's own check", section=("routes", 0))
    found.add(("routes", 0, "upstream"), "after the route's keys", section=("routes", 0))
    found.add(("routes", 0, 1), "a key written true")
    found.add(("routes", 0, "path"), "is required")
    found.add(("routes", 0, "name"), "second key")
    found.add(("server", "host"), "second key of server")
    found.add(("server", "port"), "first key of server")
    found.add(("None",), "a key written null")
    found.add((), "the file's own")
    assert found.lines(raw) == [
        "server.port: first key of server",
        "server.host: second key of server",
        "[None]: a key written null",
        "routes[0].name: second key",
        "routes[0][True]: a key written true",
        "routes[0].path: is required",
        "routes[0]: a route's own check",
        "routes[0].upstream: after the route's keys",
        "(top level): the file's own",
    ]
    assert found.under(("routes", 0)) and found.under(("server",)) and not found.under(("admin",))
