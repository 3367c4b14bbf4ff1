"""The soak's WebSocket traffic class and its judgement (bench/soak.py, issue 19).

`WsTraffic` runs in the load generator (bench/soak_load.py) during the loaded phase only
(never during calibration): WS_SOCKETS long-lived sockets to the gateway's `websocket: true`
route `/ws`, relayed to the pool's echo handler (bench/soak_upstream.py); slot 0 goes to
`/ws/t1` and slot 1 to `/ws/t2` (routes to that target alone: PINNED), so the kill of t1 and
the 503 fault of t2 always meet an open socket, where the pool's round robin might put none
on them. Each socket sends a
small text message every WS_INTERVAL_S, naming its slot, its life (the n-th socket of that
slot) and a sequence number, and `EchoCheck` checks that the echoes come back exactly in
order. A socket lives `ws_lifetime()` (the first lives staggered by `first_lives()`, so the
reconnects spread out), then stops sending, waits for its last echo and closes itself with
1000: a planned reconnect, which also puts new sockets behind newer configs. A socket that
the other side closes (a killed target: the gateway's 1014; a target taken out of service:
its 1001, passed on) is counted by close code and its slot reconnects after WS_RETRY_S; a
refused handshake is retried after WS_RETRY_S. At the end of the phase every slot closes its
socket the planned way.

Cheap on purpose: Tornado's own `websocket_connect` on the generator's event loop, messages
taken by a plain callback, WS_SOCKETS / WS_INTERVAL_S messages per second in all.

`judge()` is the pure judgement soak_report turns into criteria: every echo back in order
and none lost except on a socket a fault closed; only faults close sockets (1014 from a
killed target's window, 1001 from a 503 target's, on a socket to that target), and each
target fault closes at least one; every
handshake outside the fault windows answered 101 and every slot ended on a socket of its
own closing; every reload crossed by open sockets that went on echoing after it, none
dropped; `gateway_websocket_connections` back to 0.

`ShutdownProbe` is one more socket, opened after the load (after the fds and the gauge were
read) and kept open across the gateway's SIGTERM, on a plain blocking socket in a thread: it
must go on echoing through the drain and then get the gateway's 1001 once `drain_seconds` is
over (SPEC §6); `judge_shutdown()` says whether it did.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from soak_config import reload_interval

__all__ = ["EchoCheck", "ShutdownProbe", "WS_INTERVAL_S", "WS_SOCKETS", "WsTraffic", "client_frame", "first_lives",
           "judge", "judge_shutdown", "message", "parse_gauge", "read_frame", "ws_lifetime"]

WS_SOCKETS = 8
WS_INTERVAL_S = 0.2  # per socket: 5 messages/s, 40/s for all (each crosses the relay twice)
WS_RETRY_S = 0.5  # after a fault's close or a refused handshake
WS_DRAIN_S = 5.0  # how long a planned close waits for the last echo
WS_SIZE = 64  # bytes per message
PINNED = {0: "t1", 1: "t2"}  # slot -> the target its route reaches alone (soak_config: /ws/<target>)
# Closes that a fault may cause, with the fault that explains each (soak_config labels).
FAULT_CLOSES = {1014: "SIGKILL target {target}", 1001: "target {target} answers 503"}
RELOAD_DROP_S = 2.0  # a peer's close this soon after a reload, outside a fault window, is a drop


def ws_lifetime(seconds: float) -> float:
    """How long a socket lives before its planned reconnect: 2.5 reload intervals, so
    each socket crosses two or three reloads (75 s on the default 10-minute run)."""
    return 2.5 * reload_interval(seconds)


def first_lives(n: int, lifetime: float) -> list[float]:
    """The first life of each of `n` slots: lifetime/n, 2 lifetime/n, ... lifetime, so the
    planned reconnects come one at a time, not all at once."""
    return [lifetime * (i + 1) / n for i in range(n)]


def slot_path(path: str, slot: int) -> str:
    """The route a slot's sockets use: `path` to the pool, `path/<target>` for a PINNED slot."""
    return f"{path}/{PINNED[slot]}" if slot in PINNED else path


def message(slot: int, life: int, seq: int) -> str:
    """The text a socket sends: its slot, life and sequence number, padded to WS_SIZE."""
    head = f"{slot}.{life}.{seq}."
    return head + "w" * max(0, WS_SIZE - len(head))


