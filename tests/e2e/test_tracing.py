"""Tracing (SPEC §9) end to end: a gateway, real upstreams and a real OTLP/HTTP receiver on loopback.

The receiver decodes the ``ExportTraceServiceRequest`` protobufs the gateway posts
(tests/support/otlp.py); the upstreams record the ``traceparent`` each try carried.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tests.conftest import DEFAULT_SERVER
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.raw import exchange, parse
from tests.support.wait import wait_for

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = "00f067aa0ba902b7"


class Recording(RequestHandler):
    """Answers the next status of ``statuses`` (then 200), recording each request's trace headers."""

    async def get(self, *args: str) -> None:
        settings = self.application.settings
        settings["seen"].append({"traceparent": self.request.headers.get_list("traceparent"),
                                 "tracestate": self.request.headers.get("tracestate")})
        delay = settings.get("delay", 0.0)
        if delay:
            await asyncio.sleep(delay)
        statuses = settings["statuses"]
        self.set_status(statuses.pop(0) if statuses else 200)
        self.write({"part": settings.get("name", "")})


def recording_app(statuses: list[int] | None = None, name: str = "", delay: float = 0.0) -> Application:
    return Application([(r"/.*", Recording)], seen=[], statuses=list(statuses or []), name=name, delay=delay)


def tracing_config(upstream: str, endpoint: str, extra: str = "", tracing: str = "", upstream_extra: str = "",
                   interval: float = 0.05) -> str:
    return f"""
    upstreams:
      api: {{targets: ["{upstream}"], request_timeout: 5 {upstream_extra}}}
    routes:
      - {{name: api, path: /api, upstream: api}}
    {extra}
    tracing: {{otlp_endpoint: "{endpoint}", service_name: edge, export_interval_seconds: {interval} {tracing}}}
    """


def by_kind(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == kind]


def traceparent_of(span: ReceivedSpan, flags: str = "01") -> str:
    return f"00-{span.trace_id}-{span.span_id}-{flags}"


