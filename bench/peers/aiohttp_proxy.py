"""A minimal aiohttp reverse proxy: the fastest plain-Python proxy we know of, as a yardstick.

One `ClientSession` with a keep-alive connector, reused for every request; no auth, no
policies, no logging. `/api/<rest>` goes to `<upstream>/<rest>` (the prefix is stripped);
hop-by-hop headers are dropped both ways, the body is read whole and sent back.

    python bench/peers/aiohttp_proxy.py --port 8002 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse

from aiohttp import ClientSession, TCPConnector, web
from multidict import CIMultiDict

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "content-length", "host"})
SESSION = web.AppKey("session", ClientSession)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port, no trailing slash")
    parser.add_argument("--prefix", default="/api")
    args = parser.parse_args()
    upstream, prefix_len = args.upstream.rstrip("/"), len(args.prefix)

    async def proxy(request: web.Request) -> web.Response:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        body = await request.read() if request.body_exists else None
        url = upstream + request.raw_path[prefix_len:]
        async with request.app[SESSION].request(request.method, url, headers=headers, data=body,
                                                allow_redirects=False) as resp:
            payload = await resp.read()
            out = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP)
            return web.Response(status=resp.status, headers=out, body=payload)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = TCPConnector(limit=100, keepalive_timeout=60)
        app[SESSION] = ClientSession(connector=connector, auto_decompress=False)
        yield
        await app[SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", args.prefix + "/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
