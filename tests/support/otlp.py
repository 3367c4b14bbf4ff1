"""A real OTLP/HTTP trace receiver for tests: a Tornado app on loopback that decodes the
``ExportTraceServiceRequest`` protobufs it is sent (``POST /v1/traces``), as a collector would.

``delay`` holds every answer that long (a slow collector); ``status`` is the answer's status
(a collector that refuses); ``rejected`` answers a partial success rejecting that many spans.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from tornado.web import Application, RequestHandler

KINDS = {SpanProto.SPAN_KIND_SERVER: "server", SpanProto.SPAN_KIND_CLIENT: "client",
         SpanProto.SPAN_KIND_INTERNAL: "internal"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


@dataclass
class ReceivedSpan:
    """One span as the collector decoded it; ids as lower-case hex ("" for no parent)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: str
    resource: dict[str, Any] = field(default_factory=dict)
    duration_seconds: float = 0.0


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


def decode(body: bytes) -> list[ReceivedSpan]:
    """Every span of one ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest.FromString(body)
    out = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    name=span.name, kind=KINDS.get(span.kind, str(span.kind)), trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in span.attributes}, status=STATUS[span.status.code],
                    resource=resource, duration_seconds=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e9))
    return out


class _Traces(RequestHandler):
    async def post(self) -> None:
        receiver: OtlpReceiver = self.application.settings["receiver"]
        receiver.requests.append(self.request.headers.get("Content-Type", ""))
        if receiver.delay:
            await asyncio.sleep(receiver.delay)
        if receiver.status != 200:
            self.set_status(receiver.status)
            return
        receiver.spans.extend(decode(self.request.body))
        answer = ExportTraceServiceResponse()
        if receiver.rejected:
            answer.partial_success.rejected_spans = receiver.rejected
        self.set_header("Content-Type", "application/x-protobuf")
        self.write(answer.SerializeToString())


class OtlpReceiver:
    """What the collector got: ``spans`` (decoded), ``requests`` (each export's Content-Type)."""

    def __init__(self, delay: float = 0.0, status: int = 200, rejected: int = 0) -> None:
        self.delay = delay
        self.status = status
        self.rejected = rejected
        self.spans: list[ReceivedSpan] = []
        self.requests: list[str] = []

    def app(self) -> Application:
        return Application([(r"/v1/traces", _Traces)], receiver=self)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedSpan]:
        """The spans received once there are at least ``count`` (fails after ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.spans) < count:
            if loop.time() > deadline:
                raise AssertionError(f"the collector got {len(self.spans)} span(s), expected {count}")
            await asyncio.sleep(0.01)
        return self.spans
