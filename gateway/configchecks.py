"""What the models of :mod:`gateway.schema` cannot say: the checks after validation.

Rules between keys of one section (an HS secret's length for its algorithms, ``certfile`` with
``keyfile``, an API key or its digest), between sections (a route's upstream, plugins, auth and
cache), and loading the plugins.
:func:`check` runs on the validated file, or, when validation found problems, on what of it could
be salvaged (``gateway.loader``): the sections and list items that are valid once their bad keys
are left out, so a broken value does not hide an unknown upstream elsewhere. In a salvaged file a
list item that could not be salvaged is None, and a problem already found at a location keeps the
checks that would only repeat it quiet (:meth:`Located.under`).

It returns what the build needs beyond the file: each route's derived values (its auth mode and
methods, the methods of an aggregate route) and the built plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .config import JwtConfig
from .configerrors import Loc, Located
from .configtypes import AUTH_METHODS
from .policies.plugins import PluginLoadError, load_plugin
from .routing import PATH_PARAM
from .schema import ApiKeys, Auth, ConfigFile, Cors, Jwt, Route, UpstreamTls
from .tables import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, HMAC_MIN_SECRET_BYTES, JWT_ALGORITHMS

__all__ = ["Derived", "check"]


@dataclass
class Derived:
    """What the checks work out for the build: per route index, values that override the written ones;
    per plugin name, the built plugin."""

    routes: dict[int, dict[str, Any]] = field(default_factory=dict)
    plugins: dict[str, Any] = field(default_factory=dict)


def check(doc: ConfigFile, upstreams: Collection[str], auth_configured: tuple[str, ...], problems: Located,
          base_dir: str) -> Derived:
    """Add every problem of ``doc`` the models cannot see to ``problems``. ``upstreams`` are the names
    in the file (a broken upstream is still known by name, so the routes naming it are not reported
    twice); ``auth_configured`` are the auth methods whose section is given (``jwt``, ``api_key``)."""
    derived = Derived()
    if doc.auth is not None:
        _auth(doc.auth, ("auth",), problems)
    for name, upstream in (doc.upstreams or {}).items():
        if upstream is not None and upstream.tls is not None:
            _upstream_tls(upstream.tls, ("upstreams", name, "tls"), problems)
    if doc.cors is not None:
        _cors(doc.cors, ("cors",), problems)
    known_plugins = _plugins(doc, problems, base_dir, derived)
    names: dict[str, int] = {}
    matches: dict[tuple[str | None, str, frozenset[str] | None], tuple[int, str]] = {}
    for i, route in enumerate(doc.routes or ()):
        if route is None:
            continue
        loc = ("routes", i)
        methods = _route(route, loc, upstreams, auth_configured, known_plugins, problems,
                         derived.routes.setdefault(i, {}))
        if route.name in names:
            problems.add((*loc, "name"), f"duplicate route name '{route.name}' (also routes[{names[route.name]}])",
                         section=loc)
        names.setdefault(route.name, i)
        # The later of two routes that match the same requests could never be reached.
        # Disjoint method sets on one path are fine; overlapping ones are an order question.
        same = (route.host, PATH_PARAM.sub("{}", route.path.rstrip("/") or "/"),
                frozenset(methods) if methods is not None else None)
        if same in matches:
            j, other = matches[same]
            problems.add(loc, f"same host, path and methods as routes[{j}] ('{other}')")
        matches.setdefault(same, (i, route.name))
    _cache_bound(doc, problems)
    if doc.tracing is not None and doc.tracing.max_batch_spans > doc.tracing.max_queue_spans:
        problems.add(("tracing", "max_batch_spans"), f"must be at most max_queue_spans ({doc.tracing.max_queue_spans})")
    return derived


def _auth(auth: Auth, loc: Loc, located: Located) -> None:
    if auth.jwt is not None:
        _jwt(auth.jwt, (*loc, "jwt"), located)
    if auth.api_keys is not None:
        _api_keys(auth.api_keys, (*loc, "api_keys"), located)
        if auth.jwt is not None and auth.api_keys.claims_to_headers and auth.jwt.claims_to_headers:
            located.add((*loc, "api_keys", "claims_to_headers"),
                        "set it once, in auth.jwt.claims_to_headers: it applies to API-key consumers too", section=loc)


def _api_keys(keys: ApiKeys, loc: Loc, located: Located) -> None:
    """Each consumer has exactly one of ``key`` or ``key_sha256``, and no two consumers one key."""
    seen: dict[bytes, int] = {}
    for i, consumer in enumerate(keys.consumers or ()):
        if consumer is None:
            continue
        where = (*loc, "consumers", i)
        given = [name for name in ("key", "key_sha256") if getattr(consumer, name) is not None]
        if len(given) != 1:
            if not located.under((*where, "key")) and not located.under((*where, "key_sha256")):
                located.add(where, "needs exactly one of key or key_sha256")
            continue
        digest = getattr(consumer, given[0])
        if digest in seen:
            located.add((*where, given[0]), f"the same key as {_text(loc)}.consumers[{seen[digest]}]: "
                                            "a key names one consumer", section=where)
            continue
        seen[digest] = i


def _text(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _cache_bound(doc: ConfigFile, located: Located) -> None:
    """A memory store too small for a route's largest entry would never keep one of them."""
    if doc.cache_store != "memory":
        return
    for i, route in enumerate(doc.routes or ()):
        if route is not None and route.cache is not None and route.cache.max_entry_bytes > doc.cache_max_bytes:
            located.add(("routes", i, "cache", "max_entry_bytes"),
                        f"is larger than cache_max_bytes ({doc.cache_max_bytes}): such answers could never be kept")


