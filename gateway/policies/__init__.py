"""The policy steps: one interface, one order, compiled per route at load.

A request's way through the gateway, written once (:data:`ORDER`)::

    request id → route → CORS preflight → auth → scopes → IP rules → rate limit
    → body rules → plugins → cache → forward

The request id and the route are known before any route is (the conductor runs
them for every request: :class:`~gateway.policies.route.RouteStep` picks the
route's :class:`~gateway.runtime.RoutePlan`); everything after is a tuple of
:class:`Step` objects compiled for that route at load (:func:`compile_steps`):
a route with no CORS, no auth or no rate limit has no such step at all, so the
request path only loops over a tuple.

Every step has the one narrow interface operators' plugins have (SPEC §7;
:class:`gateway.plugin.Plugin` is its public face):

- ``on_request(request)`` sees a :class:`Request` view and returns a
  :class:`Reply` (the answer; nothing after it runs) or None (go on). It records
  request-header changes on the view (``request.headers``, what goes upstream).
  A built-in step may raise a :class:`~gateway.errors.GatewayError` instead of
  replying; a plugin answers errors with :meth:`Reply.error`. It may be a plain
  function or a coroutine (``awaits`` says which, found once at compile time).
- ``on_response(request, response)`` changes the answer's headers before the
  client sees them (CORS, rate-limit headers, plugins). It is called, in order,
  for the steps whose ``on_request`` let the request go on (returned None), on
  every answer: relayed, gateway-made or an error. The built-in ones return
  None; a plugin's may be ``async def`` and may wait: then its wrapper returns an
  awaitable, :func:`run_response_steps` hands back an awaitable of its verdict
  instead of the verdict, and the answer's head waits for it (one with no
  ``await`` in its code is run to its end at once: no task, no turn of the loop).

The conductor (:class:`gateway.http.handler.ProxyHandler`) runs :func:`run_request_steps` and
:func:`run_response_steps` and acts on what they return; it decides nothing.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from tornado.httputil import HTTPHeaders

from ..errors import GatewayError, InternalError

if TYPE_CHECKING:
    from ..context import RequestContext

__all__ = ["ORDER", "CompiledRoute", "Step", "Request", "Response", "Reply", "ReplyError", "BodyMode",
           "run_request_steps", "run_response_steps"]

# The policy order, written once. "request_id" and "route" run for every request before the
# route is known; the rest are compiled per route (gateway.policies.compile.compile_steps).
# "ip_rules": SPEC §8's IP allow/deny lists (gateway.policies.iprules; a route with CORS also checks them ahead of
# CORS for preflights, which the CORS step answers itself).
ORDER: tuple[str, ...] = (
    "request_id", "route", "cors", "auth", "scopes", "ip_rules", "rate_limit", "body", "plugins",
    "cache",  # last: a hit is a request like any other (auth, limits and plugins ran); gateway.cache
)

_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")



class CompiledRoute(Protocol):
    """What the policy steps read of a route's plan (:class:`gateway.runtime.RoutePlan`, which
    this package must not import: the runtime builds the steps): its steps after the route, and
    those of them with an ``on_response``, by index."""

    @property
    def steps(self) -> tuple[Step, ...]: ...

    @property
    def responders(self) -> tuple[tuple[int, Step], ...]: ...

class Step:
    """One policy step of one route: built at load, run per request. Subclasses override
    ``on_request`` and/or ``on_response``; the defaults do nothing."""

    name: str = ""
    awaits: bool = False  # on_request is a coroutine function (set by compile)
    responds: bool = False  # on_response is overridden (set by compile)
    is_plugin: bool = False  # an operator's plugin (gateway.policies.plugins.PluginStep)

    def on_request(self, request: Request) -> Any:
        """A :class:`Reply` to answer now, None to go on (or a coroutine of either)."""
        return None

    def on_response(self, request: Request, response: Response) -> Any:
        """Change ``response.headers`` before the client sees them."""
        return None


class BodyMode:
    """How a request body travels, as the body step decides it (:mod:`gateway.policies.body`)."""

    NONE = 0  # no body
    BUFFER = 1  # read whole first: replayable, so retryable; a validate_json body is checked as it comes
    STREAM = 2  # fed to the upstream as it arrives, never retried


class Request:
    """One request as the steps see it (public as :class:`gateway.plugin.Request`).

    For plugins: ``method``, ``path``, ``query``, ``client_ip``, ``route`` (the route's
    name), ``subject`` and ``claims`` (None without a verified token), and ``headers``:
    case-insensitive and mutable, what goes upstream. The other attributes are the
    built-in steps' (the incoming headers, read as they came; the verdicts they record).

    ``headers`` is made on first use (a copy of the incoming headers): a route whose
    steps never ask for it costs no copy.
    """

    __slots__ = ("method", "uri", "path", "query", "host", "remote_ip", "client_ip", "forwarded_for", "incoming",
                 "ctx", "declared_length", "plan", "passed", "body_mode", "json_check", "body_limit",
                 "rate_limit_headers", "plugins_failed", "_headers", "cache")

    def __init__(self, method: str, uri: str, path: str, query: str, host: str, remote_ip: str,
                 incoming: HTTPHeaders, ctx: RequestContext, declared_length: int) -> None:
        self.method = method
        self.uri = uri  # the request target as sent: path and query
        self.path = path
        self.query = query
        self.host = host
        self.remote_ip = remote_ip  # the peer's address
        self.client_ip = remote_ip  # the client's, once the route step has read X-Forwarded-For
        self.forwarded_for = remote_ip  # the X-Forwarded-For to send upstream
        self.incoming = incoming  # the headers as received: never changed (Tornado reads the body by them)
        self.ctx = ctx
        self.declared_length = declared_length  # 0: no body; CHUNKED (-1): unknown length
        self.plan: CompiledRoute | None = None
        self.passed = 0  # how many of the route's steps let the request go on
        self.body_mode = BodyMode.NONE
        self.json_check = False
        self.body_limit = 0
        self.rate_limit_headers: Mapping[str, str] | None = None
        self.plugins_failed = False  # a plugin's on_response raised: no plugin changes this answer again
        self._headers: HTTPHeaders | None = None
        self.cache: Any = None  # a cache route's CacheExchange, set by its step (gateway.cache.step)

    @property
    def route(self) -> str:
        """The matched route's name."""
        return self.ctx.route_name

    @property
    def subject(self) -> str | None:
        return self.ctx.subject

    @property
    def claims(self) -> dict[str, Any] | None:
        """The verified token's claims (a copy), or None."""
        identity = self.ctx.identity
        return dict(identity.claims) if identity is not None else None

    @property
    def headers(self) -> HTTPHeaders:
        """The headers that go upstream: case-insensitive, mutable (a copy of the incoming ones)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = HTTPHeaders()
            for name, value in self.incoming.get_all():
                headers.add(name, value)
        return headers

    def upstream_source(self) -> HTTPHeaders:
        """What the upstream request's headers are built from: ``headers`` if a step made it, else
        the incoming headers."""
        return self._headers if self._headers is not None else self.incoming


class Response:
    """An answer before the client sees it (public as :class:`gateway.plugin.Response`):
    ``status`` and ``headers`` (mutable, case-insensitive)."""

    __slots__ = ("status", "headers")

    def __init__(self, status: int, headers: HTTPHeaders) -> None:
        self.status = status
        self.headers = headers


class ReplyError(GatewayError):
    """The error a :meth:`Reply.error` answers with, rendered as SPEC §4 says."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, headers)
        self.status = status
        self.code = code


