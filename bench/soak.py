#!/usr/bin/env python3
"""`make soak`: the gateway under sustained load, faults and reloads, judged by fixed criteria.

Starts on 127.0.0.1, each on a free port, in a temp dir: redis-server, three soak targets
(bench/soak_upstream.py), the gateway (bench/soak_config.py's config: JWT, Redis rate limit,
a retrying pool of the three targets, an aggregate route, a WebSocket route, access log and
metrics on). Then:

1. calibration: the load generator (bench/soak_load.py) in closed loop, 32 workers, the
   soak's own traffic mix, for max(5, min(15, SOAK_SECONDS/40)) s: the maximum the gateway
   serves of that mix on this machine; the soak runs open-loop at 80 % of it;
2. the loaded phase, SOAK_SECONDS long (default 600): the mix at that rate, a rate-limited
   stream, a few long-lived WebSocket echo sockets (bench/soak_ws.py), and the faults of
   bench/soak_config.schedule() (printed first), while the gateway's RSS, open fds and CPU
   are sampled every second;
3. the end: load stops, the fds and `gateway_websocket_connections` are read again, one
   WebSocket is opened (soak_ws.ShutdownProbe) and the gateway gets SIGTERM (exit 0 wanted;
   the socket must echo through the drain and then get 1001).

The report (bench/soak_report.py) is printed and written as bench/results/soak-<stamp>.txt,
.json and .png. Exit status: 0 when every criterion held, 1 when one failed, 2 on a harness
error (a process that would not start), 130 on Ctrl-C or SIGTERM. Everything started is
stopped by PID on every way out (bench/procs.py). SOAK_KEEP=1 keeps the temp dir (the
gateway's logs, the targets' POST records) and prints where.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from host import HarnessError, ensure_python, loadavg, machine_info  # noqa: E402
from procs import Proc, ProcessSet, _start_time, _stat_fields, free_ports, http_get  # noqa: E402
from soak_config import DRAIN_SECONDS, LIMITED_RATE, Event, gateway_yaml, reload_interval, schedule  # noqa: E402
from soak_hostile import malformed_burst, slow_headers  # noqa: E402
from soak_ws import ShutdownProbe, parse_gauge  # noqa: E402
from targets import REPO_ROOT  # noqa: E402

RESULTS_DIR = BENCH / "results"
CALIBRATION_WORKERS = 32
LOAD_SHARE = 0.8
SLOW_HEADER_CLIENTS = 64
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """The gateway (and the load generator) at one moment of the run."""

    t: float
    rss_mib: float
    fds: int
    fd_kinds: dict[str, int]
    cpu_gateway: float  # share of one CPU since the last sample
    cpu_load: float
    cpu_targets: float
    answered: int  # access-log lines since the last sample


@dataclass
class Run:
    """Everything the report needs, filled in as the run goes."""

    seconds: float
    started: dt.datetime
    ports: dict[str, int] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    rate: float = 0.0
    share: float = LOAD_SHARE
    t0: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, Event]] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)
    hostile: dict[str, Any] = field(default_factory=dict)
    baseline_fds: dict[str, int] = field(default_factory=dict)
    end_fds: dict[str, int] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    post_records: dict[str, list[str]] = field(default_factory=dict)
    gateway_exit: int | None = None
    gateway_stderr: dict[str, int] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)
    access_lines: int = 0
    machine: dict[str, Any] = field(default_factory=dict)
    loadavg: list[str] = field(default_factory=list)
    windows: list[Any] = field(default_factory=list)  # soak_config.Window, set by soak_report.evaluate
    ws_gauge: float | None = None  # gateway_websocket_connections once the load is over
    ws_shutdown: dict[str, Any] | None = None  # soak_ws.ShutdownProbe.wait(): a socket across SIGTERM


def _cpu_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def classify_fds(pid: int, ports: dict[str, int]) -> dict[str, int]:
    """The process's open fds by kind: `client` (accepted on the main listener), `upstream`
    (to a target), `redis`, `listen`, `other socket`, `other` (files, pipes, epoll...)."""
    inodes: dict[str, str] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state, inode = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3], f[9]
            if state == "0A":
                kind = "listen"
            elif local == ports["gateway"]:
                kind = "client"
            elif remote in (ports["t1"], ports["t2"], ports["t3"]):
                kind = "upstream"
            elif remote == ports["redis"]:
                kind = "redis"
            else:
                kind = "other socket"
            inodes[inode] = kind
    out: dict[str, int] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = inodes.get(target[8:-1], "other socket") if target.startswith("socket:[") else "other"
        out[kind] = out.get(kind, 0) + 1
    return out


class Soak:
    """The processes of one soak and the actions of its schedule."""

    def __init__(self, run: Run, workdir: Path) -> None:
        self.run, self.workdir = run, workdir
        self.ps = ProcessSet()
        self.python = sys.executable
        self.secret = secrets.token_urlsafe(48)
        self.procs: dict[str, Proc] = {}
        self.config_path = workdir / "gateway.yaml"
        self.generation = 0
        self.fail_open = True
        self.threads: list[threading.Thread] = []
        self.access_log = workdir / "gateway-access.log"
        self._access_offset = 0

    # -- processes ---------------------------------------------------------------------------

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise HarnessError("redis-server is missing (make redis-server installs it)")
        port = self.run.ports["redis"]
        n = sum(1 for p in self.ps.procs if p.name == "redis")
        proc = self.ps.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(self.workdir), "--logfile", ""],
                             stderr=self.workdir / f"redis-{n}.log")
        self.procs["redis"] = proc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.alive():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise HarnessError(f"redis-server did not answer PING on port {port}:\n{proc.stderr_tail()}")

    def start_target(self, name: str) -> None:
        port = self.run.ports[name]
        n = sum(1 for p in self.ps.procs if p.name == name)
        proc = self.ps.start(name, [self.python, str(BENCH / "soak_upstream.py"), "--port", str(port),
                                    "--name", name, "--record", str(self.workdir / f"posts-{name}.log")],
                             stderr=self.workdir / f"{name}-{n}.stderr.log")
        self.procs[name] = proc
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if http_get(port, "/health")[0] == 200:
                    return
            except OSError:
                pass
            if not proc.alive():
                break
            time.sleep(0.05)
        raise HarnessError(f"target {name} did not start:\n{proc.stderr_tail()}")

    def write_config(self, broken: bool = False) -> None:
        self.generation += 1
        p = self.run.ports
        self.config_path.write_text(gateway_yaml(
            port=p["gateway"], admin_port=p["admin"], secret=self.secret,
            targets=[p["t1"], p["t2"], p["t3"]], redis_port=p["redis"], fail_open=self.fail_open,
            generation=self.generation, broken=broken))

    def start_gateway(self) -> None:
        self.write_config()
        proc = self.ps.start("gateway", [self.python, "run.py", "serve", "-c", str(self.config_path)],
                             cwd=REPO_ROOT, stdout=self.access_log, stderr=self.workdir / "gateway.stderr.log")
        self.procs["gateway"] = proc
        deadline = time.monotonic() + 30
        last = ""
        while time.monotonic() < deadline and proc.alive():
            try:
                status, _, body = http_get(self.run.ports["gateway"], "/-/ready")
                if status == 200:
                    return
                last = f"/-/ready {status} {body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise HarnessError(f"the gateway did not become ready ({last}):\n{proc.stderr_tail()}")

    def kill(self, name: str) -> None:
        """SIGKILL one started process by PID (only if it is still the process we started)."""
        proc = self.procs[name]
        if proc.start_time is not None and _start_time(proc.pid) == proc.start_time:
            os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs[name]
        if proc.start_time is not None and _start_time(proc.pid) == proc.start_time:
            os.kill(proc.pid, sig)

    # -- the schedule ------------------------------------------------------------------------

    def fire(self, e: Event, token: str) -> None:
        at = time.time()
        if e.action in ("target_restart", "redis_start"):
            # A restart is stamped when the process answers, not when it was begun: until then
            # the fault lasts (Redis still down: fail_open lets requests through, and the
            # rate-limit check's segment of a fresh, empty Redis must not count them).
            if e.action == "target_restart":
                self.start_target(e.arg)
            else:
                # Redis may answer the gateway before start_redis() sees it ready: between these two
                # stamps it is neither surely down nor surely up (the rate-limit check leaves it out).
                self.run.events.append((time.time(), Event(e.at, "redis_starting", e.arg, label="redis starting")))
                self.start_redis()
            self.run.events.append((time.time(), e))
            return
        self.run.events.append((at, e))
        if e.action == "target_kill":
            self.kill(e.arg)
        elif e.action == "target_503":
            self.signal(e.arg, signal.SIGUSR1)
        elif e.action == "target_ok":
            self.signal(e.arg, signal.SIGUSR2)
        elif e.action == "redis_kill":
            self.kill("redis")
        elif e.action in ("reload", "reload_broken"):
            broken = e.action == "reload_broken"
            previous = self.fail_open
            if not broken:
                self.fail_open = e.fail_open
            self.write_config(broken=broken)
            status, body = self.reload()
            self.run.reloads.append({"at": at - self.run.t0, "broken": broken, "status": status,
                                     "fail_open": self.fail_open, "answer": body[:300]})
            if broken:  # the running config stays; the file goes back to it for the next reload
                self.fail_open = previous
        elif e.action == "malformed_burst":
            self._thread("malformed", lambda: malformed_burst(self.run.ports["gateway"], token, e.duration))
        elif e.action == "slow_headers":
            self._thread("slow_headers",
                         lambda: slow_headers(self.run.ports["gateway"], SLOW_HEADER_CLIENTS, e.duration))

    def _thread(self, name: str, job: Any) -> None:
        def go() -> None:
            self.run.hostile[name] = job()

        t = threading.Thread(target=go, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def reload(self) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.run.ports["admin"], timeout=10)
        try:
            conn.request("POST", "/-/reload", body=b"")
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        except OSError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    # -- measuring ---------------------------------------------------------------------------

    def new_access_lines(self) -> int:
        try:
            with open(self.access_log, "rb") as f:
                f.seek(self._access_offset)
                data = f.read()
        except OSError:
            return 0
        cut = data.rfind(b"\n") + 1
        self._access_offset += cut
        return data[:cut].count(b"\n")

    def loadgen(self, plan: dict[str, Any], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        plan_path, out = self.workdir / f"{name}-plan.json", self.workdir / f"{name}-result.json"
        plan_path.write_text(json.dumps(plan))
        proc = self.ps.start(name, [self.python, str(BENCH / "soak_load.py"), str(plan_path), str(out)],
                             stderr=self.workdir / f"{name}.stderr.log")
        return proc.popen, out


def _mint(secret: str, subject: str, ttl: int) -> str:
    sys.path.insert(0, str(REPO_ROOT))
    from gateway.tokens import mint_token

    return mint_token(key=secret, algorithm="HS256", subject=subject, scopes=None, ttl_seconds=ttl,
                      audience=None, issuer=None, extra_claims={})


def calibrate(soak: Soak, run: Run, tokens: list[str]) -> None:
    seconds = max(5.0, min(15.0, run.seconds / 40))
    print(f"calibrating: closed loop, {CALIBRATION_WORKERS} workers, the soak's mix, {seconds:g}s", flush=True)
    gw = soak.procs["gateway"].pid
    popen, out = soak.loadgen({"port": run.ports["gateway"], "tokens": tokens, "mode": "closed",
                               "workers": CALIBRATION_WORKERS, "seconds": seconds, "run_id": "cal",
                               "timeout_s": 30}, "calibration")
    c0, l0, t0 = _cpu_ticks(gw), 0, time.monotonic()
    while popen.poll() is None:
        l0 = max(l0, _cpu_ticks(popen.pid))
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    if popen.returncode != 0:
        raise HarnessError(f"the calibration load generator failed (exit {popen.returncode})")
    result = json.loads(out.read_text())
    ok = sum(n for kind in result["by_kind"].values() for o, n in kind.items() if o == "200")
    rps = result["requests"] / result["seconds"]
    run.calibration = {
        "seconds": seconds, "workers": CALIBRATION_WORKERS, "requests": result["requests"], "ok": ok,
        "rps": round(rps, 1), "cpu_gateway": round((_cpu_ticks(gw) - c0) / TICKS / elapsed, 2),
        "cpu_loadgen": round(l0 / TICKS / elapsed, 2), "latency_by_kind": result["latency_by_kind"],
        "errors": {f"{k} {o}": n for k, v in result["by_kind"].items() for o, n in v.items() if o != "200"},
    }
    if rps <= 0 or ok < 0.95 * result["requests"]:
        raise HarnessError(f"calibration: only {ok} of {result['requests']} requests answered 200: "
                           f"{run.calibration['errors']}")
    run.rate = round(run.share * rps, 1)
    print(f"  max {rps:,.0f} req/s (gateway CPU {run.calibration['cpu_gateway']:.0%}, load generator "
          f"{run.calibration['cpu_loadgen']:.0%}); the soak runs at {run.share:.0%}: {run.rate:,.0f} req/s",
          flush=True)


def soak_phase(soak: Soak, run: Run, tokens: list[str], limited_token: str, ws_token: str) -> None:
    events = schedule(run.seconds)
    gw = soak.procs["gateway"].pid
    popen, out = soak.loadgen({
        "port": run.ports["gateway"], "tokens": tokens, "mode": "open", "rate": run.rate,
        "seconds": run.seconds, "run_id": "soak", "timeout_s": 30, "max_in_flight": 512,
        "limited": {"path": "/api/limited", "token": limited_token, "rate": LIMITED_RATE},
        "ws": {"path": "/ws", "token": ws_token},
    }, "soak-load")
    run.t0 = time.time()
    soak.new_access_lines()
    last = (time.monotonic(), _cpu_ticks(gw), 0, 0)
    pending = list(events)
    next_print = 10.0
    while popen.poll() is None:
        now = time.time() - run.t0
        while pending and pending[0].at <= now:
            e = pending.pop(0)
            print(f"  [{now:6.1f}s] {e.label}", flush=True)
            soak.fire(e, tokens[0])
        mono = time.monotonic()
        if mono - last[0] >= 1.0:
            targets = sum(_cpu_ticks(soak.procs[n].pid) for n in ("t1", "t2", "t3"))
            cpu_g, cpu_l = _cpu_ticks(gw), _cpu_ticks(popen.pid)
            span = mono - last[0]
            kinds = classify_fds(gw, run.ports)
            s = Sample(round(now, 2), round(_rss_mib(gw), 2), sum(kinds.values()), kinds,
                       round((cpu_g - last[1]) / TICKS / span, 3), round(max(0, cpu_l - last[2]) / TICKS / span, 3),
                       round(max(0, targets - last[3]) / TICKS / span, 3), soak.new_access_lines())
            run.samples.append(s)
            last = (mono, cpu_g, cpu_l, targets)
            if now >= next_print and now < run.seconds + 1:
                next_print += 10.0
                print(f"  [{now:6.1f}s] {s.answered / span:7.0f} answered/s  gateway RSS {s.rss_mib:6.1f} MiB  "
                      f"fds {s.fds:4d}  CPU gateway {s.cpu_gateway:4.0%} load {s.cpu_load:4.0%} "
                      f"targets {s.cpu_targets:4.0%}", flush=True)
        if now > run.seconds + 60:
            raise HarnessError("the load generator overran its time by 60 s")
        time.sleep(0.05)
    for e in pending:  # a fault whose end fell after the load: end it now, so windows close
        soak.fire(e, tokens[0])
    for t in soak.threads:
        t.join(timeout=120)
    if popen.returncode != 0:
        raise HarnessError(f"the soak load generator failed (exit {popen.returncode}):\n"
                           + (soak.workdir / "soak-load.stderr.log").read_text()[-2000:])
    run.load = json.loads(out.read_text())


def settle_fds(soak: Soak, run: Run, seconds: float = 3.0) -> dict[str, int]:
    """The gateway's fds once the clients are gone (sockets take a moment to close)."""
    time.sleep(seconds)
    return classify_fds(soak.procs["gateway"].pid, run.ports)


