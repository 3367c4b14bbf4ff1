#!/usr/bin/env python3
"""`make bench-cache`: req/s of a cached gateway route beside the same route uncached and the backend direct.

Starts, each on a free 127.0.0.1 port: the nginx backend of `make bench` (/small JSON,
/large 64 KiB) and one gateway process with two JWT HS256 routes to it: `/api` (no cache)
and `/cached` (`cache: {ttl_seconds: 300}`, memory store, one entry per subject: every hit
still verifies the token and runs the route's steps). The gateway runs on CPU 0, wrk and the
backend on CPU 1 (`taskset`, as `make bench`). wrk rounds are interleaved (direct, uncached,
cached; again), both bodies, then prints one table of median req/s and p50/p99.

Bounded: rounds x 3 targets x 2 sizes x duration seconds (default 3 x 3 x 2 x 5 s, about
a minute and a half). Exit 0 with the table, 1 on a harness error; everything started is
stopped by PID on the way out.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import HarnessError, ensure_python, ensure_tools, loadavg, plan_cpus  # noqa: E402
from loadgen import WrkResult, run_wrk  # noqa: E402
from procs import ProcessSet, free_ports, http_get, pin_prefix, wait_http  # noqa: E402
from targets import LARGE_BODY, REPO_ROOT, SMALL_BODY, backend_nginx_conf, gateway_yaml, write_bodies  # noqa: E402

SIZES = {"small": SMALL_BODY, "large": LARGE_BODY}
CACHED_ROUTE = """  - name: cached
    path: /cached
    upstream: backend
    strip_prefix: true
    auth: required
    cache: {ttl_seconds: 300}
"""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    a = p.parse_args(argv)
    ensure_python()
    import jwt  # after ensure_python: the project's .venv has PyJWT

    ps = ProcessSet()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-cache-bench-"))
    workdir.chmod(0o755)
    try:
        nginx, wrk = ensure_tools()
        plan = plan_cpus(1)
        backend_port, port, admin_port = free_ports(3)
        www = workdir / "www"
        write_bodies(www)
        (workdir / "backend").mkdir()
        conf = workdir / "backend" / "nginx.conf"
        conf.write_text(backend_nginx_conf(workdir / "backend", backend_port, www, plan.backend_workers))
        backend = ps.start("backend", [*pin_prefix(plan.load_cpus), nginx, "-p", str(workdir / "backend"), "-c",
                                       str(conf), "-e", str(workdir / "backend" / "error.log")],
                           stderr=workdir / "backend.stderr")
        why = wait_http(backend, backend_port, "/small", {}, 10, SMALL_BODY)
        if why:
            raise HarnessError(f"backend nginx did not start: {why}")
        secret = secrets.token_urlsafe(32)
        yaml = gateway_yaml(port, admin_port, backend_port, secret, 1)
        yaml = yaml.replace("\nlogging:", "\n" + CACHED_ROUTE + "\nlogging:", 1)
        (workdir / "gateway.yaml").write_text(yaml)
        gateway = ps.start("gateway", [*pin_prefix(plan.proxy_cpus), sys.executable, "run.py", "serve", "-c",
                                       str(workdir / "gateway.yaml")],
                           cwd=REPO_ROOT, stdout=workdir / "access.log", stderr=workdir / "gateway.stderr")
        token = jwt.encode({"sub": "bench-user", "exp": 2_000_000_000}, secret, algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}"}
        for prefix in ("/api", "/cached"):
            why = wait_http(gateway, port, prefix + "/small", headers, 20, SMALL_BODY)
            if why:
                raise HarnessError(f"gateway {prefix}: {why}\n{gateway.stderr_tail()}")
        _, answer_headers, _ = http_get(port, "/cached/large", headers)
        _, answer_headers, body = http_get(port, "/cached/large", headers)
        if answer_headers.get("x-cache") != "HIT" or body != LARGE_BODY:
            raise HarnessError(f"/cached/large is not served from the cache: {answer_headers}")
        targets = [("backend direct", backend_port, ""), ("gateway uncached", port, "/api"),
                   ("gateway cached", port, "/cached")]
        print(f"cache bench: {a.rounds} rounds x {a.duration}s at c{a.connections}; {plan.note}", flush=True)
        before = loadavg()
        results: dict[tuple[str, str], list[WrkResult]] = {}
        for rnd in range(1, a.rounds + 1):
            for size in SIZES:
                for label, target_port, prefix in targets:
                    r = run_wrk(wrk, f"http://127.0.0.1:{target_port}{prefix}/{size}", target=label, size=size,
                                connections=a.connections, threads=plan.wrk_threads, duration_s=a.duration,
                                headers=headers, pin=pin_prefix(plan.load_cpus))
                    results.setdefault((label, size), []).append(r)
                    print(f"  round {rnd}  {label:<17} {size:<5} {r.rps:>10,.0f} req/s  errors {r.errors}",
                          flush=True)
        print(f"\nload average before / after: {before} / {loadavg()}")
        print(f"{'target':<17} {'size':<5} {'req/s (median)':>15} {'vs direct':>9} {'p50 ms':>8} {'p99 ms':>8} errors")
        for size in SIZES:
            direct = statistics.median(r.rps for r in results[("backend direct", size)])
            for label, _, _ in targets:
                runs = results[(label, size)]
                rps = statistics.median(r.rps for r in runs)
                p50 = statistics.median(r.p50_ms or 0.0 for r in runs)
                p99 = statistics.median(r.p99_ms or 0.0 for r in runs)
                print(f"{label:<17} {size:<5} {rps:>15,.0f} {rps / direct:>8.2f}x {p50:>8.2f} {p99:>8.2f} "
                      f"{sum(r.errors for r in runs)}")
        return 0
    except HarnessError as exc:
        print(f"cache bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        ps.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
