"""gateway.policies.cors: preflight detection, preflight answers and actual-response headers, as tables."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from gateway.config import CorsConfig
from gateway.policies.cors import CorsPolicy

APP = "https://app.example.com"

EXPLICIT = CorsConfig(
    allow_origins=(APP, "https://Admin.Example.com"),
    allow_methods=("GET", "POST", "PATCH"),
    allow_headers=("Authorization", "Content-Type", "X-Api-Key"),
    expose_headers=("X-Request-Id", "RateLimit-Remaining"),
    allow_credentials=False,
    max_age_seconds=600,
)
CREDENTIALS = CorsConfig(
    allow_origins=(APP,),
    allow_methods=("GET",),
    allow_headers=("Authorization",),
    allow_credentials=True,
    max_age_seconds=60,
)
STAR = CorsConfig(allow_origins=("*",), allow_methods=("GET", "POST"), allow_headers=("Content-Type",))
STAR_CREDENTIALS = CorsConfig(
    allow_origins=("*",), allow_methods=("*",), allow_headers=("*",), allow_credentials=True, max_age_seconds=5
)
NO_ORIGINS = CorsConfig()

EXPLICIT_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, PATCH",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("OPTIONS", {"Origin": APP, "Access-Control-Request-Method": "POST"}, True),
        ("OPTIONS", {"origin": APP, "access-control-request-method": "POST"}, True),
        ("OPTIONS", HTTPHeaders({"ORIGIN": APP, "Access-Control-Request-Method": "POST"}), True),
        ("OPTIONS", {"Origin": APP}, False),  # a plain OPTIONS request goes upstream
        ("OPTIONS", {"Access-Control-Request-Method": "POST"}, False),
        ("GET", {"Origin": APP, "Access-Control-Request-Method": "POST"}, False),
        ("OPTIONS", {}, False),
    ],
)
def test_is_preflight(method, headers, expected):
    assert CorsPolicy(EXPLICIT).is_preflight(method, headers) is expected


@pytest.mark.parametrize(
    ("config", "origin", "method", "request_headers", "expected"),
    [
        (EXPLICIT, APP, "POST", None, {"Access-Control-Allow-Origin": APP, **EXPLICIT_PREFLIGHT}),
        (EXPLICIT, APP, "PATCH", "authorization, content-type",
         {"Access-Control-Allow-Origin": APP, **EXPLICIT_PREFLIGHT}),
        (EXPLICIT, APP, "GET", "X-API-KEY,Content-Type , ", {"Access-Control-Allow-Origin": APP, **EXPLICIT_PREFLIGHT}),
        (EXPLICIT, APP, "GET", "accept, accept-language, content-language",
         {"Access-Control-Allow-Origin": APP, **EXPLICIT_PREFLIGHT}),
        # Origins compare case-insensitively; the browser's spelling is echoed.
        (EXPLICIT, "https://admin.example.com", "GET", "",
         {"Access-Control-Allow-Origin": "https://admin.example.com", **EXPLICIT_PREFLIGHT}),
        (EXPLICIT, "https://evil.example.com", "GET", None, None),
        (EXPLICIT, "http://app.example.com", "GET", None, None),  # another scheme is another origin
        (EXPLICIT, "null", "GET", None, None),
        (EXPLICIT, APP, "DELETE", None, None),
        (EXPLICIT, APP, "patch", None, None),  # methods are case-sensitive
        (EXPLICIT, APP, "GET", "Authorization, X-Secret", None),
        (EXPLICIT, APP, "GET", "Cookie", None),
        (NO_ORIGINS, APP, "GET", None, None),
        (CREDENTIALS, APP, "GET", "Authorization", {
            "Access-Control-Allow-Origin": APP,
            "Access-Control-Allow-Methods": "GET",
            "Access-Control-Allow-Headers": "Authorization",
            "Access-Control-Max-Age": "60",
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }),
        (STAR, "https://anyone.example", "POST", "content-type", {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }),
        (STAR, "https://anyone.example", "PUT", None, None),
        # With credentials a "*" must not be sent: the origin, method and headers are echoed.
        (STAR_CREDENTIALS, "https://anyone.example", "PURGE", "X-One, x-two", {
            "Access-Control-Allow-Origin": "https://anyone.example",
            "Access-Control-Allow-Methods": "PURGE",
            "Access-Control-Allow-Headers": "x-one, x-two",
            "Access-Control-Max-Age": "5",
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }),
    ],
)
def test_preflight_headers(config, origin, method, request_headers, expected):
    assert CorsPolicy(config).preflight_headers(origin, method, request_headers) == expected


@pytest.mark.parametrize(
    ("config", "origin", "expected"),
    [
        (EXPLICIT, APP, {
            "Access-Control-Allow-Origin": APP,
            "Access-Control-Expose-Headers": "X-Request-Id, RateLimit-Remaining",
            "Vary": "Origin",
        }),
        # A refused or absent origin gets no CORS header, but the answer still varies by Origin.
        (EXPLICIT, "https://evil.example.com", {"Vary": "Origin"}),
        (EXPLICIT, None, {"Vary": "Origin"}),
        (CREDENTIALS, APP, {
            "Access-Control-Allow-Origin": APP,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }),
        (STAR, "https://anyone.example", {"Access-Control-Allow-Origin": "*"}),
        (STAR, None, {}),
        (STAR_CREDENTIALS, "https://anyone.example", {
            "Access-Control-Allow-Origin": "https://anyone.example",
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }),
        (NO_ORIGINS, APP, {"Vary": "Origin"}),
    ],
)
def test_response_headers(config, origin, expected):
    assert CorsPolicy(config).response_headers(origin) == expected


def test_returned_headers_are_copies():
    policy = CorsPolicy(EXPLICIT)
    policy.response_headers(APP)["Vary"] = "Accept"
    policy.response_headers(None)["X"] = "y"
    headers = policy.preflight_headers(APP, "GET", None)
    assert headers is not None
    headers["Vary"] = "Accept"
    assert policy.response_headers(APP)["Vary"] == "Origin"
    assert policy.response_headers(None) == {"Vary": "Origin"}
    assert policy.preflight_headers(APP, "GET", None) == {"Access-Control-Allow-Origin": APP, **EXPLICIT_PREFLIGHT}
