"""The route table: which route a request belongs to, and the path it goes upstream with.

Routes are compiled once into a segment trie per host (plus one for routes
without a host), so a lookup costs one dict access per path segment whatever
the number of routes. A route's ``path`` is a prefix on a segment boundary:
``/api/orders`` matches ``/api/orders`` and ``/api/orders/7``, never
``/api/ordersX``; the longest prefix wins; a host-specific route wins over a
host-less one. ``{param}`` segments (aggregate routes) match one segment.

Paths are normalised before matching (percent-decoding for comparison, ``.``
and ``..`` resolved, ``//`` merged), so ``/api/orders/../admin`` or
``/api/orders/%2e%2e/admin`` cannot reach a route it does not name. What goes
upstream is built from the client's own (still encoded) segments.

What the gateway would read as an ordinary segment but a backend reads as a
dot segment or a separator is refused instead of forwarded: Tomcat and
Jetty drop ``;`` parameters from each segment (``/public/..;/admin`` is
``/admin`` there), IIS and some WSGI stacks take ``\\`` for ``/``. So a dot
segment carrying parameters (``..;x``, ``.;``, encoded as ``%2e%2e%3b``) and
any backslash (raw, ``%5C`` or ``%5c``) are a 400.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from .config import RouteConfig
from .errors import BadRequest, MethodNotAllowed, NoRoute

__all__ = ["RouteTable", "Match", "normalize_path", "PATH_PARAM"]

# A ``{name}`` in a route path (a whole segment) or an aggregate part's path (anywhere);
# the loader checks them, the router matches them, aggregation fills them in.
PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Match:
    """A matched route and what the request becomes upstream."""

    route: RouteConfig
    upstream_path: str  # after strip_prefix / rewrite_prefix, still percent-encoded
    stripped_prefix: str | None  # for X-Forwarded-Prefix
    params: dict[str, str]  # decoded {param} values (aggregate routes)


class _Node:
    __slots__ = ("children", "param", "param_name", "routes")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name = ""
        self.routes: list[RouteConfig] = []


def normalize_path(raw_path: str) -> tuple[list[str], list[str], bool]:
    """Split a request path into (raw segments, decoded segments, trailing slash).

    Dot segments are resolved and empty segments dropped. Raises BadRequest for a
    path that is not absolute, holds a NUL or a backslash (raw or encoded), hides
    dot segments behind an encoded slash (``%2F..%2F``), or has a dot segment with
    ``;`` parameters (``..;``, ``.;x``), raw or encoded.
    """
    if not raw_path.startswith("/"):
        raise BadRequest("the request path must start with '/'")
    trailing = raw_path.endswith("/") and len(raw_path) > 1
    # A plain path (most requests) takes one scan per marker; only a path with one of them is walked.
    # A dot segment with ';' always holds "/." raw or a '%' encoded, so ';' needs no marker of its own.
    if ("%" not in raw_path and "/." not in raw_path and "//" not in raw_path and "\x00" not in raw_path
            and "\\" not in raw_path):
        raw = raw_path.split("/")[1:]
        if trailing:
            raw.pop()
        return raw, raw, trailing
    raw_out: list[str] = []
    decoded_out: list[str] = []
    for segment in raw_path.split("/")[1:]:
        try:
            decoded = unquote(segment, errors="strict") if "%" in segment else segment
        except UnicodeDecodeError:
            raise BadRequest("the request path is not valid UTF-8 once decoded") from None
        if "\x00" in decoded:
            raise BadRequest("the request path holds a NUL byte")
        if "\\" in decoded:
            raise BadRequest("the request path holds a backslash")
        if ";" in decoded and decoded.partition(";")[0] in (".", ".."):
            raise BadRequest("a dot segment with ';' parameters is refused")
        if decoded in ("", "."):
            continue
        if decoded == "..":
            if raw_out:
                raw_out.pop()
                decoded_out.pop()
            continue
        if decoded != segment and "/" in decoded and any(p in (".", "..") for p in decoded.split("/")):
            raise BadRequest("encoded path separators around dot segments are refused")
        raw_out.append(segment)
        decoded_out.append(decoded)
    return raw_out, decoded_out, trailing and bool(raw_out)


class RouteTable:
    """Compiled routes. :meth:`match` is the only call on the request path."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = tuple(routes)
        self._any_host = _Node()
        self._by_host: dict[str, _Node] = {}
        for route in self.routes:
            root = self._by_host.setdefault(route.host, _Node()) if route.host else self._any_host
            node = root
            for segment in _segments(route.path):
                param = PATH_PARAM.fullmatch(segment)
                if param:
                    if node.param is None:
                        node.param = _Node()
                        node.param.param_name = param.group(1)
                    node = node.param
                else:
                    node = node.children.setdefault(segment, _Node())
            node.routes.append(route)

    def match(self, method: str, host: str, raw_path: str) -> Match:
        """The route for this request. Raises NoRoute, MethodNotAllowed or BadRequest."""
        raw, decoded, trailing = normalize_path(raw_path)
        found = None
        root = self._by_host.get(hostname(host)) if self._by_host else None
        if root is not None:
            found = _deepest(root, decoded, 0, {})
        if found is None:
            found = _deepest(self._any_host, decoded, 0, {})
        if found is None:
            raise NoRoute()
        depth, routes, params = found
        route = _by_method(routes, method)
        rest = raw[depth:]
        if route.strip_prefix:
            prefix = route.rewrite_prefix.rstrip("/") if route.rewrite_prefix else ""
            path = prefix + "/" + "/".join(rest) if rest else (prefix or "/")
            stripped: str | None = "/" + "/".join(raw[:depth]) if depth else None
        else:
            path = "/" + "/".join(raw)
            stripped = None
        if trailing and not path.endswith("/"):
            path += "/"
        return Match(route, path, stripped, params)

    def describe(self) -> list[dict[str, object]]:
        """The table in matching order, for `gateway routes` and the admin API."""
        ordered = sorted(self.routes, key=lambda r: (r.host is None, -len(_segments(r.path)), r.path))
        return [
            {
                "name": r.name,
                "host": r.host or "*",
                "path": r.path,
                "methods": list(r.methods) if r.methods else ["*"],
                "target": r.upstream if r.upstream else "aggregate:" + ",".join(p.name for p in r.aggregate or ()),
                "auth": r.auth,
                "strip_prefix": r.strip_prefix,
                "rewrite_prefix": r.rewrite_prefix,
            }
            for r in ordered
        ]


