"""What each RequestHandler-side mitigation of gateway.http saves, in µs per request, measured in
isolation (the end-to-end CPU per request is too noisy on a shared 2-CPU machine to resolve a few %).

Usage: python bench/handler_cost.py [--iterations 20000]

Each row times Tornado's default way and the gateway's for the same work, best of 5 runs:

- clear: ``RequestHandler.clear`` (builds Server, Content-Type and Date, the Date formatted) vs
  :meth:`ResponseWriter.clear` (an empty HTTPHeaders), once per handler;
- etag: ``set_etag_header`` + ``check_etag_header`` as ``finish()`` runs them on a 200 GET whose head
  is written at the end (a gateway answer, an empty relayed one) vs ``compute_etag`` returning None;
- relayed fields: nine upstream fields (the bench backend's and X-Request-Id) through ``add_header``
  (its value regexes) vs :func:`gateway.headers.tornado_headers`, assigned once;
- router: ``Application``'s rule list (the two ``/-/`` paths and a catch-all) vs
  :class:`GatewayApplication`'s one dictionary lookup, for a proxied path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tornado import httputil
from tornado.web import Application, RequestHandler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.headers import tornado_headers  # noqa: E402
from gateway.http.app import GatewayApplication  # noqa: E402
from gateway.http.endpoints import ENDPOINTS  # noqa: E402
from gateway.http.handler import ProxyHandler  # noqa: E402
from gateway.http.response import ResponseWriter  # noqa: E402

FIELDS = [("Server", "nginx/1.22.1"), ("Date", "Wed, 02 Dec 2026 06:53:04 GMT"),
          ("Content-Type", "application/json"), ("Content-Length", "108"),
          ("Last-Modified", "Wed, 02 Dec 2026 06:50:00 GMT"), ("Connection", "keep-alive"),
          ("ETag", '"6747d1c8-6c"'), ("Accept-Ranges", "bytes"), ("X-Request-Id", "0123456789abcdef0123456789abcdef")]


class _Conn:
    def set_close_callback(self, callback: Any) -> None:
        pass


def best(fn: Callable[[], Any], iterations: int) -> float:
    """µs per call, best of 5 runs of ``iterations`` calls."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter() - start) / iterations * 1e6)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    n = parser.parse_args().iterations
    request = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", "/api/small", "HTTP/1.1"), connection=_Conn(),  # type: ignore[arg-type]
        headers=httputil.HTTPHeaders({"Host": "127.0.0.1", "Authorization": "Bearer x"}))
    handler: Any = object.__new__(ProxyHandler)
    handler.request = request
    handler._write_buffer = [b'{"status":"ok"}']
    default_clear = lambda: RequestHandler.clear(handler)  # noqa: E731
    ours_clear = lambda: ResponseWriter.clear(handler)  # noqa: E731

    plain: Any = object.__new__(type("Plain", (RequestHandler,), {}))  # Tornado's own compute_etag
    plain.request, plain._write_buffer = request, handler._write_buffer

    def default_etag() -> None:
        plain._headers = httputil.HTTPHeaders()
        plain.set_etag_header()
        plain.check_etag_header()

    def ours_etag() -> None:
        handler._headers = httputil.HTTPHeaders()
        handler.set_etag_header()
        handler.check_etag_header()

    def default_fields() -> None:
        handler._headers = httputil.HTTPHeaders()
        for name, value in FIELDS:
            handler.add_header(name, value)

    def ours_fields() -> None:
        handler._headers = tornado_headers(FIELDS)

    holder: Any = None
    tornado_app = Application([(r"/-/health", ENDPOINTS["/-/health"], {"holder": holder}),
                               (r"/-/ready", ENDPOINTS["/-/ready"], {"holder": holder}),
                               (r".*", ProxyHandler, {"holder": holder})])
    ours_app = GatewayApplication(holder)
    rows = [("clear()", default_clear, ours_clear), ("etag", default_etag, ours_etag),
            ("relayed fields", default_fields, ours_fields),
            ("router", lambda: tornado_app.find_handler(request), lambda: ours_app.find_handler(request))]
    print(f"{'mitigation':16s} {'tornado µs':>10s} {'gateway µs':>10s} {'saved µs':>9s}")
    for name, default, ours in rows:
        a, b = best(default, n), best(ours, n)
        print(f"{name:16s} {a:10.2f} {b:10.2f} {a - b:9.2f}")


if __name__ == "__main__":
    main()
