"""Tracing on: OpenTelemetry's SDK behind shim.tracing's interface (imported only when enabled).

Spans (README, Operations, Tracing):
- `{METHOD} {route}` (SERVER): one per legacy call, the child of the client's `traceparent` when it
  sent a valid one; ends with the legacy status, the side that served it (`shim.route`) and, for a
  translated call, the group, action and SDRS job ids.
- `sdrs {METHOD}` / `legacy {METHOD}` (CLIENT): one per exchange with that upstream; its context is
  the `traceparent` the upstream receives.
- `store {operation}` (INTERNAL): one per state-store operation made while a request is handled.

Attributes are ids, methods, statuses and routes only: never a header value, a query string or a body
(tokens and signatures cannot become attributes). The provider is the shim's own (the global one is
left alone); spans are exported in batches over OTLP/HTTP by the SDK's thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shim.tracing import CURRENT_TRACE, TRACEPARENT, Span, TraceIds, Tracing, valid_traceparent

# The OpenTelemetry context of the current request's server span: the parent of its exchange and
# store spans (also in the tasks it starts, which copy it).
_PARENT: ContextVar[Context | None] = ContextVar("tracing_parent", default=None)
_PROPAGATOR = TraceContextTextMapPropagator()

# The audit record's fields that become server span attributes (ids and outcomes, nothing else).
_AUDIT_ATTRIBUTES = (
    ("project_id", "shim.project_id"),
    ("rcg_id", "shim.rcg_id"),
    ("protection_group_id", "shim.protection_group_id"),
    ("action", "shim.action"),
    ("sdrs_status", "shim.sdrs_status"),
    ("sdrs_code", "shim.sdrs_code"),
    ("outcome", "shim.outcome"),
)
# Ids SDRS paths carry: /v1/{project}/server-groups/{id}, /v1/{project}/jobs/{id}, /v1/{project}/replications/{id}
_SDRS_PATH_IDS = re.compile(r"/v1/([^/?]+)(?:/(server-groups|jobs|replications)/([^/?]+))?")
_SDRS_ID_ATTRIBUTE = {"server-groups": "sdrs.server_group_id", "jobs": "sdrs.job_id",
                      "replications": "sdrs.replication_id"}


class OtelSpan(Span):
    active = True

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool | list[str]) -> None:
        self._span.set_attribute(key, value)

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def end(self, status: int | None = None, error: str | None = None) -> None:
        self._end({}, status, error)

    def _end(self, attributes: dict[str, Any], status: int | None, error: str | None) -> None:
        """Ends the span with `attributes` added, in one call (each SDK call takes the span's lock)."""
        span = self._span
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
        if attributes:
            span.set_attributes(attributes)
        if error is not None or (status is not None and status >= 500):
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def request_done(self, status: int | None, route: str, audit: Mapping[str, Any]) -> None:
        attributes: dict[str, Any] = {"shim.route": route}
        for field, attribute in _AUDIT_ATTRIBUTES:
            value = audit.get(field)
            if isinstance(value, str | int) and value != "":
                attributes[attribute] = value
        job_ids = audit.get("job_ids")
        if job_ids:
            attributes["shim.job_ids"] = [str(job) for job in job_ids]
        self._end(attributes, status, None if status is not None else "cancelled")


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, *, endpoint: str, service_name: str, sample_ratio: float, export_interval_seconds: float,
                 export_timeout_seconds: float, version: str) -> None:
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": version}),
            # A client's sampled (or not) traceparent decides; a trace the shim starts is kept at this ratio.
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=export_timeout_seconds)
        self._provider.add_span_processor(BatchSpanProcessor(
            exporter, schedule_delay_millis=export_interval_seconds * 1000,
            export_timeout_millis=export_timeout_seconds * 1000))
        self._tracer = self._provider.get_tracer("evs-sdrs-shim", version)

    def request_span(self, method: str, route: str | None, headers: Mapping[str, str]) -> Span:
        parent = headers.get(TRACEPARENT)
        context = None
        if parent is not None and valid_traceparent(parent) is not None:
            context = _PROPAGATOR.extract(headers)
        attributes = {"http.request.method": method}
        if route is not None:
            attributes["http.route"] = route
        span = self._tracer.start_span(f"{method} {route}" if route else method, context=context,
                                       kind=SpanKind.SERVER, attributes=attributes)
        ids = span.get_span_context()
        CURRENT_TRACE.set(TraceIds(format_trace_id(ids.trace_id), format_span_id(ids.span_id)))
        _PARENT.set(trace.set_span_in_context(span))
        return OtelSpan(span)

    def exchange_span(self, peer: str, method: str, path: str | None, address: str) -> Span:
        parent = _PARENT.get()
        if parent is None:
            return super().exchange_span(peer, method, path, address)
        attributes: dict[str, str] = {"http.request.method": method, "server.address": address, "shim.peer": peer}
        if path is not None:
            attributes["url.path"] = path.split("?", 1)[0]
            if peer == "sdrs":
                attributes.update(_sdrs_ids(path))
        span = self._tracer.start_span(f"{peer} {method}", context=parent, kind=SpanKind.CLIENT,
                                       attributes=attributes)
        return OtelSpan(span)

    def store_span(self, backend: str, operation: str, key: str | None) -> Span:
        parent = _PARENT.get()
        if parent is None:
            return super().store_span(backend, operation, key)
        attributes = {"db.system.name": backend, "db.operation.name": operation}
        if key is not None:
            attributes["shim.store.key"] = key
        return OtelSpan(self._tracer.start_span(f"store {operation}", context=parent, kind=SpanKind.INTERNAL,
                                                attributes=attributes))

    async def close(self) -> None:
        # Flushing waits for the exporter (bounded by its timeout): off the event loop.
        await asyncio.to_thread(self._provider.shutdown)


def _sdrs_ids(path: str) -> dict[str, str]:
    """The project and resource ids an SDRS path names, as attributes."""
    found = _SDRS_PATH_IDS.match(path)
    if found is None:
        return {}
    ids = {"sdrs.project_id": found[1]}
    if found[2] is not None:
        ids[_SDRS_ID_ATTRIBUTE[found[2]]] = found[3]
    return ids

