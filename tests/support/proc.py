"""What /proc says of a process, for tests that bound a gateway's memory."""

from __future__ import annotations

__all__ = ["status_kib"]


def status_kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``...) of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")
