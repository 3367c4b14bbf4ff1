"""Tracing's pure parts: traceparent parsing, the per-try header swap, the chunked encoder, the bounded queue."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from gateway.config import TracingConfig
from gateway.errors import BadGateway, UpstreamConnectError, UpstreamTimeout
from gateway.tracing import Tracing, parse_traceparent
from gateway.tracing.export import ENCODE_CHUNK, LoopExporter, encode
from gateway.tracing.spans import _error_type, _with_traceparent, format_traceparent
from gateway.tracing.wire import encode_request
from gateway.upstream.client import ResponseInterrupted
from tests.support.otlp import decode

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize("value, expected", [
    (f"00-{TRACE}-{PARENT}-01", (int(TRACE, 16), int(PARENT, 16), 1)),
    (f"00-{TRACE}-{PARENT}-00", (int(TRACE, 16), int(PARENT, 16), 0)),
    (f"00-{TRACE}-{PARENT}-03", (int(TRACE, 16), int(PARENT, 16), 1)),  # only the sampled bit is read
    (f"00-{TRACE}-{PARENT}-02", (int(TRACE, 16), int(PARENT, 16), 0)),
    (None, None),
    ("", None),
    (f"00-{TRACE.upper()}-{PARENT}-01", None),
    (f"ff-{TRACE}-{PARENT}-01", None),
    (f"01-{TRACE}-{PARENT}-01", None),
    (f"00-{'0' * 32}-{PARENT}-01", None),
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE}-{PARENT}-1", None),
    (f"00-{TRACE}-{PARENT}-01 ", None),
    (f" 00-{TRACE}-{PARENT}-01", None),
    (f"00-{TRACE}-{PARENT}-01,00-{TRACE}-{PARENT}-01", None),  # two header lines, joined
    (f"00-{TRACE[:-1]}-{PARENT}-01", None),
    (f"00_{TRACE}_{PARENT}_01", None),
    (f"00-{TRACE}-{PARENT}-01\n", None),
])
def test_parse_traceparent(value: str | None, expected: tuple[int, int, int] | None) -> None:
    context = parse_traceparent(value)
    if expected is None:
        assert context is None
        return
    assert context is not None
    assert (context.trace_id, context.span_id, int(context.trace_flags)) == expected
    assert context.is_remote


@pytest.mark.parametrize("flags, text", [(TraceFlags(1), "01"), (TraceFlags(0), "00")])
def test_format_traceparent_round_trips(flags: TraceFlags, text: str) -> None:
    context = SpanContext(int(TRACE, 16), int(PARENT, 16), is_remote=False, trace_flags=flags)
    assert format_traceparent(context) == f"00-{TRACE}-{PARENT}-{text}"
    assert parse_traceparent(format_traceparent(context)) == SpanContext(
        int(TRACE, 16), int(PARENT, 16), is_remote=True, trace_flags=flags)


@pytest.mark.parametrize("fields, expected", [
    ([("A", "1"), ("traceparent", "old"), ("B", "2")], [("A", "1"), ("traceparent", "new"), ("B", "2")]),
    ([("traceparent", "old")], [("traceparent", "new")]),
    ([("A", "1")], [("A", "1"), ("traceparent", "new")]),
    ([], [("traceparent", "new")]),
])
def test_a_try_swaps_the_traceparent_in_a_copy(fields: list[tuple[str, str]],
                                               expected: list[tuple[str, str]]) -> None:
    before = list(fields)
    assert _with_traceparent(fields, "new") == expected
    assert fields == before  # the parts of an aggregate share the list


@pytest.mark.parametrize("exc, expected", [
    (UpstreamTimeout("t", sent=True), "timeout"),
    (UpstreamConnectError("c", refused=True), "connect"),
    (BadGateway("garbage"), "reset"),
    (ResponseInterrupted("cut", upstream_fault=True), "response_interrupted"),
    (ResponseInterrupted("gone", upstream_fault=False), "client_closed"),
    (asyncio.CancelledError(), "cancelled"),
    (ValueError("bug"), "ValueError"),
])
def test_error_type_of_a_failed_try(exc: BaseException, expected: str) -> None:
    assert _error_type(exc) == expected


def _spans(count: int, config: TracingConfig | None = None) -> tuple[Tracing, list]:
    tracing = Tracing(config or TracingConfig(max_queue_spans=1000, max_batch_spans=1000))
    for i in range(count):
        tracing.tracer.start_span(f"s{i}", attributes={"i": i}).end()
    return tracing, list(tracing.exporter.queue)


def test_a_batch_encoded_in_chunks_is_one_request_with_every_span() -> None:
    count = ENCODE_CHUNK * 2 + 5
    _, spans = _spans(count)
    body = asyncio.run(encode(spans))
    received = decode(body)
    assert [s.name for s in received] == [f"s{i}" for i in range(count)]
    assert [s.attributes["i"] for s in received] == list(range(count))
    assert {s.resource["service.name"] for s in received} == {"gateway"}


def test_the_queue_is_bounded_and_drops_are_reported() -> None:
    dropped: list[tuple[str, int]] = []
    exporter = LoopExporter(TracingConfig(max_queue_spans=3, max_batch_spans=2),
                            on_dropped=lambda reason, n: dropped.append((reason, n)))
    tracing, spans = _spans(5, TracingConfig(max_queue_spans=1000, max_batch_spans=1000))
    for span in spans:
        exporter.on_end(span)
    assert list(exporter.queue) == spans[:3]
    assert dropped == [("queue_full", 1), ("queue_full", 1)]


def test_sample_ratio_zero_records_no_new_trace() -> None:
    tracing, spans = _spans(50, TracingConfig(sample_ratio=0.0))
    assert spans == []


def _varied_spans() -> list:
    tracing = Tracing(TracingConfig(service_name="edge"))
    tracer = tracing.tracer
    remote = set_span_in_context(NonRecordingSpan(parse_traceparent(f"00-{TRACE}-{PARENT}-01")))  # type: ignore[arg-type]
    server = tracer.start_span("GET /api", context=remote, kind=SpanKind.SERVER, attributes={
        "text": "x", "unicode": "ü→", "long": "y" * 300, "zero": 0, "small": 127, "port": 9000, "big": 2**62,
        "negative": -5, "float": 0.5, "true": True, "false": False, "empty": ""})
    client = tracer.start_span("GET", context=set_span_in_context(server), kind=SpanKind.CLIENT,
                               attributes={"http.request.resend_count": 1})
    client.set_status(Status(StatusCode.ERROR))
    client.end()
    server.set_status(Status(StatusCode.ERROR, "a description"))
    server.end()
    ok = tracer.start_span("root", kind=SpanKind.INTERNAL)
    ok.set_status(Status(StatusCode.OK))
    ok.end()
    tracer.start_span("bare", kind=SpanKind.PRODUCER).end()
    listed = tracer.start_span("listed", kind=SpanKind.CONSUMER, attributes={"list": ["a", "b"]})  # the fallback
    listed.add_event("event", {"k": 1})
    listed.end()
    return list(tracing.exporter.queue)


@pytest.mark.parametrize("pick", [slice(0, 4), slice(0, 5), slice(2, 3), slice(0, 0)],
                         ids=["gateway spans", "with a span it hands over", "one root span", "none"])
def test_the_wire_encoder_writes_what_the_otlp_encoder_does(pick: slice) -> None:
    spans = _varied_spans()[pick]
    assert ExportTraceServiceRequest.FromString(encode_request(spans)) == encode_spans(spans)