def _jwt(jwt: Jwt, loc: Loc, located: Located) -> None:
    def add(where: Loc, message: str) -> None:
        located.add(where, message, section=loc)

    algorithms = jwt.algorithms if jwt.algorithms is not None else JwtConfig.algorithms
    for alg in algorithms:
        if alg.lower() == "none":
            add((*loc, "algorithms"), "'none' is never allowed")
        elif alg not in JWT_ALGORITHMS:
            add((*loc, "algorithms"), f"unknown algorithm '{alg}'")
    if not algorithms:
        add((*loc, "algorithms"), "at least one algorithm is required")
    hs = [a for a in algorithms if a in HMAC_ALGORITHMS]
    asym = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
    if hs and asym:
        add((*loc, "algorithms"), "mixes HS* with public-key algorithms, which invites algorithm confusion")
    if hs:
        if jwt.secret is None:
            add((*loc, "secret"), f"is required for {', '.join(hs)}")
        else:
            needed = max(HMAC_MIN_SECRET_BYTES[a] for a in hs)
            if len(jwt.secret.encode()) < needed:
                add((*loc, "secret"), f"must be at least {needed} bytes for {', '.join(sorted(hs))}")
    elif jwt.secret is not None:
        add((*loc, "secret"), "is only used with HS* algorithms")
    sources = [s for s in (jwt.public_key_file, jwt.jwks_url) if s is not None]
    if asym:
        if len(sources) != 1 and not located.under((*loc, "public_key_file")):
            add(loc, f"{', '.join(asym)} need exactly one of public_key_file or jwks_url")
    elif sources:
        add(loc, "public_key_file and jwks_url need a public-key algorithm (RS*/PS*/ES*/EdDSA)")


def _upstream_tls(tls: UpstreamTls, loc: Loc, problems: Located) -> None:
    if (tls.certfile is None) != (tls.keyfile is None):
        problems.add(loc, "certfile and keyfile go together")


def _cors(cors: Cors, loc: Loc, problems: Located) -> None:
    if cors.allow_credentials and "*" in cors.allow_origins:
        problems.add((*loc, "allow_origins"), "'*' cannot be used with allow_credentials", section=loc)


def _plugins(doc: ConfigFile, problems: Located, base_dir: str, derived: Derived) -> set[str]:
    """Load each plugin (SPEC §7); returns the names routes may use, including those of plugins that
    failed to load (reported once, at the plugin)."""
    names: dict[str, int] = {}
    for i, plugin in enumerate(doc.plugins or ()):
        if plugin is None:
            continue
        loc = ("plugins", i)
        if plugin.name in names:
            problems.add((*loc, "name"), f"duplicate plugin name '{plugin.name}' (also plugins[{names[plugin.name]}])",
                         section=loc)
            continue
        names[plugin.name] = i
        if problems.under((*loc, "config")):
            continue
        try:
            derived.plugins[plugin.name] = load_plugin(plugin.class_path, plugin.config or {}, base_dir)
        except PluginLoadError as exc:
            problems.add((*loc, exc.field), str(exc), section=loc)
    return set(names)


