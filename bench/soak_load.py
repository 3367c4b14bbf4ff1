#!/usr/bin/env python3
"""The soak's load generator: an open-loop mix of requests, every one accounted for.

Run by bench/soak.py as its own process (so its CPU is measured apart from the gateway's)
with a JSON plan file; writes a JSON result file. Cheap on purpose, so it does not starve
the gateway on a small machine: uvloop, one `asyncio.Protocol` per keep-alive connection,
llhttp (httptools) parsing the answers, no HTTP client library, no per-header work beyond
`X-Request-Id` and `Connection`.

Two modes: `closed` (N workers, each sends its next request when the last is answered: the
calibration that finds the maximum) and `open` (a fixed rate, requests started on a 5 ms
tick whatever the answers do: the soak, so a slow gateway meets a growing queue, as with
real clients). Every request started ends as exactly one outcome:

- an answer: its status (gateway errors are JSON: `"502 bad_gateway"`; the targets' fault:
  `"503 target_fault"`);
- `cut`: the status line came, the body did not finish (the connection closed);
- `lost`: sent, and no status line ever came: the connection closed or reset before an
  answer, or nothing within `timeout_s`, or still in flight `timeout_s` after the end.

Each POST carries a unique `X-Soak-Id`; `post_ids` in the result pairs each with its outcome,
so the soak can match them against what the targets recorded (no POST may arrive twice).
The `limited` stream sends GETs at a fixed rate to a rate-limited route with one subject's
token; its (sent, answered, status) triples show whether the limit held. The `ws` plan entry
adds the WebSocket class (bench/soak_ws.py: a few long-lived echo sockets, apart from the
request mix and its rate); its sockets and handshakes come back under `ws`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import httptools

CHUNK_1K = b"p" * 1024
CHUNK_1M = b"P" * (1 << 20)


@dataclass(frozen=True)
class Kind:
    """One class of the traffic mix: method, path, body, and how fast the client reads."""

    name: str
    method: str
    path: str
    weight: float
    body: bytes = b""
    read_bytes_per_s: float = 0.0  # 0: as fast as it comes; else a slow reader
    expect_bytes: int = -1  # body length of a 200, -1: not checked


MIX: tuple[Kind, ...] = (
    Kind("get_1k", "GET", "/api/small", 0.52, expect_bytes=1024),
    Kind("post_1k", "POST", "/api/echo", 0.25, body=CHUNK_1K),
    Kind("aggregate", "GET", "/api/overview", 0.14),
    Kind("get_1m", "GET", "/api/big", 0.035, expect_bytes=1 << 20),
    Kind("post_1m", "POST", "/api/echo", 0.035, body=CHUNK_1M),
    Kind("slow_1m", "GET", "/api/big", 0.02, read_bytes_per_s=1 << 20, expect_bytes=1 << 20),
)


SLOW_KINDS = frozenset(k.name for k in MIX if k.read_bytes_per_s)


@dataclass
class Result:
    """What one request came to."""

    kind: str
    sent: float  # wall clock
    done: float = 0.0
    outcome: str = ""  # "200", "502 bad_gateway", "cut", "lost: ..."
    latency_ms: float = 0.0
    request_id: str = ""


class Conn(asyncio.Protocol):
    """One keep-alive connection to the gateway; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, int, bytes, str]] | None = None
        self.status = 0
        self.body_len = 0
        self.small_body = bytearray()
        self.request_id = ""
        self.incomplete = False
        self.closed = False
        self.keep_alive = True
        self.last_used = time.monotonic()
        self.read_rate = 0.0
        self.read_started = 0.0
        self.paused = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"unparsable answer: {exc}")
            if self.transport:
                self.transport.close()
            return
        if self.read_rate and self.waiter is not None and not self.paused:
            ahead = self.body_len / self.read_rate - (time.monotonic() - self.read_started)
            if ahead > 0.01 and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
                self.loop.call_later(ahead, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("reset" if exc else "closed")

    # -- httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low == b"x-request-id":
            self.request_id = value.decode("latin-1")
        elif low == b"x-gateway-completed" and value == b"false":
            self.incomplete = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.status >= 400 and len(self.small_body) < 4096:
            self.small_body += body[:4096]

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            rid = self.request_id + (" incomplete" if self.incomplete else "")
            waiter.set_result((self.status, self.body_len, bytes(self.small_body), rid))
        if not self.keep_alive and self.transport is not None:
            self.transport.close()

    # -- use
    def _fail(self, why: str) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            state = "cut" if self.status else f"lost: {why} before an answer"
            waiter.set_exception(ConnectionError(state))

    def send(self, head: bytes, body: bytes, read_rate: float) -> asyncio.Future[tuple[int, int, bytes, str]]:
        self.status = self.body_len = 0
        self.small_body.clear()
        self.request_id = ""
        self.incomplete = False
        self.read_rate = read_rate
        self.read_started = time.monotonic()
        self.waiter = self.loop.create_future()
        assert self.transport is not None  # noqa: S101 - bench code: a Conn is only used once connected
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.waiter


class Load:
    """The generator: connection pool, the mix, the accounting."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.port = int(plan["port"])
        self.tokens: list[str] = plan["tokens"]
        self.timeout_s = float(plan.get("timeout_s", 30))
        self.max_in_flight = int(plan.get("max_in_flight", 400))
        self.rng = random.Random(plan.get("seed", 19))
        self.idle: list[Conn] = []
        self.results: list[Result] = []
        self.limited: list[tuple[float, float, int]] = []
        self.post_ids: dict[str, str] = {}
        self.in_flight = 0
        self.not_sent = 0
        self.seq = 0
        self.run_id = plan.get("run_id", "soak")
        weights = [k.weight for k in MIX]
        total = sum(weights)
        self.cum: list[float] = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self.cum.append(acc)
        self.heads = {k.name: self._head(k) for k in MIX}

    def _head(self, k: Kind) -> bytes:
        lines = [f"{k.method} {k.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "User-Agent: soak"]
        if k.body:
            lines += ["Content-Type: application/octet-stream", f"Content-Length: {len(k.body)}"]
        return ("\r\n".join(lines) + "\r\n").encode()

    def pick(self) -> Kind:
        x = self.rng.random()
        for kind, edge in zip(MIX, self.cum, strict=True):
            if x < edge:
                return kind
        return MIX[-1]

    async def conn(self) -> Conn:
        now = time.monotonic()
        while self.idle:
            c = self.idle.pop()
            if not c.closed and now - c.last_used < 30:
                return c
            if c.transport is not None:
                c.transport.close()
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: Conn(loop), "127.0.0.1", self.port)
        return proto

    async def request(self, k: Kind, token: str, extra: str = "") -> Result:
        """Send one request of kind `k`; always returns its Result (never raises)."""
        res = Result(k.name, time.time())
        t0 = time.monotonic()
        self.in_flight += 1
        self.seq += 1
        soak_id = ""
        head = self.heads[k.name] + f"Authorization: Bearer {token}\r\n".encode()
        if k.method == "POST":
            soak_id = f"{self.run_id}-{self.seq}"
            head += f"X-Soak-Id: {soak_id}\r\n".encode()
        head += extra.encode() + b"\r\n"
        c: Conn | None = None
        try:
            try:
                c = await asyncio.wait_for(self.conn(), 5)
            except (OSError, asyncio.TimeoutError) as exc:
                res.outcome = f"connect failed: {type(exc).__name__}"
                return res
            fut = c.send(head, k.body, k.read_bytes_per_s)
            try:
                status, blen, small, rid = await asyncio.wait_for(fut, self.timeout_s)
            except asyncio.TimeoutError:
                res.outcome = f"lost: no answer within {self.timeout_s:g}s"
                if c.transport is not None:
                    c.transport.close()
                return res
            except ConnectionError as exc:
                res.outcome = str(exc)
                return res
            rid, _, incomplete = rid.partition(" ")
            res.request_id = rid
            res.outcome = str(status) if not incomplete else f"{status} aggregate incomplete"
            if status >= 400:
                try:
                    code = json.loads(small).get("error", "")
                except (ValueError, AttributeError):
                    code = "non-json"
                res.outcome = f"{status} {code}".strip()
            elif status == 200 and k.expect_bytes >= 0 and blen != k.expect_bytes:
                res.outcome = f"200 wrong length {blen}"
            if not c.closed and c.keep_alive:
                c.last_used = time.monotonic()
                self.idle.append(c)
            return res
        finally:
            self.in_flight -= 1
            res.done = time.time()
            res.latency_ms = (time.monotonic() - t0) * 1000
            if soak_id:
                self.post_ids[soak_id] = res.outcome
            self.results.append(res)

    def launch(self) -> None:
        if self.in_flight >= self.max_in_flight:
            self.not_sent += 1
            return
        k = self.pick()
        token = self.tokens[self.seq % len(self.tokens)]
        asyncio.ensure_future(self.request(k, token))

    async def open_loop(self, rate: float, seconds: float) -> None:
        start = time.monotonic()
        issued = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return
            due = int(rate * elapsed) - issued
            for _ in range(due):
                self.launch()
            issued += due
            await asyncio.sleep(0.005)

    async def closed_loop(self, workers: int, seconds: float) -> None:
        end = time.monotonic() + seconds

        async def worker(n: int) -> None:
            while time.monotonic() < end:
                await self.request(self.pick(), self.tokens[n % len(self.tokens)])

        await asyncio.gather(*(worker(n) for n in range(workers)))

    async def limited_stream(self, spec: dict[str, Any], seconds: float) -> None:
        """GETs at spec["rate"] per second to spec["path"] with spec["token"], on their own."""
        kind = Kind("limited", "GET", spec["path"], 0)
        self.heads["limited"] = self._head(kind)
        interval = 1.0 / float(spec["rate"])
        start = time.monotonic()
        n = 0
        tasks = []

        async def one() -> None:
            r = await self.request(kind, spec["token"])
            status = int(r.outcome.split()[0]) if r.outcome[:1].isdigit() else 0
            self.limited.append((r.sent, r.done, status))

        while time.monotonic() - start < seconds:
            tasks.append(asyncio.ensure_future(one()))
            n += 1
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        await asyncio.gather(*tasks)

    async def drain(self) -> None:
        """Wait for what is in flight, up to timeout_s (request() itself times out by then)."""
        deadline = time.monotonic() + self.timeout_s + 5
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in self.idle:
            if c.transport is not None:
                c.transport.close()
        self.idle.clear()

    async def run(self) -> dict[str, Any]:
        seconds = float(self.plan["seconds"])
        started = time.time()
        jobs = []
        if self.plan["mode"] == "closed":
            jobs.append(self.closed_loop(int(self.plan["workers"]), seconds))
        else:
            jobs.append(self.open_loop(float(self.plan["rate"]), seconds))
        if self.plan.get("limited"):
            jobs.append(self.limited_stream(self.plan["limited"], seconds))
        ws = None
        if self.plan.get("ws"):
            from soak_ws import WsTraffic

            spec = self.plan["ws"]
            ws = WsTraffic(self.port, spec["path"], spec["token"], seconds, started)
            jobs.append(ws.run())
        await asyncio.gather(*jobs)
        await self.drain()
        still = self.in_flight
        await asyncio.sleep(0.2)  # let the closes reach the gateway before the soak counts its fds
        return {
            "started": started, "ended": time.time(), "seconds": seconds, "mode": self.plan["mode"],
            "not_sent": self.not_sent, "still_in_flight": still,
            **summarize(self.results, started),
            "limited": self.limited,
            "post_ids": self.post_ids,
            **({"ws": ws.result()} if ws is not None else {}),
        }


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted `values`, nearest rank; 0 for none."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


def summarize(results: list[Result], started: float) -> dict[str, Any]:
    """Per second (of answer time): answers, 200s, p50/p99 (slow readers left out); every result that was not a 200
    in detail; counts by kind and outcome; p50/p99 per kind."""
    per_s: dict[int, list[float]] = {}
    ok_s: dict[int, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    lat_kind: dict[str, list[float]] = {}
    events = []
    for r in results:
        sec = int(r.done - started)
        lat_s = per_s.setdefault(sec, [])
        if r.kind not in SLOW_KINDS:  # a slow reader's latency is its own pace, not the gateway's
            lat_s.append(r.latency_ms)
        by_kind.setdefault(r.kind, {}).setdefault(r.outcome, 0)
        by_kind[r.kind][r.outcome] += 1
        if r.outcome == "200":
            ok_s[sec] = ok_s.get(sec, 0) + 1
            lat_kind.setdefault(r.kind, []).append(r.latency_ms)
        else:
            events.append([r.kind, round(r.sent, 4), round(r.done, 4), r.outcome, round(r.latency_ms, 1),
                           r.request_id])
    answered: dict[int, int] = {}
    for r in results:
        sec = int(r.done - started)
        answered[sec] = answered.get(sec, 0) + 1
    seconds = []
    for sec in sorted(per_s):
        lat = sorted(per_s[sec])
        seconds.append([sec, answered[sec], ok_s.get(sec, 0), round(_pct(lat, 0.5), 2), round(_pct(lat, 0.99), 2)])
    latency = {}
    for kind, lat in lat_kind.items():
        lat.sort()
        latency[kind] = [round(_pct(lat, 0.5), 2), round(_pct(lat, 0.99), 2)]
    return {"per_second": seconds, "events": events, "by_kind": by_kind, "latency_by_kind": latency,
            "requests": len(results)}


def main() -> int:
    plan = json.loads(open(sys.argv[1]).read())
    out = sys.argv[2]

    async def go() -> dict[str, Any]:
        return await Load(plan).run()

    try:
        import uvloop
    except ImportError:
        result = asyncio.run(go())
    else:
        result = uvloop.run(go())
    with open(out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
