"""The soak's hostile clients: a burst of malformed requests and a crowd of slow-header clients.

Each runs in a thread of bench/soak.py on plain blocking sockets to 127.0.0.1 and returns
counts by outcome. They are not part of the measured traffic: their answers are checked on
their own (a malformed request must get a 4xx or a closed connection, never a 5xx), and what
they do to everybody else shows in the main traffic's figures.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

__all__ = ["malformed_burst", "malformed_payloads", "slow_headers"]


def malformed_payloads(token: str) -> list[tuple[str, bytes, bytes]]:
    """(name, bytes sent, bytes sent after 0.2 s) per case; an empty tail means none."""
    auth = f"Authorization: Bearer {token}\r\n".encode()
    h = b"Host: 127.0.0.1\r\n"
    return [
        ("garbage request line", b"GARBAGE\r\n\r\n", b""),
        ("HTTP/9.9", b"GET /api/small HTTP/9.9\r\n" + h + b"\r\n", b""),
        ("NUL in target", b"GET /api/sm\x00all HTTP/1.1\r\n" + h + b"\r\n", b""),
        ("header line without colon", b"GET /api/small HTTP/1.1\r\n" + h + b"Broken header\r\n\r\n", b""),
        ("TE and CL", b"POST /api/echo HTTP/1.1\r\n" + h + auth
         + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", b""),
        ("TE xchunked", b"POST /api/echo HTTP/1.1\r\n" + h + auth + b"Transfer-Encoding: xchunked\r\n\r\n", b""),
        ("CL -1", b"POST /api/echo HTTP/1.1\r\n" + h + auth + b"Content-Length: -1\r\n\r\n", b""),
        ("two Host", b"GET /api/small HTTP/1.1\r\n" + h + h + auth + b"\r\n", b""),
        ("dot-dot-semicolon", b"GET /api/..;/admin HTTP/1.1\r\n" + h + auth + b"\r\n", b""),
        ("request line 9 KiB", b"GET /api/" + b"a" * 9216 + b" HTTP/1.1\r\n" + h + b"\r\n", b""),
        ("headers 70 KiB", b"GET /api/small HTTP/1.1\r\n" + h + b"X-Big: " + b"b" * 71680 + b"\r\n\r\n", b""),
        ("bad token", b"GET /api/small HTTP/1.1\r\n" + h + b"Authorization: Bearer not.a.token\r\n\r\n", b""),
        # Reach the upstream, then break: the upstream exchange is aborted, a client fault.
        ("chunked body broken midway", b"POST /api/echo HTTP/1.1\r\n" + h + auth
         + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"zz\r\nnope\r\n"),
        ("client leaves mid-body", b"POST /api/echo HTTP/1.1\r\n" + h + auth
         + b"Content-Length: 100000\r\n\r\n" + b"x" * 1000, b"LEAVE"),
        ("client leaves mid-head", b"GET /api/small HTTP/1.1\r\nHo", b"LEAVE"),
    ]


def _status(sock: socket.socket, timeout: float) -> str:
    """The answer's status code, or what happened instead."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed without an answer" if not data else "garbled answer"
            data += chunk
    except TimeoutError:
        return "no answer in time"
    except OSError:
        return "reset without an answer"
    parts = data.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 else "garbled answer"


def malformed_burst(port: int, token: str, seconds: float, senders: int = 4) -> dict[str, dict[str, int]]:
    """Send the malformed cases from `senders` threads for `seconds`, each case at least twice;
    per case, the count of each outcome (status code, or how the connection ended)."""
    cases = malformed_payloads(token)
    out: dict[str, dict[str, int]] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def sender(offset: int) -> None:
        n = 0
        while time.monotonic() < end or n < 2 * len(cases) // senders + 1:
            name, first, then = cases[(offset + n) % len(cases)]
            n += 1
            outcome = _one(port, first, then)
            with lock:
                bucket = out.setdefault(name, {})
                bucket[outcome] = bucket.get(outcome, 0) + 1

    threads = [threading.Thread(target=sender, args=(k * len(cases) // senders,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _one(port: int, first: bytes, then: bytes) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            try:
                s.sendall(first)
                if then == b"LEAVE":
                    time.sleep(0.1)
                    return "client left"
                if then:
                    time.sleep(0.2)
                    s.sendall(then)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return _status(s, 5.0)
    except OSError as exc:
        return f"connect failed: {type(exc).__name__}"


def slow_headers(port: int, clients: int, seconds: float, step_s: float = 1.0) -> dict[str, float]:
    """`clients` connections that send a request head one short header line per `step_s`,
    never finishing it, for `seconds`; then close whatever is still open. Returns how many
    the gateway closed first, and after how long (median, seconds)."""
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    closed_after: list[float] = []
    for _ in range(clients):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
        except OSError:
            continue
        s.sendall(b"GET /api/small HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.setblocking(False)
        opened[s] = time.monotonic()
        sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    next_step = start + step_s
    n = 0
    while opened and time.monotonic() - start < seconds:
        for key, _ in sel.select(timeout=max(0.0, next_step - time.monotonic())):
            s = key.fileobj  # type: ignore[assignment]
            try:
                s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                pass
            # Readable means an answer (a 4xx) or a close: either way the gateway gave up on it.
            closed_after.append(time.monotonic() - opened.pop(s))
            sel.unregister(s)
            s.close()
        if time.monotonic() >= next_step:
            next_step += step_s
            n += 1
            for s in list(opened):
                try:
                    s.send(f"X-Slow-{n}: {n}\r\n".encode())
                except OSError:
                    pass
    still = len(opened)
    for s in opened:
        sel.unregister(s)
        s.close()
    sel.close()
    closed_after.sort()
    return {"clients": float(len(opened) + len(closed_after)), "closed_by_gateway": float(len(closed_after)),
            "closed_after_median_s": closed_after[len(closed_after) // 2] if closed_after else 0.0,
            "still_open_at_end": float(still)}
