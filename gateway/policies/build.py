"""Each route's steps, built once at load in :data:`gateway.policies.ORDER`.

:class:`StepBuilder` holds what the routes of one runtime share (the global CORS
section, the authenticator and API keys, the plugins built from ``plugins:``,
the metrics hooks) and builds one route's tuple: a route with no CORS, ``auth:
none``, no ``scopes``, no IP rules, no ``rate_limit`` or no ``plugins`` has no
such step at all. A route with IP rules and CORS also checks its rules ahead of
CORS for preflights (:class:`~gateway.policies.iprules.PreflightIpRulesStep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..apikeys import ApiKeyRing
from ..auth import Authenticator
from ..cache.step import CacheStep
from ..config import CorsConfig, RouteConfig, ServerConfig
from ..websocket import WebSocketOriginStep
from . import ORDER, Step, finish_compile
from .auth import AuthStep
from .body import BodyStep
from .cors import CorsPolicy, CorsStep
from .iprules import IpRules, IpRulesStep, PreflightIpRulesStep
from .plugins import PluginStep
from .ratelimit import LimitKey, RateLimitStep
from .scopes import ScopesStep

__all__ = ["StepBuilder", "RouteSteps"]

RouteSteps = tuple[tuple[Step, ...], tuple[tuple[int, Step], ...]]


class StepBuilder:
    """Builds the steps of the routes of one runtime."""

    def __init__(self, server: ServerConfig, cors: CorsConfig | None, authenticator: Authenticator | None,
                 plugins: Mapping[str, Step], *, on_rate_limited: Callable[[str], None] | None = None,
                 on_plugin_time: Callable[[str, float], None] | None = None, keys: ApiKeyRing | None = None,
                 on_cache_result: Callable[[str, str], None] | None = None) -> None:
        self.server = server
        self.global_cors = CorsStep(CorsPolicy(cors)) if cors is not None else None
        self.authenticator = authenticator
        self.plugins = plugins
        self.on_rate_limited = on_rate_limited
        self.on_plugin_time = on_plugin_time
        self.rate_limit_steps: list[RateLimitStep] = []  # given the store when the runtime starts
        self.keys = keys
        self.on_cache_result = on_cache_result
        self.cache_steps: list[CacheStep] = []  # given the cache store when the runtime starts

    def build(self, route: RouteConfig, limit_key: LimitKey, replay_buffer_bytes: int) -> RouteSteps:
        """``route``'s steps in ORDER, and those of them with an ``on_response`` (with their index)."""
        steps: list[Step] = []
        ip_rules = IpRules(route.ip_allow, route.ip_deny) if route.ip_allow or route.ip_deny else None
        for name in ORDER:
            steps.extend(self._steps(name, route, limit_key, replay_buffer_bytes, ip_rules))
        for step in steps:
            finish_compile(step)
        responders = tuple((i, step) for i, step in enumerate(steps) if step.responds)
        return tuple(steps), responders

    def _steps(self, name: str, route: RouteConfig, limit_key: LimitKey, replay_buffer_bytes: int,
               ip_rules: IpRules | None) -> list[Step]:
        if name == "cors":
            cors = CorsStep(CorsPolicy(route.cors)) if route.cors is not None else self.global_cors
            if cors is None:
                return []
            steps: list[Step] = [PreflightIpRulesStep(ip_rules), cors] if ip_rules is not None else [cors]
            if route.websocket:  # a handshake's Origin is checked too (gateway.websocket)
                steps.append(WebSocketOriginStep(cors.policy))
            return steps
        if name == "auth":
            jwt = self.authenticator if "jwt" in route.auth_methods else None
            keys = self.keys if "api_key" in route.auth_methods else None
            if route.auth == "none" or (jwt is None and keys is None):
                return []
            return [AuthStep(jwt, required=route.auth == "required", keys=keys)]
        if name == "scopes":
            return [ScopesStep(route.scopes)] if route.scopes and route.auth != "none" else []
        if name == "ip_rules":
            return [IpRulesStep(ip_rules)] if ip_rules is not None else []
        if name == "rate_limit":
            if route.rate_limit is None:
                return []
            step = RateLimitStep(route.name, route.rate_limit, limit_key, self.on_rate_limited)
            self.rate_limit_steps.append(step)
            return [step]
        if name == "body":
            return [BodyStep(self.server.max_body_bytes, replay_buffer_bytes, route.validate_json)]
        if name == "plugins":
            return [PluginStep(plugin_name, self.plugins[plugin_name], self.on_plugin_time)
                    for plugin_name in route.plugins]
        if name == "cache":
            if route.cache is None:
                return []
            cache = CacheStep(route.name, route.cache, authenticated=route.auth != "none",
                              wait_seconds=route.timeout_seconds or 30.0, on_result=self.on_cache_result)
            self.cache_steps.append(cache)
            return [cache]
        return []  # request_id and route run before any route is known