def hostname(host: str) -> str:
    """The Host header without its port, lower-cased (``[::1]:80`` -> ``[::1]``)."""
    if host.endswith("]") or host.count(":") != 1:
        return host.lower()
    return host.rsplit(":", 1)[0].lower()


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _deepest(node: _Node, segments: list[str], depth: int, params: dict[str, str]
             ) -> tuple[int, list[RouteConfig], dict[str, str]] | None:
    """The deepest node with routes along ``segments``; at equal depth, literal children before parameters."""
    best = (depth, node.routes, params) if node.routes else None
    if depth == len(segments):
        return best
    segment = segments[depth]
    child = node.children.get(segment)
    found = _deepest(child, segments, depth + 1, params) if child is not None else None
    if node.param is not None:
        # The longest prefix wins even across a {param}: /users/me/overview is /users/{id}/overview's,
        # not the shorter literal /users/me's.
        via_param = _deepest(node.param, segments, depth + 1, {**params, node.param.param_name: segment})
        if via_param is not None and (found is None or via_param[0] > found[0]):
            found = via_param
    return found if found is not None else best


def _by_method(routes: list[RouteConfig], method: str) -> RouteConfig:
    for route in routes:
        if route.methods is None or method in route.methods or (method == "HEAD" and "GET" in route.methods):
            return route
    allowed: list[str] = []
    for route in routes:
        for m in route.methods or ():
            if m not in allowed:
                allowed.append(m)
    if "GET" in allowed and "HEAD" not in allowed:
        allowed.append("HEAD")
    raise MethodNotAllowed(allowed)
