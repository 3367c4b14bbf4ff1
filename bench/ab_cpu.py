"""CPU per proxied request of gateway trees side by side (A/B), in paired rounds (127.0.0.1, bounded).

Each NAME=ROOT is a gateway source tree (its ``run.py``; e.g. an older commit extracted with
``git archive REV | tar -x -C DIR``), or ``aiohttp`` for the minimal aiohttp proxy. Every
target serves bench/run.py's gateway config, pinned to CPU 0, in front of one nginx backend
on CPU 1, loaded by ``wrk -t1 -c50`` on CPU 1; rounds are interleaved (A B, A B, ...). CPU is
the target's user + system time from /proc/PID/stat over the requests of a round: time the
VM's CPU was taken away is not counted. The first NAME is the base of the ratios.

    .venv/bin/python bench/ab_cpu.py now=. old=/tmp/old aiohttp [--rounds 5] [--seconds 5] [--size small]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_ports, pin_prefix, tree_cpu_seconds, wait_port  # noqa: E402
from targets import backend_nginx_conf, gateway_yaml, write_bodies  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
AIOHTTP = REPO_ROOT / "bench" / "peers" / "aiohttp_proxy.py"


def wrk(url: str, token: str, seconds: int) -> tuple[int, str]:
    out = subprocess.run([*pin_prefix([1]), "wrk", "-t1", "-c50", f"-d{seconds}", "--latency",
                          "-H", f"Authorization: Bearer {token}", url], capture_output=True, text=True).stdout
    done = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    return (int(done.group(1)) if done else 0), (p99.group(1) if p99 else "-")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="+", help="NAME=ROOT (a gateway tree) or aiohttp")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--size", choices=("small", "large"), default="small")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-abcpu-"))
    work.chmod(0o755)  # nginx workers read the bodies
    started: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    nginx: subprocess.Popen[bytes] | None = None
    try:
        www = work / "www"
        www.mkdir()
        write_bodies(www)
        (work / "nginx").mkdir()
        backend, *_ = free_ports(1)
        (work / "nginx" / "nginx.conf").write_text(backend_nginx_conf(work / "nginx", backend, www, 1))
        nginx = subprocess.Popen([*pin_prefix([1]), "nginx", "-p", str(work / "nginx"), "-c",
                                  str(work / "nginx" / "nginx.conf"), "-e", str(work / "nginx" / "error.log")])
        wait_port(backend, 10, nginx)
        secret = secrets.token_urlsafe(32)
        token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
        for spec in a.targets:
            name, _, root = spec.partition("=")
            port, admin = free_ports(2)
            if name == "aiohttp" and not root:
                argv = [sys.executable, str(AIOHTTP), "--port", str(port), "--upstream", f"http://127.0.0.1:{backend}"]
                cwd = REPO_ROOT
            else:
                cwd = Path(root).resolve()
                (work / f"{name}.yaml").write_text(gateway_yaml(port, admin, backend, secret, 1))
                argv = [sys.executable, str(cwd / "run.py"), "serve", "-c", str(work / f"{name}.yaml")]
            proc = subprocess.Popen([*pin_prefix([0]), *argv], cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd)},
                                    stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "wb"))
            started[name] = (proc, port)
            wait_port(port, 30, proc)
        cpu: dict[str, list[float]] = {name: [] for name in started}
        for rnd in range(1, a.rounds + 1):
            for name, (proc, port) in started.items():
                url = f"http://127.0.0.1:{port}/api/{a.size}"  # every proxy strips /api (bench/targets.py)
                wrk(url, token, 1)  # warm-up
                before = tree_cpu_seconds(proc.pid)
                requests, p99 = wrk(url, token, a.seconds)
                us = (tree_cpu_seconds(proc.pid) - before) / max(requests, 1) * 1e6
                cpu[name].append(us)
                print(f"round {rnd}  {name:<10} {requests / a.seconds:8,.0f} req/s  {us:6.1f} µs CPU/request  "
                      f"p99 {p99}", flush=True)
        base = next(iter(cpu))
        for name, values in cpu.items():
            line = f"{name:<10} median {statistics.median(values):6.1f} µs/request"
            if name != base:
                ratios = [x / y for x, y in zip(values, cpu[base], strict=True)]
                line += f"  ÷ {base}: median {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})"
            print(line)
        return 0
    finally:
        for proc, _ in started.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in started.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
