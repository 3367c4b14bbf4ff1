"""The dashboard's static files (package data), served by the admin listener at ``/``.

One HTML page, one script and one stylesheet, written by hand: no build step, no
CDN, nothing fetched from elsewhere. The page reads only the admin JSON endpoints
(``/-/routes``, ``/-/upstreams``, ``/-/stats``, ``/-/errors``) and, when
``admin.token`` is set, sends ``Authorization: Bearer <token>`` with each fetch
(the token is typed once and kept in the tab's ``sessionStorage``).

:data:`ASSETS` maps a URL path to ``(content type, bytes)``, read once at import.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY"]

_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/-/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/-/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
}

# The page runs only its own script and style, talks only to its own origin and cannot be framed.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _read() -> dict[str, tuple[str, bytes]]:
    folder = resources.files(__name__)
    return {path: (content_type, folder.joinpath(name).read_bytes()) for path, (name, content_type) in _FILES.items()}


ASSETS: dict[str, tuple[str, bytes]] = _read()