@dataclass
class EchoCheck:
    """The echoes of one socket, checked against what it sent: each must be the next one."""

    slot: int
    life: int
    sent: int = 0
    expected: int = 0  # the sequence number the next echo must carry
    echoed: int = 0  # echoes that came in order
    mismatches: int = 0  # echoes that were not the next one (lost before it, reordered, doubled, altered)
    first_mismatch: str = ""

    def next_message(self) -> str:
        text = message(self.slot, self.life, self.sent)
        self.sent += 1
        return text

    def feed(self, echo: str | bytes) -> bool:
        """One echo; True when it was the next one expected. After a mismatch the check
        goes on from the sequence number the echo carries, so one fault counts once."""
        if self.expected < self.sent and echo == message(self.slot, self.life, self.expected):
            self.expected += 1
            self.echoed += 1
            return True
        self.mismatches += 1
        if not self.first_mismatch:
            self.first_mismatch = f"expected #{self.expected}, got {echo[:40]!r}"
        parts = echo.split(".") if isinstance(echo, str) else []
        if len(parts) > 2 and parts[2].isdigit():
            self.expected = int(parts[2]) + 1
        return False

    @property
    def waiting(self) -> bool:
        """Whether an echo is still due."""
        return self.expected < self.sent


@dataclass
class Socket:
    """One socket's life, as the result file carries it."""

    check: EchoCheck
    opened: float = 0.0  # wall clock, the 101
    closed: float = 0.0
    generation: str = ""  # the config generation that admitted it (X-Soak-Generation of its 101)
    target: str = ""  # X-Soak-Target of its 101
    code: int = 0  # the close code it received (1006: none, the connection dropped)
    reason: str = ""
    by: str = ""  # "client": a planned reconnect; "end": closed at the end; "peer": the other side
    last_echo: float = 0.0
    per_second: dict[int, int] = field(default_factory=dict)  # echoes in order, by second of the run (shared)
    started: float = 0.0  # wall clock the seconds count from
    conn: Any = None  # the WebSocketClientConnection while open
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, msg: str | bytes | None) -> None:
        if msg is None:
            self.done.set()
            return
        if self.check.feed(msg):
            self.last_echo = now = time.time()
            sec = int(now - self.started)
            self.per_second[sec] = self.per_second.get(sec, 0) + 1

    def record(self) -> dict[str, Any]:
        c = self.check
        return {"slot": c.slot, "life": c.life, "opened": round(self.opened, 4), "closed": round(self.closed, 4),
                "generation": self.generation, "target": self.target, "code": self.code, "reason": self.reason,
                "by": self.by, "sent": c.sent, "echoed": c.echoed, "mismatches": c.mismatches,
                "first_mismatch": c.first_mismatch, "last_echo": round(self.last_echo, 4)}


