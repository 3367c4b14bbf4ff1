#!/usr/bin/env python3
"""What tracing costs per proxied request: the gateway's CPU per request and req/s with tracing off,
at ``sample_ratio: 0.01`` and at ``1.0``, the spans exported to a collector on loopback.

Usage: .venv/bin/python bench/tracing_overhead.py [--seconds 4] [--rounds 3] [--connections 8]

Starts a Tornado upstream (its own process), an OTLP/HTTP sink that answers every export 200
without decoding it (its own process: the gateway's export cost is the encoding and the POST,
not the collector's), then for each round and mode a fresh gateway (``run.py serve``, one
process) loaded by ``wrk`` for ``--seconds``. Modes are interleaved (off, 0.01, 1.0, off, ...)
so a noisy neighbour hits them alike. CPU is the gateway process's user+system time from
/proc over the run, divided by the requests wrk completed: steadier than req/s on a shared
machine. Prints the median of the rounds per mode, and each mode relative to off. Bounded:
rounds x modes x seconds, plus start-up; everything started is stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")

UPSTREAM = """
import sys, tornado.web, tornado.ioloop
class H(tornado.web.RequestHandler):
    def get(self, *a): self.write(b'{"ok":true,"items":[1,2,3]}')
tornado.web.Application([(r"/.*", H)]).listen(int(sys.argv[1]), "127.0.0.1")
tornado.ioloop.IOLoop.current().start()
"""

SINK = """
import sys, tornado.web, tornado.ioloop
class H(tornado.web.RequestHandler):
    def post(self): self.set_header("Content-Type", "application/x-protobuf")
tornado.web.Application([(r"/v1/traces", H)]).listen(int(sys.argv[1]), "127.0.0.1")
tornado.ioloop.IOLoop.current().start()
"""

MODES = {"off": None, "0.01": 0.01, "1.0": 1.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def gateway_yaml(port: int, admin: int, upstream: int, sink: int, ratio: float | None) -> str:
    text = f"""server: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
logging: {{level: warning, access_log: false}}
upstreams: {{api: {{targets: ["http://127.0.0.1:{upstream}"]}}}}
routes: [{{name: api, path: /api, upstream: api}}]
"""
    if ratio is not None:
        text += (f"tracing: {{otlp_endpoint: 'http://127.0.0.1:{sink}/v1/traces', sample_ratio: {ratio},"
                 " export_interval_seconds: 1}\n")
    return text


def run_once(workdir: Path, mode: str, upstream: int, sink: int, seconds: int, connections: int,
             started: list[subprocess.Popen[bytes]]) -> tuple[float, float, float]:
    """(CPU µs per request, req/s, spans dropped) for one gateway under wrk."""
    port, admin = free_port(), free_port()
    config = workdir / f"gateway-{mode}.yaml"
    config.write_text(gateway_yaml(port, admin, upstream, sink, MODES[mode]))
    proc = subprocess.Popen([PY, str(ROOT / "run.py"), "serve", "-c", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(proc)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/warm")
        subprocess.run(["wrk", "-t1", "-c", str(connections), "-d1s", f"http://127.0.0.1:{port}/api/x"],
                       capture_output=True, check=True, timeout=30)  # warm-up
        before = cpu_seconds(proc.pid)
        out = subprocess.run(["wrk", "-t1", "-c", str(connections), f"-d{seconds}s",
                              f"http://127.0.0.1:{port}/api/x"], capture_output=True, text=True, check=True,
                             timeout=seconds + 30).stdout
        used = cpu_seconds(proc.pid) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/-/metrics", timeout=5).read().decode()
        dropped = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("gateway_spans_dropped_total{"))
        return used / requests * 1e6, rate, dropped
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 1
    started: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            upstream, sink = free_port(), free_port()
            for script, port in ((UPSTREAM, upstream), (SINK, sink)):
                started.append(subprocess.Popen([PY, "-c", script, str(port)], stdout=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{upstream}/")
            for round_ in range(args.rounds):
                for mode in MODES:
                    results[mode].append(run_once(Path(tmp), mode, upstream, sink, args.seconds, args.connections,
                                                  started))
                    cpu, rate, dropped = results[mode][-1]
                    print(f"round {round_ + 1} {mode:>4}: {cpu:7.1f} µs CPU/request  {rate:8.0f} req/s  "
                          f"dropped {dropped:.0f}", flush=True)
        finally:
            for proc in started:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
    base_cpu = statistics.median(r[0] for r in results["off"])
    base_rate = statistics.median(r[1] for r in results["off"])
    print(f"\nmedian of {args.rounds} rounds, {args.seconds}s each, wrk -c{args.connections}:")
    print("| tracing | CPU µs/request | vs off | req/s | vs off |")
    print("| --- | --- | --- | --- | --- |")
    for mode in MODES:
        cpu = statistics.median(r[0] for r in results[mode])
        rate = statistics.median(r[1] for r in results[mode])
        label = "off" if mode == "off" else f"sample_ratio {mode}"
        print(f"| {label} | {cpu:.0f} | {cpu / base_cpu:.2f}× | {rate:.0f} | {rate / base_rate:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
