#!/usr/bin/env python3
"""`make bench-ws`: WebSocket messages through the gateway, next to the upstream direct and a byte tunnel.

Three targets, each in front of the same Tornado echo WebSocket upstream (its own process):

- ``direct``: the clients talk to the upstream itself;
- ``gateway``: ``run.py serve`` with one ``websocket: true`` route (no auth, access log on,
  to /dev/null): the shipped message-level relay (Tornado's ``WebSocketProtocol13`` on the
  client side, ``WebSocketClientConnection`` toward the upstream);
- ``tunnel``: the other shape issue 15 names, a byte tunnel after the 101, as a minimal
  prototype on the gateway's own event loop (uvloop + GatewayIOLoop): the handshake passed
  through as bytes, then each side's reads written to the other with backpressure. No
  policies, no limits, no close codes of its own: its cost is the floor of any relay.

Load: ``websockets`` clients in this process, each socket sending ``--size``-byte text
messages in windows of ``--window`` and reading their echoes, at 1 and at 50 sockets.
Reported per target and socket count: messages/s (echoes received per second; each crossed
the relay twice) and the relay process's CPU time per relayed message (user + system from
/proc, divided by twice the echoes). Bounded: every round sends a fixed count, each run
times out after 120 s. Everything started is stopped by PID on the way out.

On a shared machine the figures move with the load: read them side by side, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# --- the processes ---

def serve_upstream(port: int) -> None:
    """A Tornado echo WebSocket server."""
    from tornado.web import Application
    from tornado.websocket import WebSocketHandler

    from gateway.process import run_loop

    class Echo(WebSocketHandler):
        def open(self, *args: str) -> None:
            self.set_nodelay(True)  # small echoes must not wait for Nagle and a delayed ACK

        def on_message(self, message: str | bytes) -> object:
            return self.write_message(message, binary=isinstance(message, bytes))

    async def main() -> None:
        Application([(r".*", Echo)], websocket_max_message_size=16 << 20).listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    run_loop(main())


def serve_tunnel(port: int, upstream_port: int) -> None:
    """The byte-tunnel prototype: the handshake's bytes pass through, then bytes both ways."""
    from tornado.iostream import IOStream, StreamClosedError
    from tornado.tcpclient import TCPClient
    from tornado.tcpserver import TCPServer

    from gateway.process import run_loop

    async def pipe(src: IOStream, dst: IOStream) -> None:
        try:
            while True:
                data = await src.read_bytes(65536, partial=True)
                await dst.write(data)  # backpressure: read no more until the other side took it
        except StreamClosedError:
            pass
        finally:
            dst.close()

    class Tunnel(TCPServer):
        async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
            try:
                head = await stream.read_until(b"\r\n\r\n", max_bytes=65536)
                upstream = await TCPClient().connect("127.0.0.1", upstream_port)
                await upstream.write(head)
                answer = await upstream.read_until(b"\r\n\r\n", max_bytes=65536)
                await stream.write(answer)
            except StreamClosedError:
                stream.close()
                return
            for s in (stream, upstream):
                s.set_nodelay(True)
            await asyncio.gather(pipe(stream, upstream), pipe(upstream, stream))

    async def main() -> None:
        Tunnel().listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    run_loop(main())


def gateway_yaml(port: int, admin_port: int, upstream_port: int) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}, drain_seconds: 1}}
admin: {{host: 127.0.0.1, port: {admin_port}}}
upstreams:
  echo: {{targets: ["http://127.0.0.1:{upstream_port}"]}}
routes:
  - {{name: live, path: /, upstream: echo, websocket: true}}
logging: {{level: warning, format: json}}
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


# --- the load ---

async def one_socket(url: str, messages: int, size: int, window: int) -> None:
    from websockets.asyncio.client import connect

    payload = "m" * size
    async with connect(url, ping_interval=None, proxy=None, compression=None, max_size=None) as ws:
        left = messages
        while left:
            n = min(window, left)
            for _ in range(n):
                await ws.send(payload)
            for _ in range(n):
                await ws.recv()
            left -= n


async def load(url: str, sockets: int, messages: int, size: int, window: int) -> float:
    """Seconds for ``sockets`` sockets to echo ``messages`` each."""
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one_socket(url, messages, size, window) for _ in range(sockets))), 120)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="message bytes (default 64)")
    parser.add_argument("--window", type=int, default=16, help="messages in flight per socket (default 16)")
    parser.add_argument("--messages", type=int, default=20000, help="echoes per run, over all sockets (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is shown (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round of 4000 messages")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-tunnel", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    if args.serve_tunnel:
        serve_tunnel(*args.serve_tunnel)
        return 0
    if args.quick:
        args.rounds, args.messages = 1, 4000

    procs: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.TemporaryDirectory(prefix="ws-bench-")

    def start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        wait_port(port, proc)
        return proc

    try:
        up_port, gw_port, admin_port, tun_port = free_port(), free_port(), free_port(), free_port()
        upstream = start([sys.executable, __file__, "--serve-upstream", str(up_port)], up_port)
        config = Path(tmp.name) / "gateway.yaml"
        config.write_text(gateway_yaml(gw_port, admin_port, up_port))
        gateway = start([sys.executable, str(ROOT / "run.py"), "serve", "-c", str(config)], gw_port)
        tunnel = start([sys.executable, __file__, "--serve-tunnel", str(tun_port), str(up_port)], tun_port)
        targets = {"direct": (up_port, upstream), "gateway": (gw_port, gateway), "tunnel": (tun_port, tunnel)}
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for sockets in (1, 50):
                for name, (port, proc) in targets.items():
                    per_socket = max(args.messages // sockets, 1)
                    before = cpu_seconds(proc.pid)
                    seconds = asyncio.run(load(f"ws://127.0.0.1:{port}/", sockets, per_socket, args.size,
                                               args.window))
                    cpu = cpu_seconds(proc.pid) - before
                    echoes = per_socket * sockets
                    results.setdefault((name, sockets), []).append((echoes / seconds, cpu / (2 * echoes)))
        print(f"WebSocket echo, {args.size}-byte text messages, window {args.window}, {args.messages} echoes per run,"
              f" median of {args.rounds} round(s); CPU of the relay (for direct: the upstream) per relayed message")
        print(f"{'target':<10} {'sockets':>7} {'messages/s':>11} {'CPU us/msg':>11}")
        for (name, sockets), runs in sorted(results.items(), key=lambda kv: (kv[0][1], list(targets).index(kv[0][0]))):
            rates = sorted(r for r, _ in runs)
            cpus = sorted(c for _, c in runs)
            print(f"{name:<10} {sockets:>7} {rates[len(rates) // 2]:>11.0f} {cpus[len(cpus) // 2] * 1e6:>11.1f}")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
