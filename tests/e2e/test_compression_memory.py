"""Bounded memory while compressing (SPEC §8, issue 17): a large compressible download through a
gateway process, gzip and br, decoded by the client to exactly the upstream's bytes, with the
gateway's peak RSS (VmHWM, reset before each run) growing by a few MiB at most.

``make test`` runs 256 MiB per encoding; the slow tier (``make test-slow``) runs 1 GiB
(``GW_COMPRESS_MEM_MIB=1024``). The figures print with ``-s``.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.web import Application, RequestHandler

from tests.support.gateway_process import GatewayProcess
from tests.support.proc import status_kib

MiB = 1024 * 1024
SIZE = int(os.environ.get("GW_COMPRESS_MEM_MIB", "256")) * MiB
BLOCK = 64 * 1024
LIMIT = 8 * MiB  # "within a few MiB": one encoder's window and buffers, and the allocator's slack

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")


def base_text() -> bytes:
    """1 MiB of JSON-like text, compressible about 5:1 like real API answers, and longer than
    either encoder's window, so neither sees a block it already sent."""
    text = b"".join(b'{"id": %d, "name": "user %d", "email": "u%d@example.com", "score": %d},\n'
                    % (i, i * 7919 % 100_003, i * 2654435761 % 1_000_003, i * 40503 % 1009) for i in range(16_000))
    return text[:BASE_SIZE]


BASE_SIZE = 16 * BLOCK
BASE = base_text()


def blocks(total: int) -> Iterator[bytes]:
    for i in range(total // BLOCK):
        start = i * BLOCK % BASE_SIZE
        yield BASE[start:start + BLOCK]


def expected() -> tuple[int, int]:
    crc = 0
    for block in blocks(SIZE):
        crc = zlib.crc32(block, crc)
    return SIZE, crc


def upstream_app() -> Application:
    class Download(RequestHandler):
        async def get(self) -> None:
            size = int(self.get_argument("size", str(SIZE)))
            self.set_header("Content-Type", "application/json")
            self.set_header("Content-Length", str(size))
            for block in blocks(size):
                self.write(block)
                await self.flush()

    return Application([("/download", Download)])


class Decoded:
    """The client's side: decodes as bytes arrive, keeps only the length and CRC-32 of the output."""

    def __init__(self, coding: str) -> None:
        self._gzip = zlib.decompressobj(31) if coding == "gzip" else None
        self._br = brotli.Decompressor() if coding == "br" else None
        self.size = self.crc = self.received = 0

    def _out(self, data: bytes) -> None:
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._gzip is not None:
            self._out(self._gzip.decompress(data))
            return
        assert self._br is not None
        self._out(self._br.process(data))
        while more := self._br.process(b""):
            self._out(more)


@pytest.mark.timeout(seconds=300)
async def test_compressing_a_large_download_keeps_the_gateways_memory_flat(start_upstream: Any,
                                                                           tmp_path: Path) -> None:
    upstream = start_upstream(upstream_app())
    gateway = GatewayProcess(tmp_path / "gateway.yaml")
    gateway.write_config(f"""
        server: {{host: 127.0.0.1, port: 0, drain_seconds: 1}}
        admin: {{host: 127.0.0.1, port: 0}}
        logging: {{level: info, format: text, access_log: false}}
        compression: {{types: [application/json]}}
        upstreams:
          up: {{targets: ["{upstream.url}"], request_timeout: 60}}
        routes:
          - {{name: all, path: /, upstream: up}}
        """)
    client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=2 * SIZE)  # the default is 100 MiB
    want = expected()
    figures: list[str] = []
    try:
        await gateway.start()
        for coding in ("gzip", "br"):  # warm-up: every code path once, so the baseline holds them
            warm = await client.fetch(gateway.url + f"/download?size={4 * MiB}", headers={"Accept-Encoding": coding},
                                      decompress_response=False)
            assert warm.code == 200 and warm.headers["Content-Encoding"] == coding
        growths = {}
        for coding in ("gzip", "br"):
            decoded = Decoded(coding)
            with open(f"/proc/{gateway.pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            baseline = status_kib(gateway.pid, "VmRSS")
            started = time.monotonic()
            resp = await client.fetch(gateway.url + "/download", headers={"Accept-Encoding": coding},
                                      decompress_response=False, streaming_callback=decoded.feed,
                                      request_timeout=300)
            seconds = time.monotonic() - started
            peak = status_kib(gateway.pid, "VmHWM")
            assert resp.code == 200 and resp.headers["Content-Encoding"] == coding
            assert (decoded.size, decoded.crc) == want
            growths[coding] = (peak - baseline) * 1024
            figures.append(f"{coding}: {SIZE // MiB} MiB -> {decoded.received / MiB:.1f} MiB on the wire in "
                           f"{seconds:.1f} s; gateway RSS {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                           f"growth {growths[coding] / MiB:.2f} MiB")
        print("\n" + "\n".join(figures))
        assert all(growth < LIMIT for growth in growths.values()), figures
        assert gateway.proc is not None and gateway.proc.poll() is None
    finally:
        client.close()
        gateway.kill()
