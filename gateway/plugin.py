"""The public API of operators' plugins (SPEC §7): what a plugin file imports.

::

    from .plugin import Plugin, Request, Response, Reply

    class RequireTenant(Plugin):
        def __init__(self, config: dict) -> None:      # once, at load: raise ValueError on bad config
            self.header = config.get("header", "X-Tenant")

        async def on_request(self, request: Request) -> Reply | None:
            tenant = request.headers.get(self.header)
            if not tenant:
                return Reply.error(400, "missing_tenant", f"{self.header} is required")
            request.headers["X-Tenant-Id"] = tenant.lower()
            return None                                # go on

        def on_response(self, request: Request, response: Response) -> None:
            response.headers["X-Tenant-Served"] = request.headers["X-Tenant-Id"]

A plugin is a :class:`Plugin` subclass named in the config's ``plugins:`` section
(``path/to/file.py:Class``, relative to the config file, or ``package.module:Class``)
and built once per load with its ``config`` mapping; a route's ``plugins: [names]``
runs them in that order after the built-in steps (request id, route, CORS, auth,
scopes, rate limit, body rules). The built-in steps implement this same interface
(:mod:`gateway.policies`).

The contract:

- ``__init__(config)``: a ValueError, TypeError or KeyError (any exception, in fact)
  is a configuration error naming the plugin (``plugins[0].config: ...``): the
  gateway does not start, a reload is refused.
- ``on_request(request)``: async or not. Return None to go on, or a :class:`Reply`
  to answer without calling the upstream (``Reply.error(status, code, message)``
  answers in SPEC §4's error format). Changes to ``request.headers`` are what the
  upstream gets (the gateway's own headers, ``X-Forwarded-*``, ``X-Request-Id``,
  identity headers, are still set by the gateway after the plugins ran).
- ``on_response(request, response)``: called for every answer of a request whose
  ``on_request`` this plugin let through (returned None): relayed or made by the
  gateway (a 502, a later plugin's reply). Change ``response.headers`` (and read
  ``response.status``) before the client sees them. It may be ``async def`` and may
  wait: the answer's head waits for it (one with no ``await`` in its code runs to its
  end at once, without a task; one that may wait runs in a task, where
  ``asyncio.timeout()`` and ``current_task()`` work as usual).
- Raising anything (in either) answers 500 ``internal_error``, logged with the
  plugin's name and the request id; the gateway goes on serving.
- Time spent in both is the histogram ``gateway_plugin_duration_seconds{plugin}``.
- Plugins share the gateway's event loop: never block it. For HTTP calls use
  :func:`http_client`, or ``AsyncHTTPClient()`` (re-exported here: the gateway configures
  it to its pooled client at start, so both are the same object).
"""

from __future__ import annotations

from typing import Any

from tornado.httpclient import AsyncHTTPClient

from .policies import Reply, Request, Response, Step

__all__ = ["Plugin", "Request", "Response", "Reply", "http_client", "AsyncHTTPClient"]


class Plugin(Step):
    """Base class of operators' plugins: override ``on_request`` and/or ``on_response``
    (the defaults do nothing). ``config`` is the plugin's ``config:`` mapping from the YAML."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def on_request(self, request: Request) -> Reply | None:  # type: ignore[override]
        """None to go on; a :class:`Reply` to answer now."""
        return None

    def on_response(self, request: Request, response: Response) -> Any:
        """Change ``response.headers`` before the client sees them."""
        return None


def http_client() -> AsyncHTTPClient:
    """The gateway's HTTP client: ``AsyncHTTPClient()`` on the gateway's event loop (the
    gateway configures which implementation that is). Do not ``close()`` it: it is shared."""
    return AsyncHTTPClient()