class WsTraffic:
    """The WebSocket class of the load: WS_SOCKETS slots, each a socket after another."""

    def __init__(self, port: int, path: str, token: str, seconds: float, started: float) -> None:
        self.base = f"ws://127.0.0.1:{port}"
        self.path = path
        self.token = token
        self.seconds = seconds
        self.started = started  # wall clock: the per-second echo counts are keyed on it
        self.lifetime = ws_lifetime(seconds)
        self.sockets: list[Socket] = []
        self.handshakes: list[list[Any]] = []  # [sent, done, outcome]: "101", "502 bad_gateway", ...
        self.per_second: dict[int, int] = {}

    async def run(self) -> None:
        end = time.monotonic() + self.seconds
        lives = first_lives(WS_SOCKETS, self.lifetime)
        await asyncio.gather(*(self.slot(i, lives[i], end) for i in range(WS_SOCKETS)))

    async def slot(self, i: int, first: float, end: float) -> None:
        life, span = 0, first
        while time.monotonic() < end:
            sock = await self.open(i, life)
            if sock is None:
                await asyncio.sleep(WS_RETRY_S)
                continue
            life += 1
            await self.live(sock, min(end, time.monotonic() + span), end)
            span = self.lifetime
            if sock.by == "peer":
                await asyncio.sleep(WS_RETRY_S)

    async def open(self, slot: int, life: int) -> Socket | None:
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.websocket import websocket_connect

        sock = Socket(EchoCheck(slot, life), per_second=self.per_second, started=self.started)
        sent = time.time()
        request = HTTPRequest(self.base + slot_path(self.path, slot), headers={"Authorization": f"Bearer {self.token}"},
                              connect_timeout=5, request_timeout=10)
        try:
            conn = await websocket_connect(request, on_message_callback=sock.on_message, ping_interval=None)
        except HTTPClientError as exc:
            body = exc.response.body if exc.response is not None else b""
            try:
                code = json.loads(body).get("error", "") if body else ""
            except (ValueError, AttributeError):
                code = "non-json"
            outcome = f"{exc.code} {code}".strip() if exc.code != 599 else f"failed: {exc.message}"
            self.handshakes.append([sent, time.time(), outcome])
            return None
        except Exception as exc:  # noqa: BLE001 - refused, reset: each is an outcome to count
            self.handshakes.append([sent, time.time(), f"failed: {type(exc).__name__}"])
            return None
        sock.opened = time.time()
        self.handshakes.append([sent, sock.opened, "101"])
        sock.generation = conn.headers.get("X-Soak-Generation", "") if conn.headers is not None else ""
        sock.target = conn.headers.get("X-Soak-Target", "") if conn.headers is not None else ""
        sock.conn = conn
        self.sockets.append(sock)
        return sock

    async def live(self, sock: Socket, stop_at: float, end: float) -> None:
        """Send until `stop_at` or until the other side closes; then the planned close."""
        from tornado.iostream import StreamClosedError
        from tornado.websocket import WebSocketClosedError

        conn = sock.conn
        nxt = time.monotonic()
        while not sock.done.is_set() and time.monotonic() < stop_at:
            try:
                await conn.write_message(sock.check.next_message())
            except (WebSocketClosedError, StreamClosedError):
                break
            nxt += WS_INTERVAL_S
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        if not sock.done.is_set():
            deadline = time.monotonic() + WS_DRAIN_S
            while sock.check.waiting and not sock.done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        if sock.done.is_set():
            sock.by = "peer"
        else:
            sock.by = "end" if time.monotonic() >= end else "client"
            conn.close(1000, "soak reconnect")
            try:
                await asyncio.wait_for(sock.done.wait(), WS_DRAIN_S)
            except asyncio.TimeoutError:
                pass
        sock.closed = time.time()
        sock.code = conn.close_code if conn.close_code is not None else 1006
        sock.reason = conn.close_reason or ""
        sock.conn = None

    def result(self) -> dict[str, Any]:
        return {"sockets": [s.record() for s in self.sockets], "handshakes": self.handshakes,
                "lifetime": self.lifetime, "slots": WS_SOCKETS, "interval": WS_INTERVAL_S,
                "echo_per_second": sorted(self.per_second.items())}


def parse_gauge(metrics: str, name: str = "gateway_websocket_connections") -> float | None:
    """The sum of a gauge over its labels in Prometheus text, None when it is not there."""
    total, seen = 0.0, False
    for line in metrics.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def _window(wins: list[Any], at0: float, at1: float) -> Any:
    return next((w for w in wins if at0 <= w.end and at1 >= w.start), None)


