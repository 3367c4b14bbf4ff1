"""Processes the bench starts: free ports, CPU pinning, readiness, peak RSS, and stopping.

Everything started goes through `ProcessSet.start()`, which records the PID (and its start
time, so a recycled PID is never signalled) and later stops it and every descendant it
forked, by PID: SIGTERM first, SIGKILL after a grace period.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Proc", "ProcessSet", "free_ports", "http_get", "pin_prefix", "tree_peak_rss_kib", "wait_http"]


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pin_prefix(cpus: Sequence[int] | None) -> list[str]:
    """Return the `taskset -c ...` argv prefix for `cpus`, or [] to run unpinned."""
    if not cpus or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in cpus)]


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """GET http://127.0.0.1:port/path; return (status, headers lower-cased, body). Raises OSError."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, found by scanning /proc for parent links."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def wait_port(port: int, seconds: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`; raise RuntimeError after
    `seconds`, or at once when `proc` (the process meant to listen there) has exited."""
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:g}s") from None
            time.sleep(0.05)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and each live descendant so far (/proc/PID/stat)."""
    ticks = 0
    for p in [pid, *_descendants(pid)]:
        fields = _stat_fields(p)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_peak_rss_kib(pid: int) -> dict[int, int]:
    """VmHWM (KiB) of `pid` and each live descendant, keyed by PID."""
    return {p: _vm_hwm_kib(p) for p in [pid, *_descendants(pid)]}


@dataclass
class Proc:
    """One started process: its name, argv, log files and the peak RSS seen per PID of its tree."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    start_time: str | None
    stderr_path: Path
    peak_kib: dict[int, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sample_rss(self) -> None:
        """Record VmHWM for the process tree; each PID keeps its highest value seen."""
        if not self.alive():
            return
        for pid, kib in tree_peak_rss_kib(self.pid).items():
            self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), kib)

    def peak_rss_mib(self) -> float:
        """Sum of per-process peaks over the tree (shared copy-on-write pages counted per process)."""
        return sum(self.peak_kib.values()) / 1024.0

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessSet:
    """Starts processes and stops all of them (and their descendants) by PID."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], *, cwd: Path | None = None,
              stdout: Path | None = None, stderr: Path, env: dict[str, str] | None = None) -> Proc:
        """Start `argv` in its own session (so a terminal Ctrl-C reaches only the harness)."""
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL
        err = open(stderr, "wb")
        try:
            popen = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=env, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
            err.close()
        proc = Proc(name, argv, popen, _start_time(popen.pid), stderr)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_seconds: float = 5.0) -> None:
        """SIGTERM the process and its descendants, SIGKILL whatever is left after the grace."""
        if proc.start_time is None or _start_time(proc.pid) != proc.start_time:
            proc.popen.poll()
            return
        tree = [(p, _start_time(p)) for p in [proc.pid, *_descendants(proc.pid)]]
        self._signal(tree, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            proc.popen.poll()
            if all(_start_time(p) != st for p, st in tree):
                break
            time.sleep(0.05)
        self._signal(tree, signal.SIGKILL)
        try:
            proc.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        """Stop every process started, newest first."""
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    @staticmethod
    def _signal(tree: list[tuple[int, str | None]], sig: signal.Signals) -> None:
        for pid, started in tree:
            # Only a process that is still the one we saw (same start time) is signalled.
            if started is not None and _start_time(pid) == started:
                fields = _stat_fields(pid)
                if fields and fields[0] == "Z":
                    continue
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass


def wait_http(proc: Proc, port: int, path: str, headers: dict[str, str], timeout_seconds: float,
              expect_body: bytes | None = None) -> str | None:
    """Poll GET `path` until it answers 200 (and `expect_body` when given).

    Returns None when ready, else a sentence saying why not (process exited, last status, timeout).
    """
    deadline = time.monotonic() + timeout_seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            return f"exited with code {proc.popen.returncode}"
        try:
            status, _, body = http_get(port, path, headers)
        except OSError as exc:
            last = f"connect: {exc}"
        else:
            if status == 200 and (expect_body is None or body == expect_body):
                return None
            last = f"GET {path} -> {status} {body[:200]!r}"
        time.sleep(0.1)
    return f"not ready after {timeout_seconds:.0f}s ({last})"
