"""A real gateway in a child process (`run.py serve -c FILE`), for signals, workers and logs.

Its stdout (the access log) and stderr (operational logs) are collected line by
line by reader threads; the listening ports are read from the log lines
``gateway listening on HOST:PORT`` and ``admin listening on HOST:PORT``.
Waiting is done with ``await asyncio.sleep`` so the test's IOLoop (and the
upstreams on it) keep running.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """``run.py serve`` on ``config_path``; use :meth:`start`, then :meth:`stop` or :meth:`kill`."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = {**os.environ, **(env or {})}
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.readers: list[threading.Thread] = []
        self.port = 0
        self.admin_port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_config(self, text: str) -> None:
        self.config_path.write_text(textwrap.dedent(text))

    async def start(self, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve", "-c", str(self.config_path)],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.readers = [threading.Thread(target=_collect, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self.readers:
            reader.start()
        self.port = int((await self.wait_for_log(r"gateway listening on [^ ]+:(\d+)", timeout)).group(1))
        self.admin_port = int((await self.wait_for_log(r"admin listening on [^ ]+:(\d+)", timeout)).group(1))

    async def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> re.Match[str]:
        """The ``count``-th stderr line matching ``pattern`` (waits for it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        exited = False
        while True:
            matches = [m for m in map(regex.search, list(self.stderr)) if m]
            if len(matches) >= count:
                return matches[count - 1]
            if time.monotonic() > deadline or exited:
                raise AssertionError(f"no {count}x {pattern!r} in the gateway's stderr:\n" + "".join(self.stderr))
            if self.proc is not None and self.proc.poll() is not None:
                await self._read_to_the_end()  # then one more look: the readers lag behind the exit
                exited = True
                continue
            await asyncio.sleep(0.05)

    async def access_line(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The access-log entry (stdout) of ``request_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stdout):
                entry = json.loads(line)
                if entry["request_id"] == request_id:
                    return entry  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no access-log line for {request_id}:\n" + "".join(self.stdout))

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    async def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the gateway did not exit:\n" + "".join(self.stderr))
            await asyncio.sleep(0.02)
        await self._read_to_the_end()
        return self.proc.returncode

    async def _read_to_the_end(self, timeout: float = 5.0) -> None:
        """Once the process has exited: wait (a bounded while) until its output is collected whole,
        so that ``stdout``/``stderr`` hold its last lines."""
        deadline = time.monotonic() + timeout
        while any(reader.is_alive() for reader in self.readers) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float = 15.0) -> int:
        self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    def kill(self) -> None:
        """Teardown: whatever is left of the process group goes."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _collect(stream: IO[str] | None, lines: list[str]) -> None:
    if stream is None:
        return
    try:
        for line in stream:
            lines.append(line)
    except ValueError:  # closed at teardown
        pass