def judge(ws: dict[str, Any], wins: list[Any], reloads: list[float], gauge: float | None,
          t0: float) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) per WebSocket criterion. `ws`: WsTraffic.result(); `wins`:
    soak_config.windows() (start, end wall clock, name); `reloads`: wall-clock times of
    every reload; `gauge`: gateway_websocket_connections after the load."""
    socks = ws.get("sockets", [])
    out: list[tuple[str, bool, str]] = []

    # 1. Echoes: in order always; complete unless a fault closed the socket.
    sent = sum(s["sent"] for s in socks)
    echoed = sum(s["echoed"] for s in socks)
    disorder = [s for s in socks if s["mismatches"]]
    short = [s for s in socks if s["by"] != "peer" and s["echoed"] != s["sent"]]
    at_fault = sum(s["sent"] - s["echoed"] for s in socks if s["by"] == "peer")
    ok = bool(socks) and echoed > 0 and not disorder and not short
    out.append(("WebSocket: every echo back in order, none lost but on a socket a fault closed", ok,
                f"{len(socks)} sockets, {sent:,} messages sent, {echoed:,} echoed in order; "
                f"{at_fault} unanswered on sockets a fault closed; {len(disorder)} sockets out of order, "
                f"{len(short)} closed by the client short of echoes"
                + (f": {[_who(s) + ' ' + s['first_mismatch'] for s in disorder[:3]]}" if disorder else "")
                + (f"; {[_who(s) + ' ' + str(s['echoed']) + '/' + str(s['sent']) for s in short[:3]]}"
                   if short else "")))

    # 2. Closes: by us, or by a fault (its code, its window, its target); handshakes 101 outside windows.
    unexplained = []
    for s in socks:
        if s["by"] != "peer":
            if s["code"] != 1000:
                unexplained.append(f"{_who(s)} closed by us, answered {s['code']}")
            continue
        w = _window(wins, s["closed"], s["closed"])
        want = FAULT_CLOSES.get(s["code"], "").format(target=s["target"])
        if w is None or w.name != want:
            unexplained.append(f"{_who(s)} to {s['target']} closed {s['code']} {s['reason']!r} at "
                               f"{s['closed'] - t0:.1f}s ({'in ' + w.name if w else 'outside the fault windows'})")
    refused_outside = [f"{h[2]} at {h[0] - t0:.1f}s" for h in ws.get("handshakes", [])
                       if h[2] != "101" and _window(wins, h[0], h[1]) is None]
    met = {w.name for s in socks if s["by"] == "peer"
           for w in [_window(wins, s["closed"], s["closed"])] if w is not None}
    unmet = [w.name for w in wins if w.name.startswith("SIGKILL target") or w.name.endswith("answers 503")
             if w.name not in met]
    slots = ws.get("slots", 0)
    last: dict[int, dict[str, Any]] = {}
    for s in socks:
        if s["slot"] not in last or s["life"] > last[s["slot"]]["life"]:
            last[s["slot"]] = s
    missing = sorted(i for i in range(slots) if i not in last or last[i]["by"] == "peer")
    ok = not unexplained and not refused_outside and not missing and not unmet
    out.append(("WebSocket: only faults close sockets (1014/1001 in their window), every slot reconnects", ok,
                f"closes by code: {_fmt(close_counts(socks))}; handshakes: {_fmt(handshake_counts(ws))}; "
                f"{len(unexplained)} closes unexplained, {len(refused_outside)} handshakes refused outside the "
                f"fault windows, {slots - len(missing)}/{slots} slots ended on a socket closed by us"
                + (f": {unexplained[:3]}" if unexplained else "")
                + (f"; {refused_outside[:3]}" if refused_outside else "")
                + (f"; slots whose last socket a fault closed: {missing}" if missing else "")
                + (f"; target faults that closed no socket: {unmet}" if unmet else "")))

    # 3. Reloads: each crossed by sockets that went on echoing after it; none dropped at one.
    crossed, dropped = [], []
    for r in reloads:
        crossed.append(sum(1 for s in socks if s["opened"] < r and s["last_echo"] > r + 0.5))
        dropped += [f"{_who(s)} {s['code']} at {s['closed'] - t0:.1f}s" for s in socks
                    if s["by"] == "peer" and r < s["closed"] <= r + RELOAD_DROP_S
                    and _window(wins, s["closed"], s["closed"]) is None]
    gens = {s["generation"] for s in socks}
    ok = bool(reloads) and min(crossed, default=0) > 0 and not dropped
    out.append(("WebSocket: open sockets survive every reload", ok,
                f"{len(reloads)} reloads, each crossed by {min(crossed, default=0)}-{max(crossed, default=0)} "
                f"open sockets still echoing after it (sockets admitted under {len(gens)} config generations); "
                f"{len(dropped)} dropped at a reload" + (f": {dropped[:3]}" if dropped else "")))

    # 4. The gauge.
    out.append(("WebSocket: gateway_websocket_connections back to 0", gauge == 0,
                 "not found in /-/metrics" if gauge is None else f"{gauge:g} after the load"))
    return out


def close_counts(socks: list[dict[str, Any]]) -> dict[str, int]:
    """Closes by code, ours (a planned reconnect, the end) apart from the other side's."""
    counts: dict[str, int] = {}
    for s in socks:
        key = f"{s['code']} (ours)" if s["by"] != "peer" else str(s["code"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def handshake_counts(ws: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for h in ws.get("handshakes", []):
        counts[h[2]] = counts.get(h[2], 0) + 1
    return counts


def _who(s: dict[str, Any]) -> str:
    return f"socket {s['slot']}.{s['life']}"


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{n:,}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


# --- the shutdown probe: a raw RFC 6455 client on a blocking socket ---


def client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One final client frame (RFC 6455 §5.2), masked with the 4-byte `key`."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def read_frame(recv_exact: Callable[[int], bytes]) -> tuple[int, bytes]:
    """(opcode, payload) of the next frame a server sent (unmasked; a masked one is unmasked)."""
    b0, b1 = recv_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(8))[0]
    key = recv_exact(4) if b1 & 0x80 else b""
    payload = recv_exact(n) if n else b""
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


def close_payload(payload: bytes) -> tuple[int, str]:
    """A close frame's code and reason; 1005 (none given) for an empty one."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")


class ShutdownProbe:
    """One socket across the gateway's SIGTERM: a message every `interval` s, its echo read,
    until the gateway's close frame (or the end of the connection) comes."""

    def __init__(self, port: int, path: str, token: str, interval: float = 0.25) -> None:
        self.port, self.path, self.token, self.interval = port, path, token, interval
        self.status = ""  # the handshake's status line
        self.sent = self.echoed = self.echoed_after_sigterm = 0
        self.sigterm_at = 0.0  # monotonic, set by the caller right before the signal
        self.code, self.reason, self.closed_after_s = 0, "", -1.0
        self.error = ""
        self._sock: socket.socket | None = None
        self._buf = b""
        self._thread: threading.Thread | None = None

    def open(self) -> bool:
        """Connect and handshake; True on a 101 (else `status` / `error` say why)."""
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError as exc:
            self.error = f"connect: {exc}"
            return False
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Authorization: Bearer {self.token}\r\n\r\n").encode())
        try:
            while b"\r\n\r\n" not in self._buf:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                self._buf += chunk
        except OSError as exc:
            self.error = f"handshake: {exc}"
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        self.status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in self.status + " ":
            sock.close()
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="ws-shutdown-probe", daemon=True)
        self._thread.start()
        return True

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._sock is None:
                raise ConnectionError("not open")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _run(self) -> None:
        sock = self._sock
        if sock is None:
            return
        sock.settimeout(5)  # a frame that started arriving comes whole well within this
        nxt = time.monotonic()
        try:
            while True:
                if time.monotonic() >= nxt:
                    sock.sendall(client_frame(0x1, message(99, 0, self.sent).encode(), os.urandom(4)))
                    self.sent += 1
                    nxt += self.interval
                if not self._buf and not select.select([sock], [], [], max(0.0, nxt - time.monotonic()))[0]:
                    continue
                opcode, payload = read_frame(self._recv_exact)
                if opcode == 0x1 and payload.decode() == message(99, 0, self.echoed):
                    self.echoed += 1
                    self.echoed_after_sigterm += 1 if self.sigterm_at else 0
                elif opcode == 0x8:
                    self.code, self.reason = close_payload(payload)
                    self._closed()
                    try:
                        sock.sendall(client_frame(0x8, payload[:2], os.urandom(4)))
                    except OSError:
                        pass
                    return
                elif opcode == 0x9:
                    sock.sendall(client_frame(0xA, payload, os.urandom(4)))
        except (OSError, ConnectionError, ValueError) as exc:
            if not self.code:
                self.code, self.error = 1006, f"{type(exc).__name__}: {exc}"
                self._closed()
        finally:
            sock.close()

    def _closed(self) -> None:
        if self.sigterm_at:
            self.closed_after_s = time.monotonic() - self.sigterm_at

    def wait(self, timeout: float) -> dict[str, object]:
        """Wait for the end of the connection; what the probe saw."""
        if self._thread is not None:
            self._thread.join(timeout)
        return {"status": self.status, "error": self.error, "sent": self.sent, "echoed": self.echoed,
                "echoed_after_sigterm": self.echoed_after_sigterm, "code": self.code, "reason": self.reason,
                "closed_after_s": round(self.closed_after_s, 2)}


def judge_shutdown(probe: dict[str, object] | None, drain_seconds: float) -> tuple[str, bool, str]:
    """The probe kept echoing during the drain and got 1001 once drain_seconds was over."""
    name = "WebSocket: at SIGTERM an open socket goes on until the drain is over, then gets 1001"
    if not probe:
        return name, False, "no probe result"
    after = float(probe["closed_after_s"])  # type: ignore[arg-type]
    ok = (probe["code"] == 1001 and int(probe["echoed_after_sigterm"]) > 0  # type: ignore[call-overload]
          and drain_seconds - 1.0 <= after <= drain_seconds + 5.0)
    return name, ok, (f"handshake {probe['status']!r}; {probe['echoed']} echoes, {probe['echoed_after_sigterm']} "
                      f"after SIGTERM; close {probe['code']} {probe['reason']!r} {after:.1f} s after SIGTERM "
                      f"(drain_seconds {drain_seconds:g})" + (f"; {probe['error']}" if probe["error"] else ""))
