"""validate_json on the wire (SPEC §4, issue 13 finding 7): bounded memory, no 500, early refusal.

The memory test runs the gateway as a child process (tests/support/gateway_process.py)
so its RSS is its own; the other tests run it in this process. The upstream records
what reached it, so "the upstream never sees it" is asserted, not assumed. Run with
``-s`` to see the memory and loop-stall figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.web import Application, RequestHandler

from gateway.jsonbody import MAX_DEPTH
from tests.support.gateway_process import GatewayProcess
from tests.support.proc import status_kib

MiB = 1024 * 1024
WIDE = b"[" + b",".join([b"{}"] * (10 * MiB // 3)) + b"]"  # 10 MiB of the densest small objects
LONG = b'{"file": "' + b"QUJD" * (10 * MiB // 4 - 4) + b'"}'  # one long string, as a base64 upload


class Recorder:
    """A real upstream that records the body of every request it receives (size and sha256)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []
        recorder = self

        class Handler(RequestHandler):
            def post(self) -> None:
                body = self.request.body
                recorder.seen.append((len(body), hashlib.sha256(body).hexdigest()))
                self.finish({"ok": True})

            put = post

        self.app = Application([(r".*", Handler)])


def digest(body: bytes) -> tuple[int, str]:
    return len(body), hashlib.sha256(body).hexdigest()


def config(url: str, port: int = 0, max_body_bytes: int = 16 * MiB) -> str:
    return f"""
    server: {{host: 127.0.0.1, port: {port}, max_body_bytes: {max_body_bytes}, drain_seconds: 1}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams: {{up: {{targets: ["{url}"], request_timeout: 30}}}}
    routes:
      - {{name: json, path: /json, upstream: up, validate_json: true}}
    """


