"""Prometheus metrics for one shim application, in its own registry (several apps may share a process).

Labels stay bounded: route kind, HTTP statuses, stage names and SDRS error codes the error table
documents (anything else is "other"); never ids or paths.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from shim import __version__
from shim.config import Settings
from shim.context import PASSTHROUGH
from shim.mappings import Mappings
from shim.translate.actions import LEGACY_ACTION_KEYS
from shim.translate.sdrs_answers import sdrs_error_code
from shim.translate.sdrs_models import SdrsAnswer, SdrsTransportError

NO_UPSTREAM_ANSWER = "none"
OTHER = "other"
GATEWAY_STATUSES = frozenset({502, 503, 504})  # a gateway in front of the upstream could not reach it
disable_created_metrics()  # no `*_created` series: they double the output and nothing here reads them

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other is "other"
NO_ACTION = "none"
# The `action` label: a translated action's legacy key, shortened ("os-reprotect-replication-consistency-
# group" -> "reprotect"); six values.
ACTION_LABELS = {key: key.removeprefix("os-").split("-")[0] for key in LEGACY_ACTION_KEYS}

REFUSAL_REASONS = ("job_running", "in_progress", "settle", "state_store", "lease_lost")

# Up to the legacy passthrough's longest default timeout (300 s).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class RequestTiming:
    """Monotonic timestamps of one request, for the per-stage histograms."""

    started: float
    body_received: float | None = None
    first_sdrs_start: float | None = None
    last_sdrs_end: float | None = None
    sdrs_failure: int | str | None = None  # the last SDRS error status, "timeout" or "unreachable"

    def body_done(self) -> None:
        self.body_received = time.monotonic()

    def sdrs_exchange(self, started: float, ended: float) -> None:
        if self.first_sdrs_start is None or started < self.first_sdrs_start:
            self.first_sdrs_start = started
        if self.last_sdrs_end is None or ended > self.last_sdrs_end:
            self.last_sdrs_end = ended


# The timing of the request being handled. Set by the middleware; the SDRS observer finds it here
# because a handler, and every task it gathers, runs in a copy of the middleware's context.
CURRENT_TIMING: ContextVar[RequestTiming | None] = ContextVar("shim_request_timing", default=None)


def status_label(status: int | str | None) -> str:
    """An HTTP status as a bounded label: the number, a transport outcome, or "other"/"none"."""
    if status is None:
        return NO_UPSTREAM_ANSWER
    if isinstance(status, int):
        return str(status) if 100 <= status <= 599 else OTHER
    return status if status in ("timeout", "unreachable", "too_large", "cancelled") else OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


def action_label(action: object) -> str:
    """A translated action's short name (reprotect, failover, ...), else "none"."""
    return ACTION_LABELS.get(action, NO_ACTION) if isinstance(action, str) else NO_ACTION


def transport_label(error: SdrsTransportError | None) -> str:
    return "unreachable" if error is None else error.label