def _route(route: Route, loc: Loc, upstreams: Collection[str], configured: tuple[str, ...], plugins: set[str],
           located: Located, derived: dict[str, Any]) -> tuple[str, ...] | None:
    """Check one route; fill ``derived``; return the methods it answers (None: every method)."""
    def add(where: Loc, message: str, section: Loc = loc) -> None:
        located.add(where, message, section=section)

    has_upstream, has_aggregate = route.upstream is not None, route.aggregate is not None
    if has_upstream == has_aggregate and not located.under((*loc, "aggregate")):
        add(loc, "needs exactly one of upstream or aggregate")
    if has_upstream and route.upstream not in upstreams:
        add((*loc, "upstream"), f"unknown upstream '{route.upstream}'")
    params = set(PATH_PARAM.findall(route.path))
    if params and not has_aggregate:
        add((*loc, "path"), "only aggregate routes may capture {params}")
    seen: set[str] = set()
    for j, part in enumerate(route.aggregate or ()):
        if part is None:
            continue
        where = (*loc, "aggregate", j)
        if part.upstream not in upstreams:
            add((*where, "upstream"), f"unknown upstream '{part.upstream}'", where)
        for name in sorted(set(PATH_PARAM.findall(part.path)) - params):
            add((*where, "path"), f"'{{{name}}}' is not captured by the route's path")
        if part.name in seen:
            add((*where, "name"), f"duplicate part name '{part.name}'", where)
        seen.add(part.name)
    methods = route.methods
    if has_aggregate:
        if methods and set(methods) - {"GET", "HEAD"}:
            add((*loc, "methods"), "aggregate routes answer GET only")
        methods = derived["methods"] = ("GET",)  # HEAD follows GET; anything else is a 405
    if route.rewrite_prefix and not route.strip_prefix:
        derived["strip_prefix"] = True  # a rewrite replaces the prefix, so it is stripped first
    mode = route.auth or ("required" if configured else "none")
    if mode != "none" and not configured:
        add((*loc, "auth"), f"'{mode}' needs auth.jwt or auth.api_keys to be configured")
    if route.scopes and mode == "none":
        add((*loc, "scopes"), "scopes need auth: required or optional")
    derived["auth"] = mode
    derived["auth_methods"] = _auth_methods(route.auth_methods, (*loc, "auth_methods"), mode, configured, add)
    if route.ip_allow is not None and not route.ip_allow:
        add((*loc, "ip_allow"), "an empty allow list refuses every client: list the CIDRs to let in, or leave the key out")
    _websocket(route, loc, methods, add)
    if route.cache is not None:
        if has_aggregate:
            add((*loc, "cache"), "aggregate routes are not cached (only upstream answers are)")
        elif methods is not None and "GET" not in methods and "HEAD" not in methods:
            add((*loc, "cache"), "the route serves no GET or HEAD: nothing could be cached")
    if route.cors is not None:
        _cors(route.cors, (*loc, "cors"), located)
    for name in route.plugins:
        if name not in plugins:
            known = ", ".join(sorted(plugins)) or "none are configured"
            add((*loc, "plugins"), f"unknown plugin '{name}' (plugins: {known})", (*loc, "plugins"))
            break
    else:
        if len(set(route.plugins)) != len(route.plugins):
            add((*loc, "plugins"), "lists a plugin twice", (*loc, "plugins"))
    return methods


def _auth_methods(methods: tuple[str, ...] | None, loc: Loc, mode: str, configured: tuple[str, ...],
                  add: Callable[[Loc, str], None]) -> tuple[str, ...]:
    """A route's ``auth_methods``: default every configured method (none on an ``auth: none`` route)."""
    if methods is None:
        return configured if mode != "none" else ()
    if mode == "none":
        add(loc, "auth_methods need auth: required or optional")
        return ()
    if not methods:
        add(loc, f"must name at least one of {', '.join(AUTH_METHODS)}")
    for method in methods:
        if method not in configured:
            section = "auth.jwt" if method == "jwt" else "auth.api_keys"
            add(loc, f"'{method}' needs {section} to be configured")
    if len(set(methods)) != len(methods):
        add(loc, "lists a method twice")
    return tuple(m for m in AUTH_METHODS if m in methods)


def _websocket(route: Route, loc: Loc, methods: tuple[str, ...] | None, add: Callable[[Loc, str], None]) -> None:
    """SPEC §6: a WebSocket route relays to one upstream and takes GET (the handshake); its limits
    mean nothing on a route that relays no upgrade, so setting them there is a mistake, said so."""
    if not route.websocket:
        for key in ("websocket_idle_seconds", "websocket_max_message_bytes"):
            if key in route.model_fields_set:
                add((*loc, key), "only applies to a route with websocket: true")
        return
    if route.aggregate is not None:
        add((*loc, "websocket"), "an aggregate route cannot relay WebSockets")
    if methods is not None and "GET" not in methods:
        add((*loc, "methods"), "a websocket route must allow GET (the handshake)")