async def probe_loop(url: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """GET /-/health back to back until ``stop``: each answer's latency bounds how long the
    gateway's event loop was held meanwhile."""
    client = SimpleAsyncHTTPClient(force_instance=True)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            resp = await client.fetch(url + "/-/health", raise_error=False)
            latencies.append(time.perf_counter() - started)
            assert resp.code == 200
    finally:
        client.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.timeout(seconds=60)
async def test_a_10_mib_json_body_costs_memory_proportional_to_it(start_upstream: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    upstream = start_upstream(recorder.app)
    gateway = GatewayProcess(tmp_path / "gateway.yaml")
    gateway.write_config(config(upstream.url))
    client = SimpleAsyncHTTPClient(force_instance=True)
    headers = {"Content-Type": "application/json"}
    try:
        await gateway.start()
        warm = await client.fetch(gateway.url + "/json", method="POST", body=b'[{}, {"a": [1]}]', headers=headers)
        assert warm.code == 200
        # (body, the most RSS growth it may cost, as a multiple of its size): the dense one is the
        # finding (json_decode: 27x); a long string costs about what json_decode cost (4x: the chunks,
        # the string joined whole for the parser and its str, then the replay buffer and the upstream write).
        for name, body, most in (("[{},{},...]", WIDE, 3), ('{"file": "<10 MiB>"}', LONG, 5)):
            with open(f"/proc/{gateway.pid}/clear_refs", "w") as f:
                f.write("5")  # VmHWM := the current RSS
            baseline_kib = status_kib(gateway.pid, "VmRSS")
            stop, latencies = asyncio.Event(), []  # type: ignore[var-annotated]
            probing = asyncio.ensure_future(probe_loop(gateway.url, stop, latencies))
            started = time.perf_counter()
            resp = await client.fetch(gateway.url + "/json", method="POST", body=body, headers=headers,
                                      request_timeout=30)
            seconds = time.perf_counter() - started
            stop.set()
            await probing
            growth = (status_kib(gateway.pid, "VmHWM") - baseline_kib) * 1024

            print(f"\n{name} through validate_json: gateway RSS growth {growth / MiB:.1f} MiB "
                  f"(baseline {baseline_kib / 1024:.1f} MiB), {seconds * 1000:.0f} ms; /-/health meanwhile: "
                  f"{len(latencies)} probes, slowest {max(latencies) * 1000:.1f} ms")
            assert resp.code == 200
            assert recorder.seen[-1] == digest(body)  # byte for byte
            assert growth < most * len(body), f"{name}: {growth / MiB:.1f} MiB"
        assert await gateway.stop() == 0
        assert not any("Traceback" in line for line in gateway.stderr), "".join(gateway.stderr)
    finally:
        client.close()
        gateway.kill()


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
], ids=["100000 [", "100000 balanced", "100000 objects", "one level too deep"])
async def test_deep_nesting_is_400_invalid_json_never_500(start_upstream, start_gateway, http, body) -> None:
    recorder = Recorder()
    gw = await start_gateway(config(start_upstream(recorder.app).url))
    resp = await http(gw.url + "/json", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert resp.code == 400
    assert json.loads(resp.body)["error"] == "invalid_json"
    assert json.loads(resp.body)["message"] == f"request body is not valid JSON: nested deeper than {MAX_DEPTH} levels"
    await asyncio.sleep(0.05)
    assert recorder.seen == []


async def test_nesting_up_to_the_limit_passes_byte_for_byte(start_upstream, start_gateway, http) -> None:
    recorder = Recorder()
    gw = await start_gateway(config(start_upstream(recorder.app).url))
    body = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    resp = await http(gw.url + "/json", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert resp.code == 200
    assert recorder.seen == [digest(body)]


async def test_a_malformed_prefix_is_refused_before_the_rest_of_the_body(start_upstream, start_gateway) -> None:
    recorder = Recorder()
    gw = await start_gateway(config(start_upstream(recorder.app).url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        # 8 MiB announced, 16 bytes sent: the answer comes without the other 8 MiB.
        writer.write(b"POST /json HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n{\"a\": [1, 2,]}  " % (8 * MiB))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if line)
        body = await reader.readexactly(int(headers["Content-Length"]))
        assert status_line == "HTTP/1.1 400 Bad Request"
        assert headers["Connection"] == "close"  # the rest of the body is not wanted
        assert json.loads(body)["error"] == "invalid_json"
        assert json.loads(body)["message"] == "request body is not valid JSON: malformed"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the gateway closes
    finally:
        writer.close()
    await asyncio.sleep(0.05)
    assert recorder.seen == []


async def test_a_valid_body_in_odd_chunks_passes_byte_for_byte(start_upstream, start_gateway) -> None:
    recorder = Recorder()
    gw = await start_gateway(config(start_upstream(recorder.app).url))
    body = '{"name": "Zoë 😀", "n": [1, 2.50, -0e3, 1e400, 123456789012345678901234567890], "s": "\\u00e9"}'.encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"POST /json HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 5):  # cuts through the multi-byte characters and tokens
            piece = body[start:start + 5]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.002)  # each piece its own data_received
        writer.write(b"0\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        writer.close()
    assert recorder.seen == [digest(body)]


@pytest.mark.parametrize("body, content_type, status", [
    (b"", "application/json", 200),  # no body: nothing to be malformed, as before
    (b"  ", "application/json", 400),  # only whitespace, as before
    (b"[NaN]", "application/json", 400),  # deliberate: json_decode let it through
    ('{"a": 1}'.encode("utf-16"), "application/json", 400),  # deliberate: UTF-8 only
    (b'{"a": 1, "a": 2}', "application/json", 200),  # duplicate keys, as before
    (b"[NaN]", "text/plain", 200),  # not a JSON media type: not checked
    (b"{} {}", "", 400),  # no Content-Type: checked
])
async def test_what_is_checked_end_to_end(start_upstream, start_gateway, http, body, content_type, status) -> None:
    recorder = Recorder()
    gw = await start_gateway(config(start_upstream(recorder.app).url))
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await http(gw.url + "/json", method="PUT", body=body, headers=headers)
    assert resp.code == status
    if status == 400:
        assert json.loads(resp.body)["error"] == "invalid_json"
        await asyncio.sleep(0.05)
        assert recorder.seen == []
    else:
        assert recorder.seen == [digest(body)]
