"""wrk runs: the command line, a hard time bound, and parsing wrk's text output."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["WrkResult", "parse_wrk", "run_wrk"]

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class WrkResult:
    """One wrk run. Latencies in milliseconds; `errors` = non-2xx/3xx + socket errors."""

    target: str
    size: str
    connections: int
    requests: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx_3xx: int
    socket_errors: int
    errors: int
    ok: bool
    note: str = ""
    round: int = 0  # which interleaved round (bench/run.py): ratios are also taken within a round
    cpu_us: float | None = None  # the target's process tree CPU per request over the run (/proc, user + system)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_wrk(text: str, target: str, size: str, connections: int) -> WrkResult:
    """Parse the output of `wrk --latency`; a run without a Requests/sec line is marked not ok."""
    pct = {m.group(1): float(m.group(2)) * _UNIT_MS[m.group(3)] for m in _PERCENTILE.finditer(text)}
    rps_m, total_m = _RPS.search(text), _TOTAL.search(text)
    sock_m, non_m = _SOCKET.search(text), _NON2XX.search(text)
    socket_errors = sum(int(g) for g in sock_m.groups()) if sock_m else 0
    non = int(non_m.group(1)) if non_m else 0
    ok = rps_m is not None and total_m is not None
    return WrkResult(
        target=target, size=size, connections=connections,
        requests=int(total_m.group(1)) if total_m else 0,
        rps=float(rps_m.group(1)) if rps_m else 0.0,
        p50_ms=pct.get("50"), p99_ms=pct.get("99"),
        non_2xx_3xx=non, socket_errors=socket_errors, errors=non + socket_errors,
        ok=ok, note="" if ok else "unparsable wrk output: " + text.strip()[-300:],
    )


def run_wrk(wrk: str, url: str, *, target: str, size: str, connections: int, threads: int, duration_s: int,
            headers: dict[str, str], pin: Sequence[str], timeout_s: float = 2.0) -> WrkResult:
    """Run wrk against `url` for `duration_s` seconds; it is killed if it overruns by 15 s."""
    argv = [*pin, wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration_s}s",
            f"--timeout={timeout_s:g}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=duration_s + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return WrkResult(target, size, connections, 0, 0.0, None, None, 0, 0, 0, False, "wrk overran")
    except BaseException:  # Ctrl-C / SIGTERM: kill and reap wrk, then let the harness stop the rest
        proc.kill()
        proc.wait()
        raise
    result = parse_wrk(output, target, size, connections)
    if proc.returncode != 0 and result.ok:
        result.note = f"wrk exited {proc.returncode}"
    return result