def websocket_gauge(run: Run) -> float | None:
    """`gateway_websocket_connections` (all routes) from the admin listener, None when unreadable."""
    try:
        status, _, body = http_get(run.ports["admin"], "/-/metrics", timeout=5)
    except OSError:
        return None
    return parse_gauge(body.decode(errors="replace")) if status == 200 else None


def finish(soak: Soak, run: Run, ws_token: str) -> None:
    """SIGTERM the gateway with one WebSocket open (exit code wanted: 0; the socket: 1001 after
    the drain), read its logs and the targets' records."""
    gw = soak.procs["gateway"]
    probe = ShutdownProbe(run.ports["gateway"], "/ws", ws_token)
    opened = probe.open()
    if opened:
        time.sleep(0.5)  # a couple of echoes before the signal
        print(f"SIGTERM with one WebSocket open: it should get 1001 after drain_seconds ({DRAIN_SECONDS} s)",
              flush=True)
    probe.sigterm_at = time.monotonic()
    soak.signal("gateway", signal.SIGTERM)
    try:
        run.gateway_exit = gw.popen.wait(timeout=30 + DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        run.gateway_exit = None
    run.ws_shutdown = probe.wait(5)
    with open(soak.access_log, "rb") as f:
        run.access_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    text = (soak.workdir / "gateway.stderr.log").read_text(errors="replace")
    for line in text.splitlines():
        try:
            level = json.loads(line).get("level", "?")
        except ValueError:
            level = "text"
        run.gateway_stderr[level] = run.gateway_stderr.get(level, 0) + 1
    run.tracebacks = [chunk[:800] for chunk in text.split("Traceback (most recent call last)")[1:]]
    for name in ("t1", "t2", "t3"):
        path = soak.workdir / f"posts-{name}.log"
        if path.exists():
            for line in path.read_text().splitlines():
                soak_id, _, target = line.partition(" ")
                run.post_records.setdefault(soak_id, []).append(target)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Soak and chaos run of the gateway (127.0.0.1 only, bounded).")
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")),
                   help="length of the loaded phase (default: SOAK_SECONDS or 600)")
    p.add_argument("--share", type=float, default=float(os.environ.get("SOAK_SHARE", str(LOAD_SHARE))),
                   help="load as a share of the calibrated maximum (default: SOAK_SHARE or 0.8)")
    p.add_argument("--keep", action="store_true", default=os.environ.get("SOAK_KEEP") == "1",
                   help="keep the temp dir with every log (also SOAK_KEEP=1)")
    a = p.parse_args(argv)
    if not 0 < a.share <= 1.5:
        p.error("--share / SOAK_SHARE must be in (0, 1.5]")
    if a.seconds < 30:
        p.error("--seconds / SOAK_SECONDS must be at least 30 (every fault needs room)")
    return a


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
    from soak_report import evaluate, write_report

    run = Run(seconds=a.seconds, started=dt.datetime.now(), share=a.share)
    workdir: Path | None = None
    soak: Soak | None = None
    failed = True
    try:
        ensure_python()
        workdir = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
        names = ["gateway", "admin", "redis", "t1", "t2", "t3"]
        run.ports = dict(zip(names, free_ports(len(names)), strict=True))
        run.machine = machine_info(shutil.which("nginx") or "nginx", shutil.which("wrk") or "wrk")
        run.loadavg.append(loadavg())
        print(f"soak: {a.seconds:g}s loaded phase (plus ~{max(5.0, min(15.0, a.seconds / 40)) + 15:.0f}s of "
              f"start-up and calibration); 127.0.0.1 ports {run.ports}; load average {run.loadavg[0]}", flush=True)
        print(f"schedule (seconds into the loaded phase; reloads every {reload_interval(a.seconds):g}s):",
              flush=True)
        for e in schedule(a.seconds):
            extra = f" for {e.duration:g}s" if e.duration else ""
            print(f"  {e.at:7.1f}  {e.label}{extra}", flush=True)
        soak = Soak(run, workdir)
        soak.start_redis()
        for name in ("t1", "t2", "t3"):
            soak.start_target(name)
        soak.start_gateway()
        ttl = int(a.seconds) + 3600
        tokens = [_mint(soak.secret, f"user-{n}", ttl) for n in range(8)]
        limited_token = _mint(soak.secret, "limited-user", ttl)
        ws_token = _mint(soak.secret, "ws-user", ttl)
        calibrate(soak, run, tokens)
        run.baseline_fds = settle_fds(soak, run)
        print(f"baseline fds (after calibration, no clients): {run.baseline_fds}", flush=True)
        print(f"loaded phase: {run.rate:,.0f} req/s for {a.seconds:g}s", flush=True)
        soak_phase(soak, run, tokens, limited_token, ws_token)
        run.end_fds = settle_fds(soak, run)
        run.ws_gauge = websocket_gauge(run)
        run.loadavg.append(loadavg())
        finish(soak, run, ws_token)
        soak.ps.stop_all()
        verdicts = evaluate(run)
        write_report(run, verdicts, RESULTS_DIR, argv)
        failed = any(not v.ok for v in verdicts)
        return 1 if failed else 0
    except HarnessError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsoak: interrupted, stopping everything", file=sys.stderr)
        return 130
    finally:
        if soak is not None:
            soak.ps.stop_all()
        if workdir is not None:
            if a.keep or failed:
                print(f"soak: logs kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
