"""Tracing (SPEC §9): OpenTelemetry spans for proxied requests, exported over OTLP/HTTP.

- :mod:`gateway.tracing.spans`: :class:`Tracing`, built once per config from its ``tracing``
  section (SDK tracer provider, ``ParentBased(TraceIdRatioBased(sample_ratio))``); a request's
  :class:`RequestTrace` (its server span) and one client span per upstream try.
- :mod:`gateway.tracing.export`: :class:`LoopExporter`, the span processor that queues
  finished spans (bounded) and ships them in batches with the gateway's own
  ``AsyncHTTPClient``, on the loop; :mod:`gateway.tracing.wire` writes the OTLP protobuf bytes.

A config without ``tracing`` builds none of this: ``Runtime.tracing`` is None and a request
makes no span object and no tracer call.
"""

from .export import LoopExporter
from .spans import RequestTrace, Tracing, parse_traceparent

__all__ = ["Tracing", "RequestTrace", "LoopExporter", "parse_traceparent"]
