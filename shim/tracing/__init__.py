"""Tracing: the one place that makes spans and carries W3C trace context (README, Operations, Tracing).

A small shared kernel, like shim/context.py: it imports nothing of the shim, and nothing of
OpenTelemetry either. The web layer, the upstream clients and the traced state store ask a `Tracing`
for spans through four calls (`request_span`, `exchange_span`, `store_span`, `close`) and handle the
`Span` they get back (`active`, `set`, `headers`, `request_done`, `end`). No handler knows about it.

Off (`tracing.enabled: false`, the default) the `Tracing` is this module's own: every call returns
`NO_SPAN`, whose methods do nothing, OpenTelemetry is never imported, and the state store is not
wrapped at all. What off still does costs one header lookup per request: the client's `traceparent`
trace id goes into the log lines of its request, and the header itself travels on unchanged to the
legacy endpoint (like every end-to-end header) and to SDRS.

On, `shim.tracing.otel` (the `tracing` extra: opentelemetry-sdk, OTLP over HTTP) makes a server
span per legacy call (its parent: the client's `traceparent`), a client span per SDRS exchange and
per legacy exchange (whose context is the `traceparent` that hop receives) and a span per state-store
operation, and exports them in batches from a thread of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex; version ff and all-zero ids invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceIds:
    """The trace of the request being handled, for its log lines: the trace id (the client's, or the
    shim's own root) and, with tracing on, the shim's server span for the request."""

    trace_id: str
    span_id: str | None = None


# Set at the start of every legacy call (by `request_span`); each request runs in its own task, hence
# its own copy, so the value never reaches another request's lines.
CURRENT_TRACE: ContextVar[TraceIds | None] = ContextVar("current_trace", default=None)


def valid_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a well-formed W3C `traceparent` value, else None."""
    if not value:
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None or found[1] == "ff" or found[2] == _ZERO_TRACE or found[3] == _ZERO_SPAN:
        return None
    if found[1] == "00" and len(value.strip()) != 55:  # version 00 has exactly four fields
        return None
    return found[2], found[3]


def client_trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's trace context headers, as they go on to SDRS with tracing off: a valid
    `traceparent` and its `tracestate` (nothing for an invalid or absent one)."""
    parent = headers.get(TRACEPARENT)
    if parent is None or valid_traceparent(parent) is None:
        return {}
    state = headers.get(TRACESTATE)
    return {TRACEPARENT: parent.strip()} if state is None else {TRACEPARENT: parent.strip(), TRACESTATE: state}


class Span:
    """One operation's span. This base is the span of tracing off: it records nothing, sends
    nothing on, and every method returns at once."""

    active = False  # a real span: the caller may spend work on its attributes (e.g. redacting a path)

    def set(self, key: str, value: str | int | float | bool | list[str]) -> None:
        """One attribute (never a credential: callers pass ids, methods, statuses)."""

    def headers(self) -> dict[str, str]:
        """The trace context the next hop receives from this span: `traceparent` (and `tracestate`)."""
        return {}

    def end(self, status: int | None = None, error: str | None = None) -> None:
        """Ended with the HTTP `status` the peer answered, or the `error` kind that stopped it."""

    def request_done(self, status: int | None, route: str, audit: Mapping[str, Any]) -> None:
        """A legacy call's server span ends: the legacy status (None: the client went away), the side
        that served it, and the group, action and SDRS job ids from its audit record."""


NO_SPAN = Span()


class Tracing:
    """Tracing off: no spans. The only work done is the log lines' trace id (see the module)."""

    enabled = False

    def request_span(self, method: str, route: str | None, headers: Mapping[str, str]) -> Span:
        """The server span of one legacy call (`route`: its translated route's template; None for a call
        passed through), made current for everything the request does."""
        parent = headers.get(TRACEPARENT)
        if parent is None:
            CURRENT_TRACE.set(None)
            return NO_SPAN
        ids = valid_traceparent(parent)
        CURRENT_TRACE.set(None if ids is None else TraceIds(ids[0]))
        return NO_SPAN

    def exchange_span(self, peer: str, method: str, path: str | None, address: str) -> Span:
        """A client span for one exchange with `peer` ("sdrs" or "legacy"), a child of the current
        request's span (none outside a request)."""
        return NO_SPAN

    def store_span(self, backend: str, operation: str, key: str | None) -> Span:
        """A span for one state-store operation, a child of the current request's span (none outside a
        request: the store watcher's pings make no traces)."""
        return NO_SPAN

    async def close(self) -> None:
        """Export what is still buffered (tracing on); at shutdown."""


NO_TRACING = Tracing()


class TracingUnavailable(Exception):
    """`tracing.enabled` without the `tracing` extra installed."""


def build_tracing(enabled: bool, *, endpoint: str, service_name: str, sample_ratio: float,
                  export_interval_seconds: float, export_timeout_seconds: float, version: str) -> Tracing:
    """The shim's `Tracing`: `NO_TRACING` when off; OpenTelemetry's when on (TracingUnavailable
    without the extra)."""
    if not enabled:
        return NO_TRACING
    check_available()
    from shim.tracing.otel import OtelTracing

    return OtelTracing(endpoint=endpoint, service_name=service_name, sample_ratio=sample_ratio,
                       export_interval_seconds=export_interval_seconds,
                       export_timeout_seconds=export_timeout_seconds, version=version)


def check_available() -> None:
    """TracingUnavailable unless the `tracing` extra's packages can be imported."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as err:
        raise TracingUnavailable(
            f"tracing.enabled needs the tracing extra (pip install 'evs-sdrs-shim[tracing]'): {err}") from None
