"""What a plugin's ``on_response`` costs the gateway, in CPU µs per call (``time.process_time``).

Usage: python bench/plugin_wait_cost.py [--calls 50000] [--rounds 3]

Runs three plugins' ``on_response`` through :class:`gateway.policies.plugins.PluginStep`, as
an answer's head does (one that may wait as a task, as the upstream reader or the response
writer runs it), ``calls`` times each, and prints the CPU time per call, the best of
``rounds``: an ``async def`` with no ``await`` (run to its end at once), one with an ``await``
it does not reach (it may wait: it runs as a task of its own), and one that waits one turn
of the event loop (``asyncio.sleep(0)``). The difference is what a task costs an answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tornado.httputil import HTTPHeaders  # noqa: E402

from gateway.context import RequestContext  # noqa: E402
from gateway.plugin import Plugin, Request, Response  # noqa: E402
from gateway.policies.plugins import PluginStep  # noqa: E402


class AtOnce(Plugin):
    async def on_response(self, request: Request, response: Response) -> None:
        response.headers["X-Stamp"] = "1"


class MayWait(Plugin):
    async def on_response(self, request: Request, response: Response) -> None:
        if response.status == 599:
            await asyncio.sleep(0)
        response.headers["X-Stamp"] = "1"


class Waits(Plugin):
    async def on_response(self, request: Request, response: Response) -> None:
        await asyncio.sleep(0)
        response.headers["X-Stamp"] = "1"


async def per_call(plugin: type[Plugin], calls: int) -> float:
    step = PluginStep(plugin.__name__, plugin({}), None)
    request: Any = Request("GET", "/", "/", "", "gw", "127.0.0.1", HTTPHeaders(), RequestContext("r", "127.0.0.1"), 0)
    started = time.process_time()
    for _ in range(calls):
        waiting = step.on_response(request, Response(200, HTTPHeaders()))
        if waiting is not None:
            await asyncio.ensure_future(waiting)  # as a relayed head's reader runs it: a task
    return (time.process_time() - started) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    best: dict[str, float] = {}
    for _ in range(rounds):
        for plugin in (AtOnce, MayWait, Waits):
            seconds = await per_call(plugin, calls)
            best[plugin.__name__] = min(best.get(plugin.__name__, seconds), seconds)
    for name, micros in best.items():
        print(f"{name:8} {micros:6.2f} µs per on_response")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
