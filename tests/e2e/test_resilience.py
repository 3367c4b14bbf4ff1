"""Upstream resilience on the wire (SPEC §3 upstreams, §4 retries, 502/503/504; issue 4).

Every test runs a real gateway in front of real Tornado upstreams on loopback
ephemeral ports, and makes them misbehave for real: a stopped server (refused
connections), a port whose accept queue is full (connect never completes), a
handler that sleeps past the timeout, 503 answers with ``Retry-After``, a
``/health`` that turns 503, a server that dies and comes back on its port.
Each upstream counts what reached it, so assertions are exact counts at the
backend, not guesses from the client side. Times are the IOLoop's clock, the
one the gateway's timers and backoff run on.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tests.support.wait import wait_for

Answer = tuple[int, dict[str, str]]


class Backend:
    """A real upstream whose answers the test switches; it records every request it gets.

    ``status``/``headers``: the answer; ``script``: answers used first, one per
    request (the same deque may be shared by several backends, so "the first
    request, wherever it lands" can be scripted); ``delay``: seconds to sit on
    a request before answering (ended early when the gateway hangs up);
    ``held``: while True, requests wait (for least_conn); ``health``: what
    ``/health`` answers (``health_script``: statuses answered first, one per poll).
    """

    def __init__(self, start_upstream: Any, name: str, *, status: int = 200,
                 script: deque[Answer] | None = None) -> None:
        self.name = name
        self.status = status
        self.headers: dict[str, str] = {}
        self.script: deque[Answer] = script if script is not None else deque()
        self.delay = 0.0
        self.held = False
        self.health = 200
        self.health_script: deque[int] = deque()
        self.health_polls = 0
        self.hits: list[tuple[str, float]] = []  # (method, loop time when it arrived)
        self.in_flight = 0
        self._start_upstream = start_upstream
        self.upstream = start_upstream(self.app())
        self.port = self.upstream.port
        self.url = self.upstream.url

    def app(self) -> Application:
        return Application([(r"/health", HealthHandler, {"backend": self}),
                            (r".*", BackendHandler, {"backend": self})])

    def count(self, method: str | None = None) -> int:
        return sum(1 for m, _ in self.hits if method is None or m == method)

    def answer(self) -> Answer:
        return self.script.popleft() if self.script else (self.status, self.headers)

    async def die(self) -> None:
        """Stop listening and drop every connection: new connections are refused."""
        await self.upstream.close()

    def revive(self) -> None:
        """Listen again on the same port."""
        self.upstream = self._start_upstream(self.app(), self.port)


class BackendHandler(RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]

    def initialize(self, backend: Backend) -> None:
        self.backend = backend
        self.gone = False

    def on_connection_close(self) -> None:
        self.gone = True

    async def get(self, *args: str) -> None:
        backend, loop = self.backend, IOLoop.current()
        backend.hits.append((self.request.method or "", loop.time()))
        status, headers = backend.answer()
        backend.in_flight += 1
        try:
            deadline = loop.time() + backend.delay
            while not self.gone and (backend.held or loop.time() < deadline):
                await asyncio.sleep(0.005)
        finally:
            backend.in_flight -= 1
        if self.gone:
            return
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"backend": backend.name, "method": self.request.method,
                                "bytes": len(self.request.body)}))

    head = post = delete = patch = put = options = get


class HealthHandler(RequestHandler):
    def initialize(self, backend: Backend) -> None:
        self.backend = backend

    def get(self) -> None:
        backend = self.backend
        backend.health_polls += 1
        status = backend.health_script.popleft() if backend.health_script else backend.health
        self.set_status(status)
        self.finish("ok" if status < 400 else "down")


class DropAfterReading(TCPServer):
    """A raw HTTP/1.1 upstream: answers GET with a keep-alive 200; reads a POST whole, then hangs up.

    The gateway's pooled connection to it is therefore reused for the POST and
    dies before any byte of an answer: the request reached the upstream.
    """

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []
        sock, self.port = bind_unused_port()
        self.add_sockets([sock])

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        try:
            while True:
                head = (await stream.read_until(b"\r\n\r\n")).decode("latin-1")
                method = head.split(" ", 1)[0]
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length:
                    await stream.read_bytes(length)
                self.methods.append(method)
                if method != "GET":
                    stream.close()
                    return
                await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except StreamClosedError:
            pass


@pytest.fixture
def refused_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    sock, port = bind_unused_port()
    sock.close()
    return port


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection never completes.

    ``listen(0)`` leaves room for one pending connection; one is parked there
    and never accepted, so the kernel drops further SYNs and ``connect()``
    waits. Nothing leaves the machine.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    parked = []
    for _ in range(2):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            client.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        parked.append(client)
    yield port
    for client in parked:
        client.close()
    listener.close()


def upstream_yaml(*targets: str, route_timeout: float | None = None, **keys: str) -> str:
    """One upstream ``svc`` behind the route /api (not stripped). ``keys`` are YAML flow values."""
    items = ", ".join(targets)
    extra = "".join(f"\n        {name}: {value}" for name, value in keys.items())
    timeout = f", timeout: {route_timeout}" if route_timeout is not None else ""
    return f"""
    upstreams:
      svc:
        targets: [{items}]{extra}
    routes:
      - {{name: api, path: /api, upstream: svc{timeout}}}
    """


def t(url: str, weight: int | None = None) -> str:
    return f'{{url: "{url}", weight: {weight}}}' if weight is not None else f'"{url}"'


def body(response: Any) -> dict[str, Any]:
    return json.loads(response.body)


def served_by(response: Any) -> str:
    assert response.code == 200, (response.code, response.body)
    return str(body(response)["backend"])


def now() -> float:
    return IOLoop.current().time()


# --- balancing ---


async def test_round_robin_spreads_evenly_over_many_requests(start_upstream, start_gateway, http) -> None:
    a, b, c = (Backend(start_upstream, name) for name in "abc")
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), t(c.url)))
    order = [served_by(await http(gw.url + "/api/x")) for _ in range(300)]
    assert (a.count(), b.count(), c.count()) == (100, 100, 100)
    assert order[:6] == ["a", "b", "c", "a", "b", "c"]


async def test_smooth_weighted_round_robin_is_exact_and_never_bursts(start_upstream, start_gateway, http) -> None:
    light, heavy = Backend(start_upstream, "light"), Backend(start_upstream, "heavy")
    gw = await start_gateway(upstream_yaml(t(light.url, 1), t(heavy.url, 3), balance="round_robin"))
    order = [served_by(await http(gw.url + "/api/x")) for _ in range(400)]
    assert (light.count(), heavy.count()) == (100, 300)
    # Smooth: every window of four holds exactly one "light", and "heavy" never runs more than 3 long.
    assert all(order[i:i + 4].count("light") == 1 for i in range(0, 400, 4))
    assert "heavy," * 4 not in ",".join(order) + ","


async def test_least_conn_steers_around_a_busy_target(start_upstream, start_gateway, http) -> None:
    slow, fast = Backend(start_upstream, "slow"), Backend(start_upstream, "fast")
    gw = await start_gateway(upstream_yaml(t(slow.url), t(fast.url), balance="least_conn"))
    slow.held = True
    parked: list[Any] = []
    while slow.in_flight == 0:  # ties are broken at random: send until one request sits on "slow"
        parked.append(asyncio.ensure_future(http(gw.url + "/api/parked")))
        await wait_for(lambda: slow.in_flight + fast.count() >= len(parked), 3.0)
    assert slow.count() == 1

    served = [served_by(await http(gw.url + "/api/x")) for _ in range(50)]
    assert served == ["fast"] * 50  # slow has 1 in flight, fast 0: every pick goes to fast
    assert slow.count() == 1

    slow.held = False
    assert [r.code for r in await asyncio.gather(*parked)] == [200] * len(parked)
    later = {served_by(await http(gw.url + "/api/x")) for _ in range(40)}
    assert later == {"slow", "fast"}  # free again: it gets its share back


# --- retries ---


async def test_get_retried_after_503_succeeds_on_the_other_target(start_upstream, start_gateway, http) -> None:
    first = deque([(503, {})])  # the first request, wherever it lands, gets a 503
    a, b = Backend(start_upstream, "a", script=first), Backend(start_upstream, "b", script=first)
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), retry="{attempts: 2, backoff_seconds: 0}"))
    response = await http(gw.url + "/api/x")
    assert response.code == 200
    assert (a.count(), b.count()) == (1, 1)  # one try each: the retry went to the other target
    assert body(response)["backend"] == "b"  # round robin starts at the first target, which answered 503


async def test_last_try_answer_is_relayed_when_attempts_run_out(start_upstream, start_gateway, http) -> None:
    a = Backend(start_upstream, "a", status=503)
    a.headers = {"Retry-After": "0"}
    gw = await start_gateway(upstream_yaml(t(a.url), retry="{attempts: 3, backoff_seconds: 0}"))
    response = await http(gw.url + "/api/x")
    assert response.code == 503
    assert body(response) == {"backend": "a", "method": "GET", "bytes": 0}  # the upstream's own answer
    assert response.headers["Retry-After"] == "0"
    assert a.count() == 3  # a single target is tried again when there is no other


async def test_held_answer_is_relayed_when_its_failure_opened_the_last_breaker(
        start_upstream, start_gateway, http) -> None:
    a = Backend(start_upstream, "a", status=503)
    a.headers = {"Retry-After": "7"}
    gw = await start_gateway(upstream_yaml(t(a.url), retry="{attempts: 3, backoff_seconds: 0}",
                                           circuit_breaker="{failure_threshold: 1, open_seconds: 30}"))
    response = await http(gw.url + "/api/x")
    assert response.code == 503
    assert body(response) == {"backend": "a", "method": "GET", "bytes": 0}  # the upstream's, not no_healthy_upstream
    assert response.headers["Retry-After"] == "7"
    assert a.count() == 1
    after = await http(gw.url + "/api/x")
    assert (after.code, body(after)["error"]) == (503, "no_healthy_upstream")
    assert a.count() == 1


@pytest.mark.parametrize(("max_backoff", "expected"), [(0.3, 0.3), (2.0, 1.0)])
@pytest.mark.timeout(seconds=10)
async def test_retry_after_is_honoured_up_to_max_backoff(start_upstream, start_gateway, http,
                                                         max_backoff: float, expected: float) -> None:
    first = deque([(503, {"Retry-After": "1"})])
    a, b = Backend(start_upstream, "a", script=first), Backend(start_upstream, "b", script=first)
    gw = await start_gateway(upstream_yaml(
        t(a.url), t(b.url),
        retry=f"{{attempts: 2, backoff_seconds: 0.01, max_backoff_seconds: {max_backoff}}}"))
    response = await http(gw.url + "/api/x")
    assert response.code == 200
    (_, refused_at), = a.hits
    (_, retried_at), = b.hits
    # min(Retry-After, max_backoff_seconds), not the 0.01 s exponential backoff
    assert expected <= retried_at - refused_at < expected + 0.4  # room for a stall; still far from the other case


async def test_post_is_sent_once_after_a_503(start_upstream, start_gateway, http) -> None:
    a, b = Backend(start_upstream, "a", status=503), Backend(start_upstream, "b", status=503)
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), retry="{attempts: 3, backoff_seconds: 0}"))
    response = await http(gw.url + "/api/orders", method="POST", body=b'{"n": 1}')
    assert response.code == 503
    assert body(response) == {"backend": "a", "method": "POST", "bytes": 8}  # relayed as is
    assert (a.count("POST"), b.count("POST")) == (1, 0)


async def test_post_reaching_a_dying_connection_is_not_sent_again(start_upstream, start_gateway, http) -> None:
    dropper = DropAfterReading()
    try:
        gw = await start_gateway(upstream_yaml(t(f"http://127.0.0.1:{dropper.port}"),
                                               retry="{attempts: 3, backoff_seconds: 0}"))
        assert (await http(gw.url + "/api/warm")).code == 200  # leaves a kept-alive connection in the pool
        response = await http(gw.url + "/api/orders", method="POST", body=b'{"n": 1}')
        assert response.code == 502
        assert body(response)["error"] == "bad_gateway"
        assert dropper.methods == ["GET", "POST"]  # the upstream read the POST: it must not get it again
    finally:
        dropper.stop()


async def test_post_to_a_refused_target_lands_on_another(start_upstream, start_gateway, http,
                                                        refused_port: int) -> None:
    live = Backend(start_upstream, "live")
    dead = f"http://127.0.0.1:{refused_port}"
    gw = await start_gateway(upstream_yaml(t(dead), t(live.url), retry="{attempts: 2, backoff_seconds: 0}"))
    responses = [await http(gw.url + "/api/orders", method="POST", body=b"{}") for _ in range(6)]
    assert [served_by(r) for r in responses] == ["live"] * 6
    assert live.count("POST") == 6  # once each: half of them were first refused by the dead target

    once = await start_gateway(upstream_yaml(t(dead), retry="{attempts: 1}"))
    response = await http(once.url + "/api/orders", method="POST", body=b"{}")
    assert response.code == 502
    assert body(response)["error"] == "bad_gateway"


async def test_a_streamed_body_moves_on_only_when_the_connection_was_refused(start_upstream, start_gateway, http,
                                                                            refused_port: int) -> None:
    live = Backend(start_upstream, "live")
    gw = await start_gateway(upstream_yaml(t(f"http://127.0.0.1:{refused_port}"), t(live.url),
                                           retry="{attempts: 2, backoff_seconds: 0}"))

    async def chunked(write: Callable[[bytes], Any]) -> None:  # no Content-Length: streamed, not buffered
        for _ in range(4):
            await write(b"x" * 1000)

    for _ in range(2):  # round robin: one of the two goes to the refused port first
        response = await http(gw.url + "/api/upload", method="POST", body_producer=chunked)
        assert served_by(response) == "live"  # refused: not a byte of the body was read, so it moves on
        assert body(response)["bytes"] == 4000
    assert live.count("POST") == 2


async def test_a_body_over_the_replay_buffer_is_never_retried(start_upstream, start_gateway, http) -> None:
    first = deque([(503, {})])
    a, b = Backend(start_upstream, "a", script=first), Backend(start_upstream, "b", script=first)
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url),
                                           retry="{attempts: 3, backoff_seconds: 0, replay_buffer_bytes: 1024}"))
    large = await http(gw.url + "/api/doc", method="PUT", body=b"x" * 1025)
    assert large.code == 503  # streamed: the 503 is relayed, the PUT not sent again
    assert (a.count("PUT"), b.count("PUT")) == (1, 0)

    first.append((503, {}))
    small = await http(gw.url + "/api/doc", method="PUT", body=b"x" * 1024)
    assert served_by(small) == "a"  # buffered: replayed on the other target
    assert body(small)["bytes"] == 1024
    assert (a.count("PUT"), b.count("PUT")) == (2, 1)


async def test_a_target_that_dies_is_stepped_around(start_upstream, start_gateway, http) -> None:
    a, b = Backend(start_upstream, "a"), Backend(start_upstream, "b")
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), retry="{attempts: 2, backoff_seconds: 0}"))
    assert {served_by(await http(gw.url + "/api/x")) for _ in range(10)} == {"a", "b"}
    await a.die()
    before = a.count()
    for method in ("GET", "PUT", "DELETE", "POST"):
        for _ in range(4):
            payload = b"{}" if method in ("PUT", "POST") else None
            assert served_by(await http(gw.url + "/api/x", method=method, body=payload)) == "b"
    assert a.count() == before


# --- timeouts ---


@pytest.mark.timeout(seconds=10)
async def test_connect_timeout_answers_504_and_a_post_moves_on(start_upstream, start_gateway, http,
                                                               blackhole_port: int) -> None:
    hole = f"http://127.0.0.1:{blackhole_port}"
    gw = await start_gateway(upstream_yaml(t(hole), connect_timeout="0.2", request_timeout="5"))
    started = now()
    response = await http(gw.url + "/api/x")
    elapsed = now() - started
    assert response.code == 504
    assert body(response)["error"] == "upstream_timeout"
    assert 0.2 <= elapsed < 0.5

    live = Backend(start_upstream, "live")
    both = await start_gateway(upstream_yaml(t(hole), t(live.url), connect_timeout="0.2",
                                             retry="{attempts: 2, backoff_seconds: 0}"))
    started = now()
    response = await http(both.url + "/api/orders", method="POST", body=b"{}")
    assert served_by(response) == "live"  # never connected: nothing was sent, so even a POST moves on
    assert now() - started >= 0.2
    assert live.count("POST") == 1


@pytest.mark.timeout(seconds=10)
async def test_request_timeout_and_route_timeout_answer_504(start_upstream, start_gateway, http) -> None:
    hang = Backend(start_upstream, "hang")
    hang.delay = 5.0
    gw = await start_gateway(upstream_yaml(t(hang.url), request_timeout="0.3"))
    started = now()
    response = await http(gw.url + "/api/x")
    assert response.code == 504
    assert body(response)["error"] == "upstream_timeout"
    assert 0.3 <= now() - started < 0.6

    override = await start_gateway(upstream_yaml(t(hang.url), request_timeout="5", route_timeout=0.15))
    started = now()
    response = await http(override.url + "/api/x")
    assert response.code == 504
    assert 0.15 <= now() - started < 0.4
    await wait_for(lambda: hang.in_flight == 0, 3.0)  # the gateway hung up on it both times


@pytest.mark.timeout(seconds=10)
async def test_timeout_retries_a_get_but_never_a_post(start_upstream, start_gateway, http) -> None:
    hang, live = Backend(start_upstream, "hang"), Backend(start_upstream, "live")
    hang.delay = 5.0
    gw = await start_gateway(upstream_yaml(t(hang.url), t(live.url), request_timeout="0.2",
                                           retry="{attempts: 2, backoff_seconds: 0}"))
    response = await http(gw.url + "/api/x")  # round robin: the first try goes to "hang"
    assert served_by(response) == "live"
    assert (hang.count("GET"), live.count("GET")) == (1, 1)

    posted = await http(gw.url + "/api/orders", method="POST", body=b"{}")  # "live" is next: move it on
    assert served_by(posted) == "live"
    posted = await http(gw.url + "/api/orders", method="POST", body=b"{}")
    assert posted.code == 504  # it may have acted: not sent again
    assert (hang.count("POST"), live.count("POST")) == (1, 1)


# --- the retry budget ---


@pytest.mark.timeout(seconds=30)
async def test_retry_budget_bounds_the_extra_load_of_an_outage(start_upstream, start_gateway, http) -> None:
    a, b = Backend(start_upstream, "a", status=503), Backend(start_upstream, "b", status=503)
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), retry="{attempts: 3, backoff_seconds: 0}"))
    codes = [(await http(gw.url + "/api/x")).code for _ in range(200)]
    assert codes == [503] * 200
    # Without a budget: 600 tries. With it: max(30 per 10 s window, 20 % of 200 first tries) retries.
    assert a.count() + b.count() == 200 + max(30, 40)


@pytest.mark.timeout(seconds=30)
async def test_retry_budget_holds_with_one_bad_target(start_upstream, start_gateway, http) -> None:
    bad, good = Backend(start_upstream, "bad", status=503), Backend(start_upstream, "good")
    gw = await start_gateway(upstream_yaml(t(bad.url), t(good.url), retry="{attempts: 3, backoff_seconds: 0}"))
    codes = [(await http(gw.url + "/api/x")).code for _ in range(200)]
    retries = bad.count() + good.count() - 200
    assert 30 <= retries <= 40
    assert codes.count(200) == good.count()  # every try at "good" succeeded
    assert codes.count(503) == 200 - good.count()


# --- circuit breaker ---


@pytest.mark.timeout(seconds=10)
async def test_breaker_opens_half_opens_with_one_probe_and_closes(start_upstream, start_gateway, http) -> None:
    a = Backend(start_upstream, "a", status=500)
    gw = await start_gateway(upstream_yaml(t(a.url), request_timeout="5", connect_timeout="5",
                                           circuit_breaker="{failure_threshold: 3, open_seconds: 0.3}"))
    assert [(await http(gw.url + "/api/x")).code for _ in range(3)] == [500, 500, 500]
    opened = now()  # the breaker opened before the third answer reached us
    started = now()
    response = await http(gw.url + "/api/x")
    assert response.code == 503
    assert body(response)["error"] == "no_healthy_upstream"
    assert now() - started < 1.0  # at once, not after the 5 s timeout
    assert a.count() == 3

    a.status, a.delay = 200, 0.15  # healthy again; the probe takes a while
    await asyncio.sleep(opened + 0.3 + 0.02 - now())
    responses = await asyncio.gather(*(http(gw.url + "/api/x") for _ in range(5)))
    codes = sorted(r.code for r in responses)
    assert codes == [200, 503, 503, 503, 503]  # exactly one probe while half-open
    assert all(body(r)["error"] == "no_healthy_upstream" for r in responses if r.code == 503)
    assert a.count() == 4

    a.delay = 0.0  # the probe succeeded: closed
    assert [(await http(gw.url + "/api/x")).code for _ in range(5)] == [200] * 5
    assert a.count() == 9


@pytest.mark.timeout(seconds=10)
async def test_breaker_half_opens_on_time_and_a_failed_probe_reopens(start_upstream, start_gateway, http) -> None:
    a = Backend(start_upstream, "a", status=502)
    gw = await start_gateway(upstream_yaml(t(a.url),
                                           circuit_breaker="{failure_threshold: 2, open_seconds: 0.3}"))
    assert [(await http(gw.url + "/api/x")).code for _ in range(2)] == [502, 502]
    last_failure = a.hits[-1][1]
    answered = now()

    async def until_it_reaches_a() -> int:
        """Poll every 20 ms; the count of 503 no_healthy_upstream answers before one reached ``a``."""
        refused = 0
        while True:
            response = await http(gw.url + "/api/x")
            if body(response).get("error") != "no_healthy_upstream":
                return refused
            refused += 1
            await asyncio.sleep(0.02)

    assert await until_it_reaches_a() >= 5  # open for 0.3 s
    probe = a.hits[-1][1]
    assert last_failure + 0.3 <= probe < answered + 0.3 + 0.4  # on time (room for a stall, well short of a second 0.3 s)
    assert a.count() == 3  # that probe failed (502): open again for another 0.3 s

    a.status = 200
    assert await until_it_reaches_a() >= 5
    assert a.hits[-1][1] >= probe + 0.3
    assert [(await http(gw.url + "/api/x")).code for _ in range(3)] == [200] * 3


@pytest.mark.timeout(seconds=10)
async def test_every_target_open_answers_503_at_once(start_upstream, start_gateway, http) -> None:
    a, b = Backend(start_upstream, "a"), Backend(start_upstream, "b")
    a.delay = b.delay = 5.0
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), request_timeout="1",
                                           circuit_breaker="{failure_threshold: 1, open_seconds: 30}"))
    assert [(await http(gw.url + "/api/x")).code for _ in range(2)] == [504, 504]
    assert (a.count(), b.count()) == (1, 1)
    started = now()
    response = await http(gw.url + "/api/x")
    assert now() - started < 0.5  # well under the 1 s timeout: nobody was asked
    assert response.code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert body(response)["error"] == "no_healthy_upstream"
    assert (a.count(), b.count()) == (1, 1)


# --- active health checks and readiness ---

HEALTH = "{path: /health, interval_seconds: 0.05, timeout_seconds: 0.5, healthy_threshold: 2, unhealthy_threshold: 2}"


@pytest.mark.timeout(seconds=15)
async def test_health_check_takes_a_target_out_and_back_in(start_upstream, start_gateway, http) -> None:
    a, b, solo = Backend(start_upstream, "a"), Backend(start_upstream, "b"), Backend(start_upstream, "solo")
    gw = await start_gateway(f"""
    upstreams:
      svc: {{targets: ["{a.url}", "{b.url}"], health_check: {HEALTH}}}
      solo: {{targets: ["{solo.url}"], health_check: {HEALTH}, connect_timeout: 5, request_timeout: 5}}
    routes:
      - {{name: api, path: /api, upstream: svc}}
      - {{name: solo, path: /solo, upstream: solo}}
    """)
    svc, solo_pool = gw.holder.runtime.pools["svc"], gw.holder.runtime.pools["solo"]
    target_a, target_solo = svc.targets[0], solo_pool.targets[0]
    assert (await http(gw.url + "/-/ready")).code == 200
    assert {served_by(await http(gw.url + "/api/x")) for _ in range(10)} == {"a", "b"}

    a.health = 503
    await wait_for(lambda: not target_a.healthy, 3.0)
    assert [served_by(await http(gw.url + "/api/x")) for _ in range(20)] == ["b"] * 20
    assert (await http(gw.url + "/-/ready")).code == 200  # svc still has "b"

    solo.health = 503
    await wait_for(lambda: not target_solo.healthy, 3.0)
    ready = await http(gw.url + "/-/ready")
    assert ready.code == 503
    assert ready.headers["Content-Type"] == "application/json"
    hits = solo.count()
    started = now()
    response = await http(gw.url + "/solo/x")
    assert now() - started < 1.0  # at once, not after the 5 s timeout
    assert response.code == 503
    assert body(response)["error"] == "no_healthy_upstream"
    assert solo.count() == hits

    solo.health = 200
    await wait_for(lambda: target_solo.healthy, 3.0)
    assert (await http(gw.url + "/-/ready")).code == 200
    assert served_by(await http(gw.url + "/solo/x")) == "solo"

    a.health = 200
    await wait_for(lambda: target_a.healthy, 3.0)
    assert {served_by(await http(gw.url + "/api/x")) for _ in range(10)} == {"a", "b"}


@pytest.mark.timeout(seconds=15)
async def test_a_dead_server_goes_out_and_comes_back_on_its_port(start_upstream, start_gateway, http) -> None:
    a, b = Backend(start_upstream, "a"), Backend(start_upstream, "b")
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), health_check=HEALTH))
    target_a = gw.holder.runtime.pools["svc"].targets[0]
    await a.die()
    await wait_for(lambda: not target_a.healthy, 3.0)  # refused twice in a row
    assert [served_by(await http(gw.url + "/api/x")) for _ in range(10)] == ["b"] * 10  # no retry needed
    a.revive()
    await wait_for(lambda: target_a.healthy, 3.0)
    assert {served_by(await http(gw.url + "/api/x")) for _ in range(10)} == {"a", "b"}


@pytest.mark.timeout(seconds=15)
async def test_flapping_health_within_thresholds_keeps_the_target_in(start_upstream, start_gateway, http) -> None:
    a, b = Backend(start_upstream, "a"), Backend(start_upstream, "b")
    gw = await start_gateway(upstream_yaml(t(a.url), t(b.url), health_check=HEALTH))
    target_a = gw.holder.runtime.pools["svc"].targets[0]
    polls = a.health_polls
    a.health_script.extend([503, 200] * 6)  # one status per poll, however late a poll comes: never two failures in a row
    while a.health_polls < polls + 12:
        assert target_a.healthy
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.005)
    assert target_a.healthy
    assert {served_by(await http(gw.url + "/api/x")) for _ in range(10)} == {"a", "b"}
