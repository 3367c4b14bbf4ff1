"""What one Redis rate-limit hit costs the gateway's process, in CPU µs (``time.process_time``).

Usage: python bench/ratelimit_redis_cost.py [--hits 5000] [--rounds 3] [--url redis://127.0.0.1:PORT/0]

Times :meth:`gateway.policies.ratelimit_redis.RedisStore.hit` ``hits`` times one after the
other, then ``hits`` times with 64 in flight (64 tasks, each hitting in turn), and prints the
CPU time of this process per hit (redis-server's own CPU is not counted) and the wall time
per hit, the best of ``rounds``. Without ``--url`` it starts a throwaway ``redis-server`` on a
free 127.0.0.1 port (no persistence, in a temp dir) and stops it by PID at the end; ``--url``
must name a loopback server. Every hit is allowed (a limit far above ``hits``), so each is one
``EVALSHA`` round trip and one decision.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.policies.gcra import GcraRule  # noqa: E402
from gateway.policies.ratelimit_redis import RedisStore  # noqa: E402

CONCURRENCY = 64


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1; yields its URL, stops it by PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (make redis-server installs it), or pass --url")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory, "--daemonize", "no", "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not answers_ping(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server on port {port} did not start")
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def measure(run: Callable[[], Awaitable[None]], hits: int) -> tuple[float, float]:
    """(CPU µs per hit, wall µs per hit) of one run of ``hits`` hits."""
    cpu, wall = time.process_time(), time.perf_counter()
    await run()
    return (time.process_time() - cpu) / hits * 1e6, (time.perf_counter() - wall) / hits * 1e6


async def bench(url: str, hits: int, rounds: int) -> None:
    store = RedisStore(url, fail_open=False, timeout_seconds=0.5, max_connections=CONCURRENCY)
    rule = GcraRule(1_000_000_000, 3600.0)
    per_task = hits // CONCURRENCY

    async def sequential() -> None:
        for n in range(hits):
            await store.hit(f"seq{n % 16}", rule)

    async def worker(w: int) -> None:
        for n in range(per_task):
            await store.hit(f"con{(w + n) % 16}", rule)

    async def concurrent() -> None:
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))

    try:
        await asyncio.gather(*(store.hit("warm", rule) for _ in range(CONCURRENCY)))  # the pool, the script
        results: dict[str, list[tuple[float, float]]] = {"sequential": [], f"{CONCURRENCY} in flight": []}
        for _ in range(rounds):
            results["sequential"].append(await measure(sequential, hits))
            results[f"{CONCURRENCY} in flight"].append(await measure(concurrent, per_task * CONCURRENCY))
    finally:
        await store.close()
    print(f"RedisStore.hit, {hits} hits, best of {rounds} (CPU of this process; redis-server not counted)")
    print(f"{'case':<16} {'CPU µs/hit':>11} {'wall µs/hit':>12}")
    for case, runs in results.items():
        print(f"{case:<16} {min(cpu for cpu, _ in runs):>11.1f} {min(wall for _, wall in runs):>12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="a loopback Redis to use instead of starting one")
    args = parser.parse_args()
    if not 0 < args.hits <= 1_000_000 or not 0 < args.rounds <= 20:
        parser.error("--hits must be 1..1000000 and --rounds 1..20")
    if args.url is not None:
        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--url must point at 127.0.0.1")
        asyncio.run(bench(args.url, args.hits, args.rounds))
        return
    with redis_server() as url:
        asyncio.run(bench(url, args.hits, args.rounds))


if __name__ == "__main__":
    main()