def config_digest(settings: Settings, mappings: Mappings) -> str:
    """A short hash of the effective configuration and every mapping table: the config version."""
    document = {
        "settings": settings.model_dump(mode="json"),
        "groups": sorted(
            [entry.project_id, entry.rcg_id, entry.protection_group_id, entry.mode]
            for entry in mappings.groups.values()
        ),
        "project_modes": sorted(mappings.project_modes.items()),  # a mode change is a new config version
        "errors": mappings.errors.model_dump(mode="json"),
        "statuses": mappings.statuses.model_dump(mode="json"),
    }
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ShimMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # The process (CPU, memory, open files), Python platform and GC collectors, on this registry.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.build = Info("shim_build", "The shim's version and what it runs on", registry=registry)
        self.build.info({"version": __version__, "python": platform.python_version(),
                         "implementation": platform.python_implementation(), "aiohttp": aiohttp.__version__})
        self.requests = Counter(
            "shim_requests", "Legacy requests answered, by route kind, legacy status and upstream status "
            "(the last SDRS status of a translated call; the legacy endpoint's for a passthrough), HTTP "
            "method and translated action (reprotect, failover, reverse, stop, sync, extend; else none)",
            ["route", "legacy_status", "upstream_status", "method", "action"], registry=registry,
        )
        self.request_seconds = Histogram(
            "shim_request_duration_seconds", "Whole legacy requests, by route kind", ["route"],
            buckets=BUCKETS, registry=registry,
        )
        self.stage_seconds = Histogram(
            "shim_stage_duration_seconds", "Time per stage: read (request body arrived), translate "
            "(until the first SDRS call), sdrs (each SDRS exchange), map_back (after the last SDRS "
            "answer), passthrough (a whole passthrough request)",
            ["stage"], buckets=BUCKETS, registry=registry,
        )
        self.sdrs_errors = Counter(
            "shim_sdrs_errors", "SDRS exchanges that failed, by SDRS error code (a code the error table "
            "does not document is \"other\"; \"none\" is an error status without a code; "
            "timeout/unreachable are transport failures)",
            ["code"], registry=registry,
        )
        self.in_flight = Gauge("shim_requests_in_flight", "Legacy requests being handled", registry=registry)
        self.translated_in_flight = Gauge(
            "shim_translated_in_flight", "Translated calls holding a slot of limits.max_concurrent_translated",
            registry=registry,
        )
        self.translated_rejected = Counter(
            "shim_translated_rejected", "Translated calls refused with 503: limits.max_concurrent_translated "
            "reached", registry=registry,
        )
        self.unverified_bodies_refused = Counter(
            "shim_unverified_bodies_refused", "AK/SK-signed requests refused with 503: their body would pass "
            "limits.unverified_signed_bytes (bodies held before their signature is checked)", registry=registry,
        )
        self.unverified_body_bytes = Gauge(
            "shim_unverified_body_bytes", "Bytes of AK/SK-signed bodies held before their signature is checked",
            registry=registry,
        )
        self.config = Info("shim_config", "Version (digest) of the loaded config and mappings", registry=registry)
        self.config_generation = Gauge(
            "shim_config_generation", "1 at start, +1 per successful reload", registry=registry
        )
        self.mode_version = Gauge(
            "shim_fleet_mode_version", "The fleet's mode version this shim serves (-1: not known from the store)",
            registry=registry)
        self.modes_confirmed = Gauge(
            "shim_fleet_modes_confirmed", "1 while the store confirmed the modes within 3 s; 0: writes and actions "
            "on mapped groups are refused (503)", registry=registry)
        self.groups_switching = Gauge(
            "shim_fleet_groups_switching", "Mapped groups being switched between sides here (their calls are 503)",
            registry=registry)
        self.config_reloads = Counter(
            "shim_config_reloads", "SIGHUP reloads, by result", ["result"], registry=registry
        )
        self.draining = Gauge("shim_draining", "1 once SIGTERM started the drain", registry=registry)
        self.state_store_up = Gauge(
            "shim_state_store_up", "1 while the state store answers; 0: actions are refused (503)", registry=registry
        )
        self.state_store_checks = Counter(
            "shim_state_store_checks", "State store health checks (every 2 s), by result: ok, unavailable",
            ["result"], registry=registry,
        )
        self.state_store_last_ok = Gauge(
            "shim_state_store_last_ok_timestamp_seconds", "Wall-clock time the state store last answered a "
            "check (0: never since start)", registry=registry,
        )
        self.actions_refused = Counter(
            "shim_actions_refused", "Actions the duplicate-action guard refused before sending anything, by "
            "reason: job_running (the previous action's SDRS job still runs: a duplicate), in_progress "
            "(another action holds the group), settle (actions.settle_seconds after an unknown outcome), "
            "state_store (the store is unavailable), lease_lost", ["reason"], registry=registry,
        )
        for reason in REFUSAL_REASONS:  # every series exists from the start: rate() sees the first one
            self.actions_refused.labels(reason)
        self.ready = Gauge(
            "shim_ready", "1 while /readyz answers 200 (started, not draining)", registry=registry
        )
        self.legacy_pool_in_use = Gauge(
            "shim_legacy_pool_in_use", "Connections to the legacy endpoint in use (at most limits.pool_connections)",
            registry=registry,
        )
        self.request_spool_bytes = Gauge(
            "shim_request_spool_bytes", "Bytes of passthrough request bodies held in temporary files while they "
            "arrive or are relayed (at most limits.request_spool_bytes)", registry=registry,
        )
        self.legacy_pool_refused = Counter(
            "shim_legacy_pool_refused", "Requests refused with 503 at once because every connection to the legacy "
            "endpoint was in use", registry=registry,
        )
        self._upstream_down: dict[str, bool] = {}  # the value upstream_up last got, per upstream
        self.upstream_up = Gauge(
            "shim_upstream_up", "1 when the last exchange with the upstream got an answer (other than 502, 503, "
            "504), 0 when it failed; readiness (/readyz) does not depend on it", ["upstream"], registry=registry,
        )
        self.upstream_failures = Counter(
            "shim_upstream_failures", "Failed exchanges with an upstream, by kind: timeout, unreachable, malformed, "
            "too_large, gateway_status (it answered 502, 503 or 504)", ["upstream", "kind"], registry=registry,
        )
        self.legacy_observer = _LegacyMetrics(self)
        self.client_connections = Gauge(
            "shim_client_connections", "Open client connections (at most limits.client_connections)",
            registry=registry,
        )
        self.client_connections_refused = Counter(
            "shim_client_connections_refused", "New client connections closed at once: limits.client_connections "
            "reached and none idle", registry=registry,
        )
        self.client_connections_reclaimed = Counter(
            "shim_client_connections_reclaimed", "Idle keep-alive client connections closed to make room for a "
            "new one at limits.client_connections", registry=registry,
        )
        self.request_heads_refused = Counter(
            "shim_request_heads_refused", "Request heads refused before any handler ran, by reason: timeout "
            "(timeouts.request_head), too_large (limits.request_head_bytes), malformed (the HTTP parser)",
            ["reason"], registry=registry,
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: labels() takes a lock and builds a key each time."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition the scraper asked for (Prometheus text by default, or OpenMetrics)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def config_loaded(self, settings: Settings, mappings: Mappings) -> str:
        digest = config_digest(settings, mappings)
        self.config.info({"digest": digest})
        self.config_generation.inc()
        return digest

    def upstream_states(self) -> dict[str, bool]:
        """Upstream -> True when its last exchange failed (as `shim_upstream_up` says); absent: none yet."""
        return dict(self._upstream_down)

    def upstream_done(self, upstream: str, status: int | None, failure: str | None) -> None:
        """One exchange with `upstream` ("sdrs" or "legacy"): an answer's status, or a failure kind.
        A transport failure or a gateway status (502, 503, 504) marks the upstream down."""
        down = failure is not None or status in GATEWAY_STATUSES
        if self._upstream_down.get(upstream) is not down:  # set on a change only: this runs per exchange
            self._upstream_down[upstream] = down
            self._child(self.upstream_up, upstream).set(0 if down else 1)
        if down:
            self._child(self.upstream_failures, upstream, failure or "gateway_status").inc()

    def sdrs_observer(self, known_codes: Callable[[], Collection[str]]) -> Callable[..., None]:
        """The `SdrsClient` observer: SDRS stage time, error codes, and the request's SDRS span."""

        def observe(started: float, answer: SdrsAnswer | None, error: SdrsTransportError | None) -> None:
            ended = time.monotonic()
            self._child(self.stage_seconds, "sdrs").observe(ended - started)
            self.upstream_done("sdrs", answer.status if answer is not None else None,
                               transport_label(error) if error is not None else None)
            timing = CURRENT_TIMING.get()
            if timing is not None:
                timing.sdrs_exchange(started, ended)
                if error is not None or (answer is not None and answer.status >= 400):
                    timing.sdrs_failure = answer.status if answer is not None else transport_label(error)
            if error is not None:
                self._child(self.sdrs_errors, transport_label(error)).inc()
            elif answer is not None and answer.status >= 400:
                code = sdrs_error_code(answer)
                label = NO_UPSTREAM_ANSWER if code is None else code if code in known_codes() else OTHER
                self._child(self.sdrs_errors, label).inc()

        return observe

    def action_refused(self, reason: str) -> None:
        self._child(self.actions_refused, reason if reason in REFUSAL_REASONS else OTHER).inc()

    def state_store_checked(self, up: bool) -> None:
        self.state_store_up.set(1 if up else 0)
        self._child(self.state_store_checks, "ok" if up else "unavailable").inc()
        if up:
            self.state_store_last_ok.set(time.time())

    def request_done(self, route: str, legacy_status: str, upstream_status: str, timing: RequestTiming,
                     method: str = OTHER, action: str = NO_ACTION) -> None:
        ended = time.monotonic()
        self._child(self.requests, route, legacy_status, upstream_status, method, action).inc()
        self._child(self.request_seconds, route).observe(ended - timing.started)
        if route == PASSTHROUGH:
            self._child(self.stage_seconds, "passthrough").observe(ended - timing.started)
            return
        for stage, seconds in translated_stages(timing, ended).items():
            self._child(self.stage_seconds, stage).observe(seconds)


class _LegacyMetrics:
    """The legacy passthrough's observer (shim/upstreams/passthrough.py LegacyObserver)."""

    def __init__(self, metrics: ShimMetrics) -> None:
        self._metrics = metrics

    def pool_refused(self) -> None:
        self._metrics.legacy_pool_refused.inc()

    def exchange_done(self, status: int | None, failure: str | None) -> None:
        self._metrics.upstream_done("legacy", status, failure)


def translated_stages(timing: RequestTiming, ended: float) -> dict[str, float]:
    """read: until the body had arrived; translate: from then to the first SDRS call (or the end);
    map_back: from the last SDRS answer to the end. A stage that did not happen is left out."""
    stages: dict[str, float] = {}
    translate_from = timing.started
    if timing.body_received is not None and timing.body_received <= (timing.first_sdrs_start or ended):
        stages["read"] = max(0.0, timing.body_received - timing.started)
        translate_from = timing.body_received
    stages["translate"] = max(0.0, (timing.first_sdrs_start or ended) - translate_from)
    if timing.last_sdrs_end is not None:
        stages["map_back"] = max(0.0, ended - timing.last_sdrs_end)
    return stages
