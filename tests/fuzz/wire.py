"""The fuzz tier's test bench: one gateway in front of a recording upstream, on a thread of their own.

:class:`Bench` runs a :class:`~gateway.server.GatewayServer` and a recording
Tornado upstream on an asyncio loop in a background thread, so Hypothesis can
send hundreds of cases from the test thread over blocking raw sockets without a
new server per case. The upstream stamps every answer ``X-Upstream: recorder``
(the mark of a relayed answer) and records each request it receives with its
X-Request-Id and header names. Log records at ERROR and above, from any logger,
are collected (a gateway bug logs one, with its traceback).

:func:`exchange` writes raw bytes and parses one answer; :meth:`Bench.check`
asserts the properties every case must keep (see its docstring).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler, stream_request_body

from gateway.loader import parse_config
from gateway.server import GatewayServer

ANSWER_TIMEOUT = 5.0
JWT_SECRET = "fuzz-secret-fuzz-secret-fuzz-secret-0123456789"
SECURE_HOST = "api.example.com"
# Headers the gateway sets upstream; a client's `_` spelling of one must never reach the upstream.
GATEWAY_SET_HEADERS = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "x-request-id",
    "traceparent", "x-user-id", "x-user-scopes",
})
CASES: dict[str, int] = {}  # cases sent (or configs loaded), by target, for the run's summary
# SPEC §4: the codes a gateway-made error may carry, by status.
ERROR_CODES = {
    400: {"bad_request", "invalid_json"}, 401: {"missing_token", "invalid_token"}, 403: {"insufficient_scope"},
    404: {"no_route"}, 405: {"method_not_allowed"}, 408: {"request_timeout"}, 413: {"body_too_large"},
    414: {"uri_too_long"}, 429: {"rate_limited"}, 431: {"headers_too_large"}, 502: {"bad_gateway"},
    503: {"no_healthy_upstream", "service_unavailable"}, 504: {"upstream_timeout"},
}


def gateway_yaml(upstream_url: str) -> str:
    """A config exercising every policy a head can reach: a host-bound auth route, validate_json,
    a rate limit keyed on a header, and a catch-all open route."""
    return f"""
server: {{host: 127.0.0.1, port: 0, drain_seconds: 0.5, max_body_bytes: 65536}}
admin: {{host: 127.0.0.1, port: 0}}
logging: {{access_log: false}}
auth:
  jwt:
    algorithms: [HS256]
    secret: {JWT_SECRET}
    claims_to_headers: {{sub: X-User-Id, scope: X-User-Scopes}}
upstreams:
  rec: {{targets: ["{upstream_url}"], retry: {{attempts: 1}}}}
routes:
  - {{name: secure, path: /secure, host: {SECURE_HOST}, upstream: rec, auth: required}}
  - {{name: json, path: /json, upstream: rec, auth: none, validate_json: true}}
  - name: limited
    path: /limited
    upstream: rec
    auth: none
    rate_limit: {{requests: 100000000, window_seconds: 60, key: "header:X-Api-Key"}}
  - {{name: open, path: /, upstream: rec, auth: none}}
"""


@dataclass
class Seen:
    """One request as the recording upstream received it."""

    method: str
    uri: str
    request_id: str
    header_names: list[str]
    body_bytes: int


@dataclass
class Answer:
    """One parsed HTTP answer (``complete`` False: the connection ended or timed out first)."""

    status: int = 0
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@stream_request_body
class Recorder(RequestHandler):
    """Records each request as soon as its head arrives (a body the gateway aborts midway still counts
    as seen), then answers 200 ``X-Upstream: recorder`` once the body is in."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]

    def initialize(self, seen: list[Seen]) -> None:
        self.seen = seen

    def prepare(self) -> None:
        request = self.request
        self.record = Seen(request.method or "", request.uri or "", request.headers.get("X-Request-Id", ""),
                           [name for name, _ in request.headers.get_all()], 0)
        self.seen.append(self.record)

    def data_received(self, chunk: bytes) -> None:
        self.record.body_bytes += len(chunk)

    def get(self) -> None:
        self.set_header("X-Upstream", "recorder")
        self.set_header("Content-Type", "text/plain")
        self.finish("relayed")

    head = post = delete = patch = put = options = get


