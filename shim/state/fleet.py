"""The fleet's modes in the state store (the I/O of translate/fleet.py; README, One switch for the fleet).

Keys: `fleet-modes` (the modes document), `fleet-modes-version` (its version alone: what each shim
reads every `REFRESH_SECONDS`, the whole document only when it moved), `fleet-audit` (who switched what,
when, from, to), `fleet-members` (the shims that serve from this store, by id) and one
`fleet-heartbeat:<id>` per shim (the mode version it serves, written every refresh).

`FleetView` is one shim's copy, kept in memory: a request asks the effective `Mappings` it builds (a
dict lookup), never the store. The view is confirmed by a refresh that read the store; one that has
not been confirmed for `STALE_SECONDS` refuses writes and actions on mapped groups (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from shim.state.action_guard import store_unavailable
from shim.state.store import Document, StateStore, StoreUnavailable
from shim.translate import fleet as rules
from shim.translate.fleet import FleetModes
from shim.translate.tables import GroupMapping, Mappings

log = logging.getLogger("shim.fleet")

MODES_KEY = "fleet-modes"
VERSION_KEY = "fleet-modes-version"
AUDIT_KEY = "fleet-audit"
MEMBERS_KEY = "fleet-members"
HEARTBEAT_PREFIX = "fleet-heartbeat:"


def new_shim_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{os.urandom(4).hex()}"


async def read_modes(store: StateStore) -> FleetModes:
    return FleetModes.of(await store.get(MODES_KEY))


async def change_modes(store: StateStore, change: Callable[[FleetModes], FleetModes | None]) -> FleetModes:
    """Apply `change` to the store's document atomically (and bump the version key); the result."""
    result: list[FleetModes] = []

    def apply(current: Document | None) -> Document | None:
        fleet = FleetModes.of(current)
        changed = change(fleet)
        result[:] = [changed if changed is not None else fleet]
        return current if changed is None else changed.to_document()

    await store.update(MODES_KEY, apply)
    await store.put(VERSION_KEY, {"version": result[0].version})
    return result[0]


async def seed(store: StateStore, mappings: Mappings) -> FleetModes:
    return await change_modes(store, lambda fleet: rules.seeded(fleet, mappings))


async def audit(store: StateStore, records: list[Document]) -> None:
    def add(current: Document | None) -> Document:
        kept = list((current or {}).get("records") or []) + records
        return {"records": kept[-rules.AUDIT_KEEP:]}

    await store.update(AUDIT_KEY, add)


async def switch(store: StateStore, mappings: Mappings, kind: str, name: str, mode: str | None, who: str,
                 seed_mode: str | None = None) -> tuple[FleetModes, Document]:
    """Set one group's or project's mode (after seeding the file's entries); the audit record. Raises
    ValueError for a switch the mapping rules forbid."""
    await seed(store, mappings)
    before: list[str | None] = []

    def change(fleet: FleetModes) -> FleetModes | None:
        records = fleet.groups if kind == "group" else fleet.projects
        current = records.get(name)
        before[:] = [current.mode if current else None]
        if current is not None and current.mode == mode and seed_mode is None:
            return None
        rules.check_switch(fleet, mappings, kind, name, mode)
        return rules.switched(fleet, kind, name, mode, seed_mode)

    fleet = await change_modes(store, change)
    record = {"at": time.time(), "who": who, "kind": kind, "name": name, "from": before[0], "to": mode,
              "version": fleet.version}
    if before[0] != mode:
        await audit(store, [record])
    return fleet, record


def _completed(fleet: FleetModes, *, kind: str, name: str, version: int) -> FleetModes | None:
    return rules.completed(fleet, kind, name, version)


