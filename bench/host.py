"""The host side of the bench: tools (nginx, wrk), the interpreter, CPU placement, machine facts."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from targets import REPO_ROOT

__all__ = ["HarnessError", "Plan", "busy_warning", "ensure_python", "ensure_tools", "loadavg",
           "machine_info", "plan_cpus"]


class HarnessError(Exception):
    """The bench itself cannot run (tools missing, backend down): exit 1."""


@dataclass
class Plan:
    """CPU placement: the proxy's CPUs, the load side's (wrk + backend), and what was decided."""

    proxy_cpus: list[int] | None
    load_cpus: list[int] | None
    wrk_threads: int
    backend_workers: int
    note: str


def ensure_python() -> None:
    """Re-run under the project's .venv when this interpreter lacks PyJWT (e.g. plain python3)."""
    try:
        import jwt  # noqa: F401
    except ImportError:
        venv_python = REPO_ROOT / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
            os.execv(str(venv_python), [str(venv_python), *sys.argv])
        raise HarnessError("PyJWT is missing: run `make bench` (it builds .venv)") from None


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name)
                                       if p.exists()), None)


def ensure_tools() -> tuple[str, str]:
    """Return the nginx and wrk paths, installing Debian's packages when missing."""
    missing = [name for name in ("nginx", "wrk") if find_binary(name) is None]
    if missing:
        print(f"installing {' '.join(missing)} from Debian's packages", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, timeout=180)
            subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                           timeout=240, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            raise HarnessError(f"could not install {' '.join(missing)}: {exc}") from exc
    nginx, wrk = find_binary("nginx"), find_binary("wrk")
    if nginx is None or wrk is None:
        raise HarnessError("nginx and wrk are required (apt-get install nginx wrk)")
    return nginx, wrk


def plan_cpus(gateway_processes: int) -> Plan:
    """Proxy on CPUs 0..N-1, wrk and the backend on the rest; unpinned when that cannot be done."""
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return Plan(None, None, 1, 1, "taskset missing: everything runs unpinned")
    if len(cpus) < gateway_processes + 1:
        return Plan(None, None, 1, 1, f"{len(cpus)} CPUs cannot give {gateway_processes} to the proxy "
                    "and one to wrk + backend: everything runs unpinned")
    proxy, load = cpus[:gateway_processes], cpus[gateway_processes:]
    threads = max(1, len(load) // 2)
    workers = max(1, len(load) - threads)
    return Plan(proxy, load, threads, workers,
                f"proxy on CPU {_cpus(proxy)}; wrk ({threads} thread(s)) and backend "
                f"({workers} worker(s)) on CPU {_cpus(load)}")


def _cpus(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def machine_info(nginx: str, wrk: str) -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return "?"
        return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "?"

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for mod, attr in (("tornado", "version"), ("jwt", "__version__"), ("aiohttp", "__version__")):
        try:
            versions[mod] = str(getattr(__import__(mod), attr, "?"))
        except ImportError:
            versions[mod] = "missing"
    return {"cpu": cpu, "cpus": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version(), **versions,
            "nginx": first_line([nginx, "-v"]).removeprefix("nginx version: "),
            "wrk": " ".join(first_line([wrk, "--version"]).split()[:2])}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def busy_warning() -> str | None:
    """A sentence when the machine is already loaded before the bench starts, else None."""
    try:
        one_minute = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    cpus = len(os.sched_getaffinity(0))
    if one_minute > 0.5 * cpus:
        return f"load average {one_minute:.2f} on {cpus} CPUs before starting: other work will skew the figures"
    return None