class _ErrorLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self.reported = 0  # records up to here were reported by a case already

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class Bench:
    """The gateway and its recording upstream on a loop thread; see the module docstring."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.errors = _ErrorLogs()
        self._ids = itertools.count(1)
        self._refused_ids: set[str] = set()
        self._issued: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-bench", daemon=True)
        self.gateway: GatewayServer | None = None
        self.upstream: HTTPServer | None = None
        self.port = 0

    def start(self) -> None:
        logging.getLogger().addHandler(self.errors)
        self._thread.start()
        self._run(self._start())

    def stop(self) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        logging.getLogger().removeHandler(self.errors)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> None:
        sockets = bind_sockets(0, "127.0.0.1")
        self.upstream = HTTPServer(Application([(r".*", Recorder, {"seen": self.seen})]))
        self.upstream.add_sockets(sockets)
        url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self.gateway = GatewayServer(parse_config(gateway_yaml(url), environ={}))
        await self.gateway.start()
        self.port = self.gateway.port

    async def _stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.shutdown()
        if self.upstream is not None:
            self.upstream.stop()
            await self.upstream.close_all_connections()

    def new_id(self) -> str:
        request_id = f"fuzz-{next(self._ids)}"
        self._issued.add(request_id)
        return request_id

    def check(self, request: bytes, request_id: str, method: str, expect: Callable[[Answer], None] | None = None
              ) -> Answer:
        """Send one case and assert what every case must keep:

        - an answer comes back; never a 500;
        - a gateway-made answer (no ``X-Upstream``) is SPEC §4 JSON whose ``status`` is the
          status line's and whose ``request_id`` is the X-Request-Id header's;
        - a relayed answer is the recorder's 200, and the recorder saw this case once;
        - the upstream never saw a request the gateway refused (4xx), nor any request this
          case did not send (smuggled);
        - no header reached the upstream under a ``_`` spelling of one the gateway sets;
        - no ERROR log (or traceback) was emitted; the gateway still serves a plain GET.

        ``expect`` adds the case's own assertions on the answer.
        """
        count("request heads")
        seen_before, errors_before = len(self.seen), len(self.errors.records)
        self.errors.reported = errors_before
        answer = exchange(self.port, request, head=method == "HEAD")
        alive_id = self.new_id()
        alive = exchange(self.port, f"GET /alive HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {alive_id}\r\n\r\n".encode())
        new_errors = self.errors.records[errors_before:]
        self.errors.reported = len(self.errors.records)
        assert not new_errors, "ERROR logged:\n" + "\n".join(new_errors)
        assert answer.complete, f"no complete answer: {answer.raw[:300]!r}"
        assert answer.status != 500, answer.raw[:500]
        relayed = answer.header("X-Upstream") == "recorder"
        if relayed:
            assert answer.status == 200, answer.raw[:300]
        else:
            check_gateway_error(answer, method)
            if 400 <= answer.status < 500:
                self._refused_ids.add(request_id)  # checked against this and every later case's records
        assert alive.complete and alive.status == 200 and alive.header("X-Upstream") == "recorder", \
            f"the gateway stopped serving: {alive.raw[:300]!r}"
        new = self.seen[seen_before:]
        mine = [s for s in new if s.request_id == request_id]
        others = [s for s in new if s.request_id not in self._issued]
        assert not others, f"the upstream saw requests no case sent (smuggled?): {others}"
        late = [s for s in new if s.request_id in self._refused_ids]
        assert not late, f"the upstream saw a request the gateway refused with {answer.status}: {late}"
        if relayed:
            assert len(mine) == 1, f"relayed, but the upstream saw {len(mine)} requests for it"
        for s in mine:
            spoofed = [n for n in s.header_names if "_" in n and n.replace("_", "-").lower() in GATEWAY_SET_HEADERS]
            assert not spoofed, f"the upstream got underscore spellings of gateway headers: {spoofed}"
        if expect is not None:
            expect(answer)
        return answer


def count(target: str) -> None:
    CASES[target] = CASES.get(target, 0) + 1


def check_gateway_error(answer: Answer, method: str) -> None:
    """A gateway-made answer is SPEC §4's JSON (for HEAD: its headers)."""
    assert answer.status in ERROR_CODES, f"gateway answered {answer.status}: {answer.raw[:300]!r}"
    assert answer.header("Content-Type") == "application/json", f"not JSON: {answer.raw[:300]!r}"
    request_id = answer.header("X-Request-Id")
    assert request_id, answer.raw[:300]
    if method == "HEAD" and not answer.body:
        return
    try:
        error = json.loads(answer.body)
    except ValueError:
        raise AssertionError(f"the body is not JSON: {answer.raw[:300]!r}") from None
    assert isinstance(error, dict) and set(error) == {"error", "message", "status", "request_id"}, error
    assert error["status"] == answer.status, (error, answer.status)
    assert error["error"] in ERROR_CODES[answer.status], error
    assert error["request_id"] == request_id, (error, request_id)
    assert isinstance(error["message"], str) and "Traceback" not in error["message"], error


def exchange(port: int, request: bytes, head: bool = False) -> Answer:
    """Write ``request`` on a new connection and read one answer (1xx skipped; HEAD: no body)."""
    answer = Answer()
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole request was read: the answer may still be there
        reader = _Reader(sock)
        try:
            _read_answer(reader, answer, head)
        except (OSError, ValueError):
            pass
        answer.raw = reader.data
    return answer


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.pos = 0

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.data += chunk
        return bool(chunk)

    def until(self, marker: bytes) -> bytes:
        while (end := self.data.find(marker, self.pos)) < 0:
            if not self._more():
                raise ValueError("closed")
        out, self.pos = self.data[self.pos:end], end + len(marker)
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.data) - self.pos < n:
            if not self._more():
                raise ValueError("closed")
        out, self.pos = self.data[self.pos:self.pos + n], self.pos + n
        return out

    def rest(self) -> bytes:
        while self._more():
            pass
        out, self.pos = self.data[self.pos:], len(self.data)
        return out


def _read_answer(reader: _Reader, answer: Answer, head: bool) -> None:
    while True:
        lines = reader.until(b"\r\n\r\n").decode("latin1").split("\r\n")
        answer.status = int(lines[0].split(" ")[1])
        answer.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            answer.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if answer.status >= 200:
            break
    if head or answer.status in (204, 304):
        answer.body = b""
    elif answer.header("Transfer-Encoding") == "chunked":
        body = b""
        while size := int(reader.until(b"\r\n").split(b";")[0], 16):
            body += reader.exactly(size)
            reader.until(b"\r\n")
        reader.until(b"\r\n")
        answer.body = body
    elif (length := answer.header("Content-Length")) is not None:
        answer.body = reader.exactly(int(length))
    else:
        answer.body = reader.rest()
    answer.complete = True