class Reply:
    """An answer made by a step instead of the upstream's (public as :class:`gateway.plugin.Reply`).

    ``body``: a dict (sent as JSON), a str (UTF-8 text) or bytes; ``headers`` are sent as
    given (a ``Content-Type`` there wins over the one the body's kind implies).
    Raises ValueError for a status outside 100-599 or a body of another type.
    """

    __slots__ = ("status", "body", "headers", "problem")

    def __init__(self, status: int, body: dict[str, Any] | str | bytes = b"",
                 headers: Mapping[str, str] | None = None) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"a reply's status must be an integer from 100 to 599, got {status!r}")
        out = dict(headers or {})
        for name, value in out.items():
            if not isinstance(name, str) or not isinstance(value, str) or not _FIELD_NAME.match(name) \
                    or "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"a reply's header must be a valid name and a one-line str value: {name!r}")
        if isinstance(body, dict):
            data = json.dumps(body, separators=(",", ":")).encode()
            kind = "application/json"
        elif isinstance(body, str):
            data, kind = body.encode(), "text/plain; charset=utf-8"
        elif isinstance(body, (bytes, bytearray)):
            data, kind = bytes(body), "application/octet-stream"
        else:
            raise ValueError(f"a reply's body must be a dict, str or bytes, got {type(body).__name__}")
        if data and not any(name.lower() == "content-type" for name in out):
            out["Content-Type"] = kind
        self.status = status
        self.body = data
        self.headers = out
        self.problem: GatewayError | None = None  # set by Reply.error: answered as that error

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Reply:
        """An answer in SPEC §4's error format: ``{"error": code, "message": message, "status":
        status, "request_id": ...}``, with ``Cache-Control: no-store``."""
        reply = cls(status, headers=headers)
        reply.problem = ReplyError(status, code, message, headers)
        return reply


