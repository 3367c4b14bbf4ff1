"""RequireTenant: refuse requests without a tenant header, and pass the tenant on normalised.

The example of SPEC §7. In ``conf/gateway.yaml``::

    plugins:
      - name: tenant
        class: plugins/require_tenant.py:RequireTenant
        config: {header: X-Tenant}          # the default

    routes:
      - name: orders
        path: /api/orders
        upstream: orders
        plugins: [tenant]

A request without the header is answered 400 ``missing_tenant`` (SPEC §4's format)
and never reaches the upstream; otherwise the upstream gets ``X-Tenant-Id`` (the
value lower-cased) and the client sees ``X-Tenant-Served`` on the answer.
"""

from __future__ import annotations

from typing import Any

from gateway.plugin import Plugin, Reply, Request, Response


class RequireTenant(Plugin):
    def __init__(self, config: dict[str, Any]) -> None:
        header = config.get("header", "X-Tenant")
        if not isinstance(header, str) or not header:
            raise ValueError("header must be a non-empty string")
        unknown = set(config) - {"header"}
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
        self.header = header

    async def on_request(self, request: Request) -> Reply | None:
        tenant = request.headers.get(self.header)
        if not tenant:
            return Reply.error(400, "missing_tenant", f"{self.header} is required")
        request.headers["X-Tenant-Id"] = tenant.lower()
        return None

    def on_response(self, request: Request, response: Response) -> None:
        response.headers["X-Tenant-Served"] = request.headers["X-Tenant-Id"]
