"""A real ``redis-server`` for tests: started on a free loopback port, stopped by its PID.

:class:`RedisServer` runs one throwaway server (no persistence, its files in a
temporary directory) and can kill, pause, resume and restart it on the same
port, so tests can take Redis away from a running gateway. The ``redis_server``
and ``redis_url`` fixtures build on it; a test module opts in with
``pytest_plugins = ["tests.support.redis_server"]``.

A missing ``redis-server`` binary FAILS the test rather than skipping it: CI
must run the Redis tests (``make test`` installs the binary).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server", "redis_url"]

START_TIMEOUT_SECONDS = 10.0
MISSING_BINARY = (
    "redis-server is not installed: the Redis tests need it "
    "(`make test` installs it; or `apt-get install redis-server`)"
)


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` with its files under ``directory``."""

    def __init__(self, directory: Path, port: int | None = None, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(MISSING_BINARY)
        self.binary = found
        self.directory = directory
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server (again, on the same port) and return once it answers PING.
        Raises ``RuntimeError`` with its log when it exits or does not answer in time."""
        if self._process is not None:
            raise RuntimeError(f"redis-server already running as pid {self._process.pid}")
        self._starts += 1
        log_path = self.directory / f"redis-{self.port}-{self._starts}.log"
        with open(log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                    "--daemonize", "no",
                    "--logfile", "",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start:\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the server and reap it (SIGKILL after 5 s)."""
        self._signal_and_wait(signal.SIGTERM)

    def restart(self) -> None:
        """Kill and start again on the same port, with an empty data set."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung Redis)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def _signal_and_wait(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signum)
            os.kill(process.pid, signal.SIGCONT)  # a paused process must run to die of SIGTERM
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server of its own for one test; fails the test when the binary is missing."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING_BINARY, pytrace=False)
    server = RedisServer(tmp_path)
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server.port = free_port()  # someone took the free port before redis-server bound it
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the test's own redis-server."""
    return redis_server.url