async def run_request_steps(steps: tuple[Step, ...], request: Request) -> Reply | None:
    """Run ``steps`` in order until one answers: its :class:`Reply`, or None when all let the
    request go on. ``request.passed`` counts those that did (whose ``on_response`` will run).
    Raises what a built-in step raises (a GatewayError)."""
    for step in steps:
        answer = await step.on_request(request) if step.awaits else step.on_request(request)
        if answer is not None:
            return answer  # type: ignore[no-any-return]
        request.passed += 1
    return None


def run_response_steps(request: Request, response: Response) -> bool | Coroutine[Any, Any, bool]:
    """Run the ``on_response`` of the steps that let ``request`` go on, in order. False when a
    plugin's raised (it is logged by its wrapper; the answer should then be a 500): from then
    on no plugin changes an answer of this request. When a plugin's may wait (its wrapper hands
    back an awaitable), a coroutine of the verdict is returned instead, not yet begun: it runs
    that plugin and the steps after it, in the task of whoever awaits it."""
    plan = request.plan
    if plan is None:
        return True
    return _respond_from(request, response, plan.responders)


def _respond_from(request: Request, response: Response,
                  responders: tuple[tuple[int, Step], ...]) -> bool | Coroutine[Any, Any, bool]:
    passed = request.passed
    for position, (index, step) in enumerate(responders):
        if index >= passed:
            break
        if request.plugins_failed and step.is_plugin:
            continue
        try:
            waiting = step.on_response(request, response)
        except InternalError:  # a plugin failed (logged by its wrapper)
            request.plugins_failed = True
            return False
        if waiting is not None:
            return _respond_after(waiting, request, response, responders[position + 1:])
    return True


async def _respond_after(waiting: Awaitable[None], request: Request, response: Response,
                         responders: tuple[tuple[int, Step], ...]) -> bool:
    """The rest of :func:`run_response_steps` once a plugin's ``on_response`` that waited is done."""
    try:
        await waiting
    except InternalError:
        request.plugins_failed = True
        return False
    rest = _respond_from(request, response, responders)
    return rest if isinstance(rest, bool) else await rest


def finish_compile(step: Step) -> Step:
    """Record what the conductor needs to know of ``step`` once: whether it awaits."""
    step.awaits = inspect.iscoroutinefunction(step.on_request)
    step.responds = type(step).on_response is not Step.on_response
    return step
