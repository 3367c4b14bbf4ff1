"""Each route's steps, built once at load in :data:`gateway.policies.ORDER`.

:class:`StepBuilder` holds what the routes of one runtime share (the global CORS
section, the authenticator, the plugins built from ``plugins:``, the metrics
hooks) and builds one route's tuple: a route with no CORS, ``auth: none``, no
``scopes``, no ``rate_limit`` or no ``plugins`` has no such step at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..auth import Authenticator
from ..cache.step import CacheStep
from ..config import CorsConfig, RouteConfig, ServerConfig
from . import ORDER, Step, finish_compile
from .auth import AuthStep
from .body import BodyStep
from .cors import CorsPolicy, CorsStep
from .plugins import PluginStep
from .ratelimit import LimitKey, RateLimitStep
from .scopes import ScopesStep

__all__ = ["StepBuilder", "RouteSteps"]

RouteSteps = tuple[tuple[Step, ...], tuple[tuple[int, Step], ...]]


class StepBuilder:
    """Builds the steps of the routes of one runtime."""

    def __init__(self, server: ServerConfig, cors: CorsConfig | None, authenticator: Authenticator | None,
                 plugins: Mapping[str, Step], *, on_rate_limited: Callable[[str], None] | None = None,
                 on_plugin_time: Callable[[str, float], None] | None = None,
                 on_cache_result: Callable[[str, str], None] | None = None) -> None:
        self.server = server
        self.global_cors = CorsStep(CorsPolicy(cors)) if cors is not None else None
        self.authenticator = authenticator
        self.plugins = plugins
        self.on_rate_limited = on_rate_limited
        self.on_plugin_time = on_plugin_time
        self.rate_limit_steps: list[RateLimitStep] = []  # given the store when the runtime starts
        self.on_cache_result = on_cache_result
        self.cache_steps: list[CacheStep] = []  # given the cache store when the runtime starts

    def build(self, route: RouteConfig, limit_key: LimitKey, replay_buffer_bytes: int) -> RouteSteps:
        """``route``'s steps in ORDER, and those of them with an ``on_response`` (with their index)."""
        steps: list[Step] = []
        for name in ORDER:
            steps.extend(self._steps(name, route, limit_key, replay_buffer_bytes))
        for step in steps:
            finish_compile(step)
        responders = tuple((i, step) for i, step in enumerate(steps) if step.responds)
        return tuple(steps), responders

    def _steps(self, name: str, route: RouteConfig, limit_key: LimitKey, replay_buffer_bytes: int) -> list[Step]:
        authenticator = self.authenticator
        if name == "cors":
            if route.cors is not None:
                return [CorsStep(CorsPolicy(route.cors))]
            return [self.global_cors] if self.global_cors is not None else []
        if name == "auth":
            if route.auth == "none" or authenticator is None:
                return []
            return [AuthStep(authenticator, required=route.auth == "required")]
        if name == "scopes":
            return [ScopesStep(authenticator, route.scopes)] if route.scopes and authenticator is not None else []
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
        return []  # request_id and route run before any route is known; ip_rules: issue 17
