#!/usr/bin/env python3
"""`make bench`: the gateway side by side with what an operator would pick instead.

Starts, each on its own free 127.0.0.1 port and temp dir: an nginx backend (/small JSON,
/large 64 KiB), the gateway (1 process, JWT HS256 route, default behaviour on), nginx as a
reverse proxy, a minimal aiohttp proxy and a naive Tornado proxy. The proxy under test runs
on CPU 0, wrk and the backend on CPU 1 (`taskset`). wrk rounds are interleaved (A B C D E,
A B C D E, ...), at both body sizes, plus a 1-connection run for the latency added.
Prints one table and writes it to bench/results/<timestamp>.{json,txt}.

Exit status: 0 when the table was produced (a target that failed to start is skipped and
named), 1 on a harness error (no nginx/wrk, backend down), 130 on Ctrl-C. Everything
started is stopped by PID on the way out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import (  # noqa: E402
    HarnessError,
    Plan,
    busy_warning,
    ensure_python,
    ensure_tools,
    loadavg,
    machine_info,
    plan_cpus,
)
from loadgen import WrkResult, run_wrk  # noqa: E402
from procs import Proc, ProcessSet, free_ports, http_get, pin_prefix, tree_cpu_seconds, wait_http  # noqa: E402
from report import format_table, summarize  # noqa: E402
from targets import (  # noqa: E402
    BENCH_DIR,
    LARGE_BODY,
    REPO_ROOT,
    SMALL_BODY,
    TARGETS,
    backend_nginx_conf,
    gateway_yaml,
    nginx_proxy_conf,
    write_bodies,
)

SIZES = ("small", "large")
BODIES = {"small": SMALL_BODY, "large": LARGE_BODY}
RESULTS_DIR = BENCH_DIR / "results"


@dataclass
class Settings:
    """What one run does, from the command line."""

    duration_s: int
    c1_duration_s: int
    warmup_s: int
    rounds: int
    connections: int
    only: list[str]
    gateway_processes: int
    quick: bool


@dataclass
class Live:
    """A target that answered its sanity check and is being measured."""

    name: str
    port: int
    proc: Proc
    argv: list[str]
    extra: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(description="Benchmark the gateway against nginx, aiohttp and a "
                                "naive Tornado proxy (127.0.0.1 only, bounded in time).")
    p.add_argument("--duration", type=int, help="seconds per wrk run at load (default 5; --quick 1)")
    p.add_argument("--c1-duration", type=int, help="seconds per 1-connection run (default duration/2)")
    p.add_argument("--warmup", type=int, help="seconds of warm-up per target and size (default 1)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections at load (default 50)")
    p.add_argument("--only", default="", help="comma list of: " + ",".join(TARGETS))
    p.add_argument("--gateway-processes", type=int, default=1, metavar="N",
                   help="processes: N for the gateway, pinned to CPUs 0..N-1 (wrk gets the rest)")
    p.add_argument("--quick", action="store_true", help="short smoke run (1 s runs, 2 rounds)")
    a = p.parse_args(argv)
    only = [n.strip() for n in a.only.split(",") if n.strip()] or list(TARGETS)
    unknown = [n for n in only if n not in TARGETS]
    if unknown:
        p.error(f"--only: unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    duration = a.duration or (1 if a.quick else 5)
    for name, value in (("--duration", duration), ("--connections", a.connections),
                        ("--gateway-processes", a.gateway_processes)):
        if value < 1:
            p.error(f"{name} must be at least 1")
    return Settings(
        duration_s=duration,
        c1_duration_s=a.c1_duration or max(1, duration // 2),
        warmup_s=a.warmup if a.warmup is not None else 1,
        rounds=max(1, a.rounds or (2 if a.quick else 3)),
        connections=a.connections,
        only=[n for n in TARGETS if n in only],
        gateway_processes=a.gateway_processes,
        quick=a.quick,
    )


def mint_token(secret: str) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": "bench-user", "iat": now, "exp": now + 3600}, secret, algorithm="HS256")


class Bench:
    """One bench run: starts the processes, runs the rounds, returns the results."""

    def __init__(self, s: Settings, plan: Plan, nginx: str, wrk_bin: str, workdir: Path) -> None:
        self.s, self.plan, self.nginx, self.wrk, self.workdir = s, plan, nginx, wrk_bin, workdir
        self.ps = ProcessSet()
        self.python = sys.executable
        self.secret = secrets.token_urlsafe(32)
        self.token = mint_token(self.secret)
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.live: dict[str, Live] = {}
        self.skipped: dict[str, str] = {}
        self.commands: dict[str, str] = {}
        self.results: list[WrkResult] = []
        self.backend: Live | None = None
        self.loadavg: list[str] = []

    # -- starting ---------------------------------------------------------------------------

    def _nginx(self, name: str, conf: str, cpus: list[int] | None) -> Proc:
        prefix = self.workdir / name
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(conf)
        argv = [*pin_prefix(cpus), self.nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                "-e", str(prefix / "error.log")]
        return self.ps.start(name, argv, stderr=prefix / "stderr.log")

    def start_backend(self, port: int) -> None:
        www = self.workdir / "www"
        write_bodies(www)
        conf = backend_nginx_conf(self.workdir / "backend", port, www, self.plan.backend_workers)
        proc = self._nginx("backend", conf, self.plan.load_cpus)
        self.commands["direct"] = " ".join(proc.argv)
        why = wait_http(proc, port, "/small", {}, 10, SMALL_BODY)
        if why:
            raise HarnessError(f"backend nginx did not start: {why}\n{proc.stderr_tail()}\n"
                               f"{_tail(self.workdir / 'backend' / 'error.log')}")
        self.backend = Live("direct", port, proc, proc.argv)

    def start_target(self, name: str, port: int, backend_port: int, admin_port: int) -> None:
        """Start one proxy and sanity-check it; on failure record why in `skipped`."""
        cpus = self.plan.proxy_cpus
        upstream = f"http://127.0.0.1:{backend_port}"
        timeout = 10.0
        env = None
        stdout = None
        cwd = None
        if name == "nginx":
            proc = self._nginx("nginx", nginx_proxy_conf(self.workdir / "nginx", port, backend_port, 1), cpus)
        else:
            if name == "gateway":
                if not (REPO_ROOT / "run.py").exists():
                    self.skipped[name] = "run.py not found (gateway not written yet)"
                    return
                conf = self.workdir / "gateway.yaml"
                conf.write_text(gateway_yaml(port, admin_port, backend_port, self.secret,
                                             self.s.gateway_processes))
                argv = [self.python, "run.py", "serve", "-c", str(conf)]
                stdout, cwd, timeout = self.workdir / "gateway-access.log", REPO_ROOT, 20.0
            elif name == "aiohttp":
                try:
                    import aiohttp  # noqa: F401
                except ImportError:
                    self.skipped[name] = "aiohttp not installed (pip install -e '.[bench]')"
                    return
                argv = [self.python, str(BENCH_DIR / "peers" / "aiohttp_proxy.py"), "--port", str(port),
                        "--upstream", upstream]
            elif name == "naive":
                argv = [self.python, str(BENCH_DIR / "peers" / "tornado_naive.py"), "--port", str(port),
                        "--upstream", upstream]
                env = {**os.environ, "BENCH_JWT_SECRET": self.secret}
            else:
                raise HarnessError(f"unknown target {name}")
            proc = self.ps.start(name, [*pin_prefix(cpus), *argv], cwd=cwd, stdout=stdout,
                                 stderr=self.workdir / f"{name}.stderr.log", env=env)
        self.commands[name] = " ".join(proc.argv)
        why = wait_http(proc, port, "/api/small", self.headers, timeout, SMALL_BODY)
        if why is None:
            try:
                status, _, body = http_get(port, "/api/large", self.headers)
            except OSError as exc:
                why = f"GET /api/large: {exc}"
            else:
                if status != 200 or body != LARGE_BODY:
                    why = f"GET /api/large -> {status}, {len(body)} bytes (want 200, {len(LARGE_BODY)})"
        if why:
            tail = proc.stderr_tail()
            self.skipped[name] = f"failed to start: {why}" + (f"\n    stderr tail:\n{_indent(tail)}" if tail else "")
            self.ps.stop(proc)
            return
        live = Live(name, port, proc, proc.argv)
        if name == "gateway":
            live.extra = self._gateway_checks(port, admin_port)
        self.live[name] = live

    def _gateway_checks(self, port: int, admin_port: int) -> list[str]:
        """Evidence that the default behaviour is on: request id echoed, metrics served."""
        out = []
        try:
            _, headers, _ = http_get(port, "/api/small", self.headers)
            out.append("X-Request-Id echoed" if "x-request-id" in headers else "no X-Request-Id in response")
            status, _, body = http_get(admin_port, "/-/metrics", {})
            out.append(f"admin /-/metrics -> {status}"
                       + (" (gateway_requests_total present)" if b"gateway_requests_total" in body else ""))
        except OSError as exc:
            out.append(f"gateway checks: {exc}")
        return out

    # -- measuring --------------------------------------------------------------------------

    def targets_in_order(self) -> list[Live]:
        order = []
        for name in self.s.only:
            if name == "direct" and self.backend:
                order.append(self.backend)
            elif name in self.live:
                order.append(self.live[name])
        return order

    def measure(self, t: Live, size: str, connections: int, duration: int) -> WrkResult | None:
        if not t.proc.alive():
            if t.name not in self.skipped:
                self.skipped[t.name] = f"died during the run (exit {t.proc.popen.returncode}):\n" \
                                       + _indent(t.proc.stderr_tail())
            return None
        prefix = TARGETS[t.name].prefix
        threads = self.plan.wrk_threads if connections > 1 else 1
        cpu_before = tree_cpu_seconds(t.proc.pid)
        result = run_wrk(self.wrk, f"http://127.0.0.1:{t.port}{prefix}/{size}", target=t.name, size=size,
                         connections=connections, threads=threads, duration_s=duration,
                         headers=self.headers, pin=pin_prefix(self.plan.load_cpus))
        if result.requests:
            result.cpu_us = (tree_cpu_seconds(t.proc.pid) - cpu_before) / result.requests * 1e6
        t.proc.sample_rss()
        return result

    def run(self) -> None:
        order = self.targets_in_order()
        if not order:
            return
        if self.s.warmup_s > 0:
            print(f"warm-up: {self.s.warmup_s}s per target and body size", flush=True)
            for t in order:
                for size in SIZES:
                    self.measure(t, size, self.s.connections, self.s.warmup_s)
        for rnd in range(1, self.s.rounds + 1):
            for connections, duration in ((self.s.connections, self.s.duration_s), (1, self.s.c1_duration_s)):
                for size in SIZES:
                    for t in order:
                        r = self.measure(t, size, connections, duration)
                        if r is None:
                            continue
                        r.round = rnd
                        self.results.append(r)
                        print(f"  round {rnd}/{self.s.rounds}  {TARGETS[t.name].label:<15} {size:<5} "
                              f"c{connections:<3} {r.rps:>10,.0f} req/s  p50 {_ms(r.p50_ms)}  "
                              f"p99 {_ms(r.p99_ms)}  errors {r.errors}" + (f"  [{r.note}]" if r.note else ""),
                              flush=True)

    def access_log_lines(self) -> int | None:
        path = self.workdir / "gateway-access.log"
        if not path.exists():
            return None
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _ms(v: float | None) -> str:
    return f"{v:7.2f}ms" if v is not None else "      -  "


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def estimate_seconds(s: Settings) -> int:
    n = len(s.only)
    per_round = n * len(SIZES) * (s.duration_s + s.c1_duration_s + 0.2)
    return int(s.rounds * per_round + n * len(SIZES) * (s.warmup_s + 0.2) + 5)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    s = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir: Path | None = None
    bench: Bench | None = None
    try:
        ensure_python()
        nginx, wrk = ensure_tools()
        plan = plan_cpus(s.gateway_processes)
        print(f"bench: {', '.join(s.only)}; {s.rounds} rounds x {s.duration_s}s at c{s.connections} "
              f"and {s.c1_duration_s}s at c1, both bodies; about {estimate_seconds(s)}s", flush=True)
        print(f"pinning: {plan.note}", flush=True)
        busy = busy_warning()
        if busy:
            print(f"warning: {busy}", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        workdir.chmod(0o755)  # nginx workers run as nobody when started by root: they read www/
        bench = Bench(s, plan, nginx, wrk, workdir)
        backend_port, admin_port, *ports = free_ports(2 + len(TARGETS))
        port_of = dict(zip([n for n in TARGETS if n != "direct"], ports, strict=False))
        bench.start_backend(backend_port)
        for name in s.only:
            if name != "direct":
                bench.start_target(name, port_of[name], backend_port, admin_port)
        for name, cmd in bench.commands.items():
            print(f"  {name:<8} {cmd}", flush=True)
        for name, why in bench.skipped.items():
            print(f"  SKIPPED {name}: {why}", flush=True)
        started = dt.datetime.now()
        bench.loadavg.append(loadavg())
        bench.run()
        bench.loadavg.append(loadavg())
        for t in bench.targets_in_order():
            t.proc.sample_rss()
        bench.ps.stop_all()  # before the report: the gateway flushes its access log on the way out
        return report(bench, s, plan, machine_info(nginx, wrk), started, argv)
    except HarnessError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted, stopping everything", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            bench.ps.stop_all()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def report(bench: Bench, s: Settings, plan: Plan, machine: dict[str, Any], started: dt.datetime,
           argv: list[str]) -> int:
    order = [t.name for t in bench.targets_in_order()]
    notes = {n: TARGETS[n].note for n in TARGETS}
    rss = {t.name: t.proc.peak_rss_mib() for t in bench.targets_in_order()}
    rows = summarize(bench.results, {n: TARGETS[n].label for n in TARGETS}, notes, rss, order, SIZES,
                     s.connections)
    lines = [
        f"gateway bench {started:%Y-%m-%d %H:%M:%S}: {machine['cpu']}, {machine['cpus']} CPUs, "
        f"kernel {machine['kernel']}, Python {machine['python']}, tornado {machine['tornado']}, "
        f"{machine['nginx']}, {machine['wrk']}",
        f"command: bench/run.py {' '.join(argv)}".rstrip(),
        f"{s.rounds} interleaved rounds; {s.duration_s}s at {s.connections} connections, "
        f"{s.c1_duration_s}s at 1 connection; gateway processes: {s.gateway_processes}; {plan.note}",
        f"load average before / after: {' / '.join(bench.loadavg)} (other work on the machine skews "
        "every figure)",
        "",
        format_table(rows, s.connections),
    ]
    extra = []
    if "gateway" in bench.live:
        extra += bench.live["gateway"].extra
        count = bench.access_log_lines()
        if count is not None:
            extra.append(f"gateway access log: {count:,} lines on stdout "
                         f"for {sum(r.requests for r in bench.results if r.target == 'gateway'):,} "
                         "measured requests (plus warm-up)")
    for name, why in bench.skipped.items():
        extra.append(f"SKIPPED {TARGETS[name].label}: {why}")
    if "direct" not in order:
        extra.append("direct not measured: no ratio to direct, no latency added")
    if extra:
        lines += ["", *extra]
    text = "\n".join(lines)
    print("\n" + text, flush=True)

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = f"{started:%Y%m%d-%H%M%S}"
    (RESULTS_DIR / f"{stamp}.txt").write_text(text + "\n")
    (RESULTS_DIR / f"{stamp}.json").write_text(json.dumps({
        "started": started.isoformat(timespec="seconds"), "argv": argv, "machine": machine,
        "settings": s.__dict__, "pinning": plan.__dict__, "commands": bench.commands,
        "skipped": bench.skipped, "notes": extra, "loadavg": bench.loadavg, "rows": [r.to_json() for r in rows],
        "runs": [r.to_json() for r in bench.results],
    }, indent=2) + "\n")
    print(f"\nwritten: {RESULTS_DIR.relative_to(REPO_ROOT)}/{stamp}.{{txt,json}}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