def metric(server: Any, sample: str) -> float:
    """The value of one sample line of the gateway's /-/metrics text (0 when absent)."""
    for line in server.metrics.exposition().decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def settled(server: Any, sample: str, expected: float, timeout: float = 3.0) -> float:
    """The metric once it reads ``expected`` (the collector's answer reaches the gateway after the
    collector has the spans), or its value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while metric(server, sample) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return metric(server, sample)


@pytest.fixture
def collector(start_upstream: Any) -> Any:
    def start(**kwargs: Any) -> tuple[OtlpReceiver, str]:
        receiver = OtlpReceiver(**kwargs)
        served = start_upstream(receiver.app())
        return receiver, served.url + "/v1/traces"
    return start


async def test_server_span_continues_the_callers_trace_and_the_upstream_gets_the_client_span(
        start_upstream, start_gateway, http, collector) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint))
    resp = await http(gw.url + "/api/orders?secret=k", headers={
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_PARENT}-01", "tracestate": "vendor=opaque,other=1",
        "User-Agent": "probe/1.0", "X-Request-Id": "trace-req-1"})
    assert resp.code == 200
    spans = await receiver.wait_for(2)
    assert len(spans) == 2
    (server,), (client,) = by_kind(spans, "server"), by_kind(spans, "client")
    assert server.name == "GET /api"
    assert (server.trace_id, server.parent_span_id) == (CALLER_TRACE, CALLER_PARENT)
    assert server.status == "unset"
    assert server.attributes == {
        "http.request.method": "GET", "url.path": "/api/orders", "url.scheme": "http",
        "network.protocol.version": "1.1", "network.peer.address": "127.0.0.1", "user_agent.original": "probe/1.0",
        "gateway.request_id": "trace-req-1", "http.response.status_code": 200, "client.address": "127.0.0.1",
        "http.route": "/api"}
    assert server.resource["service.name"] == "edge"
    assert client.name == "GET"
    assert (client.trace_id, client.parent_span_id) == (CALLER_TRACE, server.span_id)
    assert client.status == "unset"
    assert client.attributes == {
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": upstream.port,
        "url.full": f"{upstream.url}/api/orders", "gateway.upstream": "api", "http.response.status_code": 200}
    assert 0 < client.duration_seconds <= server.duration_seconds
    seen = upstream.app.settings["seen"]
    assert seen == [{"traceparent": [traceparent_of(client)], "tracestate": "vendor=opaque,other=1"}]
    assert receiver.requests == ["application/x-protobuf"]
    assert await settled(gw, "gateway_spans_exported_total", 2) == 2


async def test_a_retried_request_has_a_client_span_per_try_with_its_resend_count(
        start_upstream, start_gateway, http, collector) -> None:
    upstream = start_upstream(recording_app(statuses=[503, 502]))
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(
        upstream.url, endpoint, upstream_extra=", retry: {attempts: 3, backoff_seconds: 0.001}"))
    resp = await http(gw.url + "/api/x")
    assert resp.code == 200
    spans = await receiver.wait_for(4)
    (server,) = by_kind(spans, "server")
    tries = sorted(by_kind(spans, "client"), key=lambda s: s.attributes.get("http.request.resend_count", 0))
    assert server.parent_span_id == ""  # no traceparent came in: a new trace
    assert [(t.trace_id, t.parent_span_id) for t in tries] == [(server.trace_id, server.span_id)] * 3
    assert [t.attributes.get("http.request.resend_count") for t in tries] == [None, 1, 2]
    assert [t.attributes["http.response.status_code"] for t in tries] == [503, 502, 200]
    assert [t.attributes.get("error.type") for t in tries] == ["503", "502", None]
    assert [t.status for t in tries] == ["error", "error", "unset"]
    assert len({t.span_id for t in tries}) == 3
    # each try carried its own client span's context, in order
    assert [s["traceparent"] for s in upstream.app.settings["seen"]] == [[traceparent_of(t)] for t in tries]
    assert server.attributes["http.response.status_code"] == 200 and server.status == "unset"


async def test_an_unreachable_upstream_is_an_error_on_both_spans(start_gateway, http, collector) -> None:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there: connection refused
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(f"http://127.0.0.1:{port}", endpoint))
    resp = await http(gw.url + "/api")
    assert resp.code == 502
    spans = await receiver.wait_for(2)
    (server,), (client,) = by_kind(spans, "server"), by_kind(spans, "client")
    assert client.parent_span_id == server.span_id
    assert (client.status, client.attributes["error.type"]) == ("error", "connect")
    assert "http.response.status_code" not in client.attributes
    assert (server.status, server.attributes["error.type"], server.attributes["http.response.status_code"]) == (
        "error", "bad_gateway", 502)


async def test_an_upstream_timeout_names_its_error_type(start_upstream, start_gateway, http, collector) -> None:
    upstream = start_upstream(recording_app(delay=1.0))
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint, extra="", upstream_extra="")
                             .replace("request_timeout: 5", "request_timeout: 0.1"))
    resp = await http(gw.url + "/api")
    assert resp.code == 504
    spans = await receiver.wait_for(2)
    (server,), (client,) = by_kind(spans, "server"), by_kind(spans, "client")
    assert client.attributes["error.type"] == "timeout"
    assert server.attributes["error.type"] == "upstream_timeout"


async def test_aggregate_parts_are_client_spans_of_the_request(start_upstream, start_gateway, http,
                                                               collector) -> None:
    users = start_upstream(recording_app(name="user"))
    orders = start_upstream(recording_app(name="orders"))
    receiver, endpoint = collector()
    gw = await start_gateway(f"""
    upstreams:
      users: {{targets: ["{users.url}"]}}
      orders: {{targets: ["{orders.url}"]}}
    routes:
      - name: overview
        path: /api/users/{{id}}/overview
        aggregate:
          - {{name: user, upstream: users, path: "/users/{{id}}"}}
          - {{name: orders, upstream: orders, path: "/orders?user={{id}}"}}
    tracing: {{otlp_endpoint: "{endpoint}", export_interval_seconds: 0.05}}
    """)
    resp = await http(gw.url + "/api/users/7/overview", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"})
    assert resp.code == 200 and json.loads(resp.body) == {"user": {"part": "user"}, "orders": {"part": "orders"}}
    spans = await receiver.wait_for(3)
    (server,) = by_kind(spans, "server")
    clients = {s.attributes["gateway.upstream"]: s for s in by_kind(spans, "client")}
    assert server.name == "GET /api/users/{id}/overview"
    assert server.attributes["http.route"] == "/api/users/{id}/overview"
    assert sorted(clients) == ["orders", "users"]
    assert {(c.trace_id, c.parent_span_id) for c in clients.values()} == {(CALLER_TRACE, server.span_id)}
    assert clients["orders"].attributes["url.full"] == f"{orders.url}/orders"  # no query string in spans
    assert users.app.settings["seen"][0]["traceparent"] == [traceparent_of(clients["users"])]
    assert orders.app.settings["seen"][0]["traceparent"] == [traceparent_of(clients["orders"])]


@pytest.mark.parametrize("incoming", [
    f"00-{CALLER_TRACE.upper()}-{CALLER_PARENT}-01",  # upper-case hex
    f"ff-{CALLER_TRACE}-{CALLER_PARENT}-01",  # the forbidden version
    f"01-{CALLER_TRACE}-{CALLER_PARENT}-01",  # a version this gateway does not read
    f"00-{'0' * 32}-{CALLER_PARENT}-01",  # all-zero trace id
    f"00-{CALLER_TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"00-{CALLER_TRACE}-{CALLER_PARENT}-01-extra",
    f"00-{CALLER_TRACE}-{CALLER_PARENT}",
    "garbage",
    "00-" + "a" * 5000,  # oversized
])
async def test_a_malformed_traceparent_starts_a_new_trace(start_upstream, start_gateway, http, collector,
                                                           incoming: str) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint))
    resp = await http(gw.url + "/api", headers={"traceparent": incoming})
    assert resp.code == 200
    spans = await receiver.wait_for(2)
    (server,), (client,) = by_kind(spans, "server"), by_kind(spans, "client")
    assert server.parent_span_id == ""
    assert server.trace_id not in (CALLER_TRACE, CALLER_TRACE.upper(), "0" * 32)
    assert re.fullmatch(r"[0-9a-f]{32}", server.trace_id)
    assert upstream.app.settings["seen"][0]["traceparent"] == [traceparent_of(client)]


async def test_two_traceparent_lines_start_a_new_trace(start_upstream, start_gateway, collector) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint))
    head = (f"GET /api HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{CALLER_TRACE}-{CALLER_PARENT}-01\r\n"
            f"traceparent: 00-{'b' * 32}-{'c' * 16}-01\r\nConnection: close\r\n\r\n").encode()
    answer = await exchange(gw.port, head)
    assert answer.startswith(b"HTTP/1.1 200 ")
    spans = await receiver.wait_for(2)
    (server,), (client,) = by_kind(spans, "server"), by_kind(spans, "client")
    assert server.parent_span_id == "" and server.trace_id not in (CALLER_TRACE, "b" * 32)
    assert upstream.app.settings["seen"][0]["traceparent"] == [traceparent_of(client)]


async def test_sample_ratio_zero_exports_nothing_but_follows_a_sampled_caller(start_upstream, start_gateway, http,
                                                                               collector) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint, tracing=", sample_ratio: 0"))
    for _ in range(5):
        assert (await http(gw.url + "/api")).code == 200
    unsampled = f"00-{CALLER_TRACE}-{CALLER_PARENT}-00"
    assert (await http(gw.url + "/api", headers={"traceparent": unsampled})).code == 200
    await asyncio.sleep(0.3)  # six export intervals
    assert receiver.spans == [] and receiver.requests == []
    seen = [s["traceparent"][0] for s in upstream.app.settings["seen"]]
    # not sampled, still propagated: a new trace each (flags 00), the caller's trace continued
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", tp) for tp in seen)
    assert len({tp[3:35] for tp in seen[:5]}) == 5
    assert seen[5].startswith(f"00-{CALLER_TRACE}-") and seen[5].endswith("-00") and CALLER_PARENT not in seen[5]
    # a caller that sampled its trace is followed (ParentBased)
    sampled = f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"
    assert (await http(gw.url + "/api", headers={"traceparent": sampled})).code == 200
    spans = await receiver.wait_for(2)
    assert {(s.kind, s.trace_id) for s in spans} == {("server", CALLER_TRACE), ("client", CALLER_TRACE)}
    assert await settled(gw, "gateway_spans_exported_total", 2) == 2


async def test_a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted(
        start_upstream, start_gateway, http) -> None:
    upstream = start_upstream(recording_app())
    sock, port = bind_unused_port()
    sock.close()
    gw = await start_gateway(tracing_config(upstream.url, f"http://127.0.0.1:{port}/v1/traces"))
    for _ in range(10):
        started = time.perf_counter()
        assert (await http(gw.url + "/api")).code == 200
        assert time.perf_counter() - started < 0.5
    assert await settled(gw, 'gateway_spans_dropped_total{reason="export_failed"}', 20) == 20
    assert metric(gw, "gateway_spans_exported_total") == 0


async def test_a_slow_collector_costs_requests_nothing_and_the_queue_stays_bounded(
        start_upstream, start_gateway, http, collector) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector(delay=3.0)
    gw = await start_gateway(tracing_config(
        upstream.url, endpoint,
        tracing=", max_queue_spans: 4, max_batch_spans: 4, export_timeout_seconds: 1", interval=30))
    for _ in range(10):  # 20 spans: 4 go out at once (a full batch), 4 wait, 12 are dropped
        started = time.perf_counter()
        assert (await http(gw.url + "/api")).code == 200
        assert time.perf_counter() - started < 0.5  # the export hanging on the collector (1 s) holds no request
    assert metric(gw, 'gateway_spans_dropped_total{reason="queue_full"}') == 12
    # the hanging export times out (1 s): its batch is dropped; the next one is on its way
    assert await settled(gw, 'gateway_spans_dropped_total{reason="export_failed"}', 4) == 4
    deadline = time.monotonic() + 2
    while len(receiver.requests) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(receiver.requests) == 2


async def test_a_collector_that_refuses_or_rejects_is_counted(start_upstream, start_gateway, http,
                                                             collector) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector(status=400)
    gw = await start_gateway(tracing_config(upstream.url, endpoint))
    assert (await http(gw.url + "/api")).code == 200
    assert await settled(gw, 'gateway_spans_dropped_total{reason="export_failed"}', 2) == 2
    receiver.status, receiver.rejected = 200, 1
    assert (await http(gw.url + "/api")).code == 200
    await receiver.wait_for(2)
    assert await settled(gw, 'gateway_spans_dropped_total{reason="rejected"}', 1) == 1
    assert await settled(gw, "gateway_spans_exported_total", 1) == 1


async def test_shutdown_flushes_what_is_queued(start_upstream, start_gateway, http, collector) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint, interval=60))
    for _ in range(3):
        assert (await http(gw.url + "/api")).code == 200
    await asyncio.sleep(0.1)
    assert receiver.spans == []  # a partial batch waits for its interval
    await gw.shutdown()
    assert len(receiver.spans) == 6
    assert len(receiver.requests) == 1


async def test_a_client_that_goes_away_ends_its_spans(start_upstream, start_gateway, collector) -> None:
    upstream = start_upstream(recording_app(delay=0.5))
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: upstream.app.settings["seen"])  # the upstream has it (a client span is open)
    writer.close()  # and the client leaves before the answer
    spans = await receiver.wait_for(2)
    (server,), (client,) = by_kind(spans, "server"), by_kind(spans, "client")
    assert server.attributes["http.response.status_code"] == 499 and server.status == "unset"
    assert (client.attributes["error.type"], client.parent_span_id) == ("client_closed", server.span_id)


async def test_without_tracing_no_span_is_made_and_the_traceparent_is_kept(start_upstream, start_gateway,
                                                                          http) -> None:
    upstream = start_upstream(recording_app())
    gw = await start_gateway(f"""
    upstreams: {{api: {{targets: ["{upstream.url}"]}}}}
    routes: [{{name: api, path: /api, upstream: api}}]
    """)
    assert gw.holder.runtime.tracing is None
    incoming = f"00-{CALLER_TRACE}-{CALLER_PARENT}-01"
    assert (await http(gw.url + "/api", headers={"traceparent": incoming})).code == 200
    assert upstream.app.settings["seen"][0]["traceparent"] == [incoming]


def test_a_config_without_tracing_does_not_load_opentelemetry() -> None:
    code = ("import sys; from gateway.loader import parse_config; from gateway.server import GatewayServer; "
            "GatewayServer(parse_config('routes: []\\n')); "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


async def test_traced_keep_alive_requests_leave_no_cyclic_garbage(start_upstream, start_gateway, collector) -> None:
    """Spans, their contexts and the tries' fetch wrappers are freed by reference counting, like
    the rest of a request (tests/e2e/test_handler.py)."""
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    gw = await start_gateway(tracing_config(upstream.url, endpoint, interval=60))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

    async def one() -> None:
        writer.write(f"GET /api HTTP/1.1\r\nHost: gw\r\ntraceparent: 00-{CALLER_TRACE}-{CALLER_PARENT}-01\r\n\r\n"
                     .encode())
        _, headers, _ = parse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        await reader.readexactly(int(headers["content-length"]))

    try:
        for _ in range(3):
            await one()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                await one()
            await asyncio.sleep(0.05)
            gc.collect()
            garbage = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    finally:
        writer.close()
        await writer.wait_closed()
    assert garbage == []
    assert len(gw.holder.runtime.tracing.exporter.queue) == 46  # 23 requests, 2 spans each, none exported yet


async def test_a_reload_keeps_an_unchanged_tracer_and_flushes_a_replaced_one(start_upstream, start_gateway, http,
                                                                             collector, tmp_path) -> None:
    upstream = start_upstream(recording_app())
    receiver, endpoint = collector()
    text = DEFAULT_SERVER + textwrap.dedent(tracing_config(upstream.url, endpoint, interval=60))
    gw = await start_gateway(text)
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    first = gw.holder.runtime.tracing
    assert (await http(gw.url + "/api")).code == 200
    await gw.reload(str(path))
    assert gw.holder.runtime.tracing is first and receiver.spans == []  # kept, its queue too
    path.write_text(text.replace("service_name: edge", "service_name: edge2"))
    await gw.reload(str(path))
    await gw.retired()  # the replaced tracer flushes once the requests it saw are over
    assert gw.holder.runtime.tracing is not first
    assert [s.resource["service.name"] for s in receiver.spans] == ["edge", "edge"]  # the old one flushed
    assert (await http(gw.url + "/api")).code == 200
    await gw.shutdown()
    assert [s.resource["service.name"] for s in receiver.spans] == ["edge", "edge", "edge2", "edge2"]


async def test_a_request_in_flight_across_a_reload_still_exports_its_spans(start_upstream, start_gateway, http,
                                                                           collector, tmp_path) -> None:
    """It keeps the runtime it was admitted with, and so the replaced tracer: its spans go out after all."""
    upstream = start_upstream(recording_app(delay=0.3))
    receiver, endpoint = collector()
    text = DEFAULT_SERVER + textwrap.dedent(tracing_config(upstream.url, endpoint))
    gw = await start_gateway(text)
    path = tmp_path / "gateway.yaml"
    path.write_text(text.replace("service_name: edge", "service_name: edge2"))
    in_flight = asyncio.ensure_future(http(gw.url + "/api"))
    await wait_for(lambda: upstream.app.settings["seen"])  # admitted under the first config
    await gw.reload(str(path))
    assert (await in_flight).code == 200
    spans = await receiver.wait_for(2)
    assert sorted((s.kind, s.resource["service.name"]) for s in spans) == [("client", "edge"), ("server", "edge")]
    assert metric(gw, 'gateway_spans_dropped_total{reason="shutdown"}') == 0
