"""Stamp: add fixed headers to every answer of a route (relayed or made by the gateway).

In ``conf/gateway.yaml``::

    plugins:
      - name: stamp
        class: plugins/stamp.py:Stamp
        config:
          headers: {X-Served-By: edge-1, Strict-Transport-Security: max-age=31536000}
          statuses: [200, 201]              # optional: only answers with these statuses

The headers replace any of the same name the upstream sent. Unlike a route's
``response_headers`` rules (relayed answers only), a plugin's ``on_response`` also
runs on the gateway's own answers (a 502, a 504) of the routes that list it.
"""

from __future__ import annotations

from typing import Any

from gateway.plugin import Plugin, Request, Response


class Stamp(Plugin):
    def __init__(self, config: dict[str, Any]) -> None:
        headers = config["headers"]  # a KeyError is reported as a config error: headers is required
        if not isinstance(headers, dict) or not headers:
            raise ValueError("headers must be a non-empty mapping of header name to value")
        self.headers = tuple((str(name), str(value)) for name, value in headers.items())
        statuses = config.get("statuses")
        if statuses is not None and not (isinstance(statuses, list) and all(isinstance(s, int) for s in statuses)):
            raise ValueError("statuses must be a list of status codes")
        self.statuses = frozenset(statuses) if statuses is not None else None

    def on_response(self, request: Request, response: Response) -> None:
        if self.statuses is None or response.status in self.statuses:
            for name, value in self.headers:
                response.headers[name] = value
