"""A naive Tornado reverse proxy, as Tornado's documentation would suggest: the floor.

The default `AsyncHTTPClient` (the simple client: a new upstream connection per request,
`max_clients=10`), `jwt.decode` on every request, status, headers and body copied back.
`/api/<rest>` goes to `<upstream>/<rest>`. The HS256 secret comes from `BENCH_JWT_SECRET`.

    BENCH_JWT_SECRET=... python bench/peers/tornado_naive.py --port 8003 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import os

import jwt
import tornado.web
from tornado.httpclient import AsyncHTTPClient

SKIP = ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Server", "Date")


class ProxyHandler(tornado.web.RequestHandler):
    def initialize(self, upstream: str, secret: str) -> None:
        self.upstream = upstream
        self.secret = secret

    async def get(self, rest: str) -> None:
        auth = self.request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise tornado.web.HTTPError(401) from None
        url = self.upstream + "/" + rest
        if self.request.query:
            url += "?" + self.request.query
        response = await AsyncHTTPClient().fetch(url, headers={"X-User-Id": str(claims.get("sub", ""))},
                                                 raise_error=False)
        self.set_status(response.code)
        for name, value in response.headers.get_all():
            if name not in SKIP:
                self.add_header(name, value)
        if response.body:
            self.write(response.body)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = tornado.web.Application([
        (r"/api/(.*)", ProxyHandler, {"upstream": args.upstream.rstrip("/"),
                                      "secret": os.environ["BENCH_JWT_SECRET"]}),
    ])
    app.listen(args.port, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