class FleetView:
    """One shim's view of the fleet's modes, refreshed in the background (`run`)."""

    def __init__(self, store: StateStore, file_mappings: Callable[[], Mappings],
                 on_change: Callable[[Mappings], None]) -> None:
        self.store = store
        self.shim_id = new_shim_id()
        self._file = file_mappings
        self._on_change = on_change
        self.fleet: FleetModes | None = None
        self.confirmed_at: float | None = None  # monotonic start of the last refresh that read the store
        self._first_seen: dict[str, float] = {}  # `kind:name@version` -> monotonic, switches seen pending
        self._done: set[str] = set()  # switches judged complete here, before the store says so
        self._pending_file: tuple[Mappings, Mappings] | None = None
        self._joined = False
        self._lock = asyncio.Lock()
        # Calls about groups in flight, by the view (epoch) they were routed with: a heartbeat
        # acknowledges a version only once no call routed by an older view is still running.
        self.epoch = 0
        self._in_flight: dict[int, int] = {}
        self.acknowledged = 0

    def request_started(self) -> int:
        epoch = self.epoch
        self._in_flight[epoch] = self._in_flight.get(epoch, 0) + 1
        return epoch

    def request_ended(self, epoch: int) -> None:
        left = self._in_flight[epoch] - 1
        if left:
            self._in_flight[epoch] = left
        else:
            del self._in_flight[epoch]

    async def _drained(self, within: float) -> bool:
        """No call routed by an older view is running (waits up to `within`)."""
        deadline = time.monotonic() + within
        while any(epoch < self.epoch for epoch in self._in_flight):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # -- what requests see ----------------------------------------------------------------------------

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None and time.monotonic() - self.confirmed_at <= rules.STALE_SECONDS

    @property
    def version(self) -> int | None:
        return None if self.fleet is None else self.fleet.version

    def effective(self) -> Mappings:
        return rules.effective(self._file(), self.fleet, confirmed=self.confirmed, done=frozenset(self._done))

    def publish(self) -> None:
        """Hand the effective mappings to the web layer (one attribute swap)."""
        self._on_change(self.effective())

    def describe(self) -> dict[str, Any]:
        pending = [] if self.fleet is None else self.fleet.pending()
        return {"mode_version": self.version, "modes_confirmed": self.confirmed, "shim_id": self.shim_id,
                "switching": [f"{kind} {name} -> {record.mode}" for kind, name, record in pending
                              if f"{kind}:{name}@{record.version}" not in self._done]}

    # -- keeping it ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """At start: seed the store from the mapping file, join the members, read the view."""
        try:
            await seed(self.store, self._file())
            await self._join()
        except StoreUnavailable as err:
            log.warning("state store unavailable at start: the fleet's modes are not known; writes and actions on "
                        "mapped groups are refused until it answers", extra={"error": str(err)[:300]})
        await self.refresh()

    async def _join(self) -> None:
        if self._joined:
            return

        def joined(current: Document | None) -> Document:
            members = dict((current or {}).get("members") or {})
            members[self.shim_id] = time.time()
            return {"members": members}

        await self.store.put(HEARTBEAT_PREFIX + self.shim_id, {"version": 0, "at": time.time()})
        await self.store.update(MEMBERS_KEY, joined)
        self._joined = True

    async def leave(self) -> None:
        """On a clean stop: no switch waits for this shim any more."""
        def left(current: Document | None) -> Document:
            members = dict((current or {}).get("members") or {})
            members.pop(self.shim_id, None)
            return {"members": members}

        with contextlib.suppress(StoreUnavailable):
            await self.store.update(MEMBERS_KEY, left)
            await self.store.put(HEARTBEAT_PREFIX + self.shim_id, None)

    def file_changed(self, old: Mappings, new: Mappings) -> None:
        """The mapping file changed (SIGHUP, or the watcher): at the next refresh, new entries are seeded
        and each mode the file changed becomes the fleet's switch (retried while the store is down)."""
        self._pending_file = (old, new) if self._pending_file is None else (self._pending_file[0], new)

    async def _apply_file(self) -> None:
        if self._pending_file is None:
            return
        old, new = self._pending_file
        await seed(self.store, new)
        changes = rules.file_changes(await read_modes(self.store), old, new)
        for kind, name, _was, mode in changes:
            with contextlib.suppress(ValueError):  # the file's own rules were checked at load
                await switch(self.store, new, kind, name, mode, f"file:{self.shim_id}", seed_mode=mode or "")
        self._pending_file = None

    async def refresh(self) -> None:
        async with self._lock:
            started = time.monotonic()
            try:
                await self._join()
                await self._apply_file()
                version = (await self.store.get(VERSION_KEY) or {}).get("version")
                if self.fleet is None or version != self.fleet.version:
                    fleet = await read_modes(self.store)
                    if rules.seeded(fleet, self._file()) is not None:  # a store that forgot (or never knew)
                        fleet = await seed(self.store, self._file())
                    self._adopt(fleet)
                self.confirmed_at = started
                self.publish()
                await self._heartbeat()
                if await self._complete_switches():
                    self._adopt(await read_modes(self.store))
                    self.publish()
                    await self._heartbeat()
            except StoreUnavailable as err:
                if self.confirmed_at is not None and time.monotonic() - self.confirmed_at > rules.STALE_SECONDS:
                    log.warning("state store unavailable: the fleet's modes cannot be confirmed; writes and actions "
                                "on mapped groups are refused", extra={"error": str(err)[:300]})
                self.publish()

    def _adopt(self, fleet: FleetModes) -> None:
        old = self.fleet
        self.fleet = fleet
        self.epoch += 1
        for kind, name, record in fleet.pending():
            self._first_seen.setdefault(f"{kind}:{name}@{record.version}", time.monotonic())
        if old is None:
            return
        for kind, records, old_records in (("group", fleet.groups, old.groups),
                                           ("project", fleet.projects, old.projects)):
            for name, record in records.items():
                before = old_records.get(name)
                if before is None or (before.mode, before.complete) == (record.mode, record.complete):
                    continue
                log.info("fleet mode %s: %s %s -> %s", "switched" if record.complete else "switching", kind,
                         before.mode, record.mode,
                         extra={"kind": kind, "target": name, "old_mode": before.mode, "new_mode": record.mode,
                                "mode_version": record.version, "complete": record.complete})

    async def _heartbeat(self) -> None:
        """Say which mode version this shim serves: the view's, once the calls routed by older views
        have ended (else the version acknowledged before, and the next refresh tries again)."""
        assert self.fleet is not None
        if await self._drained(rules.REFRESH_SECONDS):
            self.acknowledged = self.fleet.version
        await self.store.put(HEARTBEAT_PREFIX + self.shim_id, {"version": self.acknowledged, "at": time.time()})

    async def _complete_switches(self) -> bool:
        """Mark complete each pending switch every member acknowledged, or that this shim has seen for
        longer than the bound. True when the store changed."""
        if self.fleet is None:
            return False
        pending = self.fleet.pending()
        if not pending:
            return False
        members = list(((await self.store.get(MEMBERS_KEY)) or {}).get("members") or {})
        if self.shim_id not in members:  # a store that forgot the members (a Redis restart): join again
            self._joined = False
            await self._join()
            members.append(self.shim_id)
        beats = dict(zip(members, await asyncio.gather(*(self.store.get(HEARTBEAT_PREFIX + member)
                                                         for member in members)), strict=True))
        await self._forget_dead(beats)
        now = time.monotonic()
        changed = False
        for kind, name, record in pending:
            tag = f"{kind}:{name}@{record.version}"
            bound = now - self._first_seen.get(tag, now) >= rules.SWITCH_BOUND_SECONDS
            if bound or rules.all_acknowledged(record.version, beats):
                self._done.add(tag)
                await change_modes(self.store, functools.partial(_completed, kind=kind, name=name,
                                                                 version=record.version))
                changed = True
        return changed

    async def _forget_dead(self, beats: dict[str, Document | None]) -> None:
        dead = [member for member, beat in beats.items()
                if member != self.shim_id and time.time() - float((beat or {}).get("at") or 0)
                > rules.MEMBER_FORGET_SECONDS]
        if not dead:
            return
        for member in dead:
            beats.pop(member)

        def forgotten(current: Document | None) -> Document:
            members = {k: v for k, v in ((current or {}).get("members") or {}).items() if k not in dead}
            return {"members": members}

        await self.store.update(MEMBERS_KEY, forgotten)

    async def recheck(self, entry: GroupMapping) -> None:
        """Under the group's lease, before an action or a write goes to SDRS: the store's mode is still
        `sdrs` and no switch of the group is pending (raises the legacy 503 otherwise)."""
        try:
            # The version alone, one small read: the whole document (every mapped group's record) is read
            # only when it moved since this shim's view, as the refresh does.
            version = (await self.store.get(VERSION_KEY) or {}).get("version")
            fleet = self.fleet if self.fleet is not None and version == self.fleet.version \
                else await read_modes(self.store)
        except StoreUnavailable:
            raise store_unavailable("it could not confirm which side serves the group") from None
        record = fleet.groups.get(rules.group_name(entry.project_id, entry.rcg_id))
        if record is not None and (record.mode != "sdrs" or record.switching):
            raise rules.switching_error(f"Replication consistency group {entry.rcg_id}")

    async def run(self) -> None:
        """Refresh every `REFRESH_SECONDS` (the first at once), until cancelled."""
        while True:
            await asyncio.sleep(rules.REFRESH_SECONDS)
            await self.refresh()
