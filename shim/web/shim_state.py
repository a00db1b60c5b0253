"""What the handlers share: `ShimState` (settings, mappings, upstream clients, guard, metrics), found
on the application under `STATE`. Its own module so that handlers never import the app back."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from shim.config import Settings
from shim.context import AUDIT
from shim.credentials import NO_KEYS, KeyRing
from shim.mappings import Mappings
from shim.migration.shadow import ShadowRunner
from shim.state.action_guard import ActionGuard
from shim.state.fleet import FleetView
from shim.state.group_notes import GroupNotes
from shim.state.retired import RetiredIndex
from shim.tracing import NO_TRACING, Tracing
from shim.translate.legacy import LegacyError
from shim.translate.ownership import KnownHoldings
from shim.upstreams.passthrough import LegacyPassthrough
from shim.upstreams.sdrs_client import SdrsClient
from shim.web.metrics import ShimMetrics

OVERLOAD_RETRY_AFTER_SECONDS = 1
_HOLDS_SLOT = web.RequestKey("holds_translated_slot", bool)


@dataclass
class Health:
    """What /readyz reports: ready once the upstream sessions are open, until SIGTERM starts the drain."""

    started: bool = False
    draining: bool = False
    in_flight: int = 0
    store_up: bool = True  # the state store answered its last ping (actions fail closed without it)

    @property
    def ready(self) -> bool:
        return self.started and not self.draining


class TranslatedSlots:
    """At most `limit()` translated calls at once. A call past it gets a legacy 503 before any SDRS
    request; `admit` is called by `handlers.sdrs_calls`, the slot is freed when the request ends."""

    def __init__(self, limit: Callable[[], int], metrics: ShimMetrics) -> None:
        self._limit = limit
        self._metrics = metrics
        self.active = 0

    def admit(self, request: web.Request) -> None:
        if request.get(_HOLDS_SLOT):
            return
        limit = self._limit()
        if self.active >= limit:
            self._metrics.translated_rejected.inc()
            request[AUDIT]["rejected"] = "limits.max_concurrent_translated"
            raise LegacyError(
                503, f"The migration proxy is serving its limit of {limit} translated calls; try again shortly.",
                retry_after=OVERLOAD_RETRY_AFTER_SECONDS,
            )
        self.active += 1
        request[_HOLDS_SLOT] = True
        self._metrics.translated_in_flight.set(self.active)

    def release(self, request: web.Request) -> None:
        if request.get(_HOLDS_SLOT):
            request[_HOLDS_SLOT] = False
            self.active -= 1
            self._metrics.translated_in_flight.set(self.active)


class UnverifiedBodies:
    """The bytes of AK/SK-signed bodies read but not yet checked, all requests together, at most
    `limit()` (limits.unverified_signed_bytes): the signature is checked only once the whole body is
    in, and anyone who knows an access key id (no secret) can send such bodies."""

    def __init__(self, limit: Callable[[], int], metrics: ShimMetrics) -> None:
        self._limit = limit
        self._metrics = metrics
        self.held = 0

    def take(self, size: int) -> None:
        """Hold `size` more bytes, or a legacy 503 (the caller gives back what it took before)."""
        if self.held + size > self._limit():
            self._metrics.unverified_bodies_refused.inc()
            raise LegacyError(503, "The migration proxy is checking as many AK/SK-signed bodies as it holds at "
                                   "once; try again shortly.", retry_after=OVERLOAD_RETRY_AFTER_SECONDS)
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


@dataclass
class ShimState:
    """What handlers need. On reload `settings`, `mappings` and `keys` are each swapped whole, so
    every lookup sees one complete version."""

    settings: Settings
    mappings: Mappings
    sdrs: SdrsClient
    legacy: LegacyPassthrough
    actions: ActionGuard
    metrics: ShimMetrics = field(default_factory=ShimMetrics)
    keys: KeyRing = field(default_factory=lambda: NO_KEYS)  # `aksk`: access key -> key pair
    tracing: Tracing = NO_TRACING  # spans and trace context (shim/tracing): the one that does nothing when off
    server_tls: ssl.SSLContext | None = None  # the listener's when it serves https; SIGHUP reloads its certificate
    health: Health = field(default_factory=Health)
    translated: TranslatedSlots = field(init=False)
    unverified_bodies: UnverifiedBodies = field(init=False)
    notes: GroupNotes = field(init=False)  # descriptions, removed pairs, deleted groups (same store as the guard)
    retired: RetiredIndex = field(init=False)  # deleted groups, removed pairs: in memory, kept fresh from the store
    holdings: KnownHoldings = field(init=False)  # mapped groups' SDRS pairs and disks last seen (SDRS outages)
    shadow: ShadowRunner = field(init=False)  # shadow mode's comparisons and dry runs (README, Migration)
    config_digest: str = ""
    # `mappings` is what requests see: the file's entries with the fleet's modes (translate/fleet.py);
    # `file_mappings` the file as loaded; `fleet` keeps the modes fresh from the store.
    file_mappings: Mappings = field(init=False)
    fleet: FleetView = field(init=False)
    config_path: str | None = None  # the file SIGHUP reloads (`shim serve --config`), for the console's commands
    # (project_id, rcg_id) -> the last mode change a reload made in this process (the console shows it)
    mode_changes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.file_mappings = self.mappings
        self.fleet = FleetView(self.actions.store, lambda: self.file_mappings, self._serve)
        self.translated = TranslatedSlots(lambda: self.settings.limits.max_concurrent_translated, self.metrics)
        self.unverified_bodies = UnverifiedBodies(lambda: self.settings.limits.unverified_signed_bytes, self.metrics)
        self.retired = RetiredIndex()
        self.notes = GroupNotes(self.actions.store, self.retired)
        self.holdings = KnownHoldings()
        self.shadow = ShadowRunner(lambda: self.settings, lambda: self.mappings, self.actions.store,
                                   self.metrics.registry)

    def _serve(self, mappings: Mappings) -> None:
        self.mappings = mappings


STATE = web.AppKey("state", ShimState)
