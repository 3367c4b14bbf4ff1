"""Bounded memory (issue 2 §4): the gateway process's peak RSS across 256 MiB streamed bodies.

The gateway runs as a subprocess (``run.py serve``) so its memory is its own;
the upstream and the clients run in the test process. Before each scenario
the kernel's peak-RSS mark is reset (``echo 5 > /proc/PID/clear_refs``), so
each figure is that scenario's own peak (VmHWM) over the RSS it started from.
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler, stream_request_body

from tests.support.proc import status_kib

MiB = 1024 * 1024
SIZE = int(os.environ.get("GW_MEM_TEST_MIB", "256")) * MiB
BLOCK = 64 * 1024
LIMIT = 32 * MiB
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")


def blocks(total: int) -> Iterator[bytes]:
    base = os.urandom(BLOCK)
    for i in range(total // BLOCK):
        yield i.to_bytes(8, "big") + base[8:]


class Peak:
    """Peak RSS growth of one process over a scenario, from its VmHWM."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> Peak:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.baseline_kib = status_kib(self.pid, "VmRSS")
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kib = status_kib(self.pid, "VmHWM")
        self.seconds = time.monotonic() - self.started

    @property
    def growth_bytes(self) -> int:
        return (self.peak_kib - self.baseline_kib) * 1024

    def report(self, name: str) -> str:
        return (f"{name}: baseline RSS {self.baseline_kib / 1024:.1f} MiB, peak {self.peak_kib / 1024:.1f} MiB, "
                f"growth {self.growth_bytes / MiB:.1f} MiB, {SIZE // MiB} MiB in {self.seconds:.1f} s")


def upstream_app(received: list[tuple[int, str]]) -> Application:
    @stream_request_body
    class Upload(RequestHandler):
        def prepare(self) -> None:
            self.digest, self.size = hashlib.sha256(), 0

        def data_received(self, chunk: bytes) -> None:
            self.digest.update(chunk)
            self.size += len(chunk)

        def put(self) -> None:
            received.append((self.size, self.digest.hexdigest()))
            self.finish("stored")

    class Download(RequestHandler):
        async def get(self) -> None:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", str(SIZE))
            for block in blocks(SIZE):
                self.write(block)
                await self.flush()

    return Application([(r"/upload", Upload), (r"/download", Download)])


def free_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


@pytest.fixture
def upstream(io_loop) -> Iterator[tuple[str, list[tuple[int, str]]]]:  # type: ignore[no-untyped-def]
    """The upstream in this process; Tornado's default 100 MiB body limit lifted."""
    received: list[tuple[int, str]] = []
    sock, port = bind_unused_port()
    server = HTTPServer(upstream_app(received), max_body_size=4 * SIZE)
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{port}", received
    server.stop()
    io_loop.run_sync(server.close_all_connections)


@pytest.fixture
def gateway_process(upstream, tmp_path) -> Iterator[tuple[int, int, list[tuple[int, str]]]]:  # type: ignore[no-untyped-def]
    upstream_url, received = upstream
    port, admin_port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
server: {{host: 127.0.0.1, port: {port}, max_body_bytes: {2 * SIZE}, drain_seconds: 1}}
admin: {{host: 127.0.0.1, port: {admin_port}}}
upstreams:
  up: {{targets: ["{upstream_url}"], request_timeout: 30}}
routes:
  - {{name: all, path: /, upstream: up}}
logging: {{level: warning, format: text}}
""")
    stderr = open(tmp_path / "stderr.log", "w+")
    proc = subprocess.Popen([sys.executable, "run.py", "serve", "-c", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield proc.pid, port, received
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.seek(0)
        log = stderr.read()
        stderr.close()
        assert "Traceback" not in log, log


async def wait_ready(port: int, client: AsyncHTTPClient) -> None:
    for _ in range(200):
        try:
            resp = await client.fetch(f"http://127.0.0.1:{port}/-/health", raise_error=False)
            if resp.code == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not start")


async def slow_download(port: int) -> tuple[int, str]:
    """GET /download on a raw socket: read 64 KiB, stall ~3 s, then read the rest quickly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * BLOCK)
    writer.write(b"GET /download HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    digest, size = hashlib.sha256(), 0
    first = await reader.readexactly(BLOCK)
    digest.update(first)
    size += len(first)
    await asyncio.sleep(3)
    while chunk := await reader.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    writer.close()
    return size, digest.hexdigest()


@pytest.mark.timeout(seconds=90)
async def test_gateway_memory_stays_bounded_for_256_mib_bodies(gateway_process) -> None:
    pid, port, received = gateway_process
    base = f"http://127.0.0.1:{port}"
    client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=2 * SIZE)
    try:
        await wait_ready(port, client)
        figures: list[str] = []
        expected = hashlib.sha256()
        sent: list[bytes] = []

        # warm-up: a small exchange each way, so the baseline includes the code paths used
        await client.fetch(base + "/upload", method="PUT", body=b"x" * BLOCK)

        async def produce(write: Callable[[bytes], object]) -> None:
            for block in blocks(SIZE):
                expected.update(block)
                await write(block)  # type: ignore[misc]
            sent.append(b"done")

        with Peak(pid) as upload:
            resp = await client.fetch(base + "/upload", method="PUT", body_producer=produce, request_timeout=60)
        assert resp.code == 200 and sent
        assert received[-1] == (SIZE, expected.hexdigest())
        figures.append(upload.report(f"(a) {SIZE // MiB} MiB streamed upload (chunked)"))

        digest, size = hashlib.sha256(), 0

        def receive(chunk: bytes) -> None:
            nonlocal size
            digest.update(chunk)
            size += len(chunk)

        with Peak(pid) as download:
            resp = await client.fetch(base + "/download", streaming_callback=receive, request_timeout=60)
        assert resp.code == 200 and size == SIZE
        figures.append(download.report(f"(b) {SIZE // MiB} MiB download"))

        with Peak(pid) as slow:
            slow_size, _ = await slow_download(port)
        assert slow_size == SIZE
        figures.append(slow.report(f"(c) {SIZE // MiB} MiB download, client stalls 3 s after 64 KiB"))

        print("\ngateway peak RSS (VmHWM) growth, pid", pid)
        for line in figures:
            print("  " + line)
        for peak in (upload, download, slow):
            assert peak.growth_bytes < LIMIT, figures
    finally:
        client.close()
