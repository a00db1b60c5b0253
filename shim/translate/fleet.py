"""The fleet's modes (pure): which side serves a mapped group at mode version N, and when a switch is
complete. The I/O (the store's documents, heartbeats, the refresh loop) is shim/state/fleet.py; the
README's "One switch for the fleet" says the same for operators.

The store holds one document, `fleet-modes`: a version counter and, per mapped group (`P:R`, the
id_keys of project and RCG) and per project with a default, a `ModeRecord`: the mode, the version that
set it, the mode before it, whether the switch is `complete`, and `seed` (the mapping file's mode it
was last taken from). Every change bumps the document's version.

A switch that moves a group from one side to the other (`legacy`/`shadow`, served by the legacy
endpoint, to `sdrs`, or back) is incomplete until every shim has stopped serving the old side: until
then every shim that knows of it answers the group's calls with a legacy 503 (`switching`), so there
is no moment at which both sides serve the group. It is complete when every member shim's heartbeat
reports the switch's version (or a later one), or `SWITCH_BOUND_SECONDS` after a shim first saw it,
which is longer than any shim's view may be old while it still sends a write or an action
(`STALE_SECONDS` plus one refresh). A switch within one side (`legacy` <-> `shadow`) is complete at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shim.translate.legacy import LegacyError, id_key
from shim.translate.tables import MODES, GroupMapping, Mappings, Mode

REFRESH_SECONDS = 1.0  # each shim reads the mode version (one small read) and heartbeats this often
STALE_SECONDS = 3.0  # a view not confirmed by the store for this long refuses writes and actions (503)
SWITCH_BOUND_SECONDS = 5.0  # a switch completes at the latest this long after a shim first saw it
MEMBER_FORGET_SECONDS = 600.0  # a member shim whose heartbeat is this old is forgotten (crashed pods)
AUDIT_KEEP = 1000  # audit records kept in the store (the oldest go first)
SWITCHING_RETRY_AFTER_SECONDS = 1

Document = dict[str, Any]


def side(mode: str | None) -> str:
    """Who serves a group (or a project's other calls) in this mode: `sdrs` or `legacy`."""
    return "sdrs" if mode == "sdrs" else "legacy"


def group_name(project_id: str, rcg_id: str) -> str:
    return f"{id_key(project_id)}:{id_key(rcg_id)}"


@dataclass(frozen=True)
class ModeRecord:
    mode: str | None  # a project without a default: None
    version: int
    previous: str | None
    complete: bool = True
    seed: str | None = None

    @property
    def switching(self) -> bool:
        """The switch moves the group between sides and not every shim has left the old one yet."""
        return not self.complete and side(self.previous) != side(self.mode)

    def to_document(self) -> Document:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> ModeRecord:
        mode, previous = document.get("mode"), document.get("previous")
        return cls(mode if mode in MODES else None, int(document.get("version") or 0),
                   previous if previous in MODES else None, bool(document.get("complete", True)),
                   document.get("seed") if document.get("seed") in MODES else None)


@dataclass(frozen=True)
class FleetModes:
    """The store's `fleet-modes` document, read."""

    version: int = 0
    groups: Mapping[str, ModeRecord] = dataclasses.field(default_factory=dict)
    projects: Mapping[str, ModeRecord] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, document: Mapping[str, Any] | None) -> FleetModes:
        document = document or {}
        return cls(int(document.get("version") or 0),
                   {str(k): ModeRecord.of(v) for k, v in (document.get("groups") or {}).items()},
                   {str(k): ModeRecord.of(v) for k, v in (document.get("projects") or {}).items()})

    def to_document(self) -> Document:
        return {"version": self.version, "groups": {k: v.to_document() for k, v in self.groups.items()},
                "projects": {k: v.to_document() for k, v in self.projects.items()}}

    def pending(self) -> list[tuple[str, str, ModeRecord]]:
        """(kind, name, record) of every switch not yet complete."""
        return [(kind, name, record) for kind, records in (("group", self.groups), ("project", self.projects))
                for name, record in records.items() if record.switching]


# -- changes (each returns the new document, or None when nothing changes) ---------------------------


def seeded(fleet: FleetModes, mappings: Mappings) -> FleetModes | None:
    """The mapping file's entries and project defaults the store does not know yet, added as they are
    (complete: a seed is no switch)."""
    groups, projects = dict(fleet.groups), dict(fleet.projects)
    version = fleet.version + 1
    for (project, rcg), entry in mappings.groups.items():
        name = f"{project}:{rcg}"
        if name not in groups:
            groups[name] = ModeRecord(entry.mode, version, None, True, entry.mode)
    for project, mode in mappings.project_modes.items():
        if project not in projects:
            projects[project] = ModeRecord(mode, version, None, True, mode)
    if groups == fleet.groups and projects == fleet.projects:
        return None
    return FleetModes(version, groups, projects)


def switched(fleet: FleetModes, kind: str, name: str, mode: str | None, seed: str | None = None) -> FleetModes:
    """`name` (a group `P:R` or a project `P`) set to `mode` at a new version."""
    version = fleet.version + 1
    records = dict(fleet.groups if kind == "group" else fleet.projects)
    before = records.get(name)
    old = before.mode if before is not None else None
    records[name] = ModeRecord(mode, version, old, side(old) == side(mode) or before is None,
                               seed if seed is not None else (before.seed if before else None))
    if kind == "group":
        return FleetModes(version, records, fleet.projects)
    return FleetModes(version, fleet.groups, records)


def completed(fleet: FleetModes, kind: str, name: str, version: int) -> FleetModes | None:
    """The switch at `version` marked complete (None: already, or superseded by a later one)."""
    records = dict(fleet.groups if kind == "group" else fleet.projects)
    record = records.get(name)
    if record is None or record.version != version or record.complete:
        return None
    records[name] = dataclasses.replace(record, complete=True)
    if kind == "group":
        return FleetModes(fleet.version + 1, records, fleet.projects)
    return FleetModes(fleet.version + 1, fleet.groups, records)


def file_changes(fleet: FleetModes, old: Mappings, new: Mappings) -> list[tuple[str, str, str | None, str | None]]:
    """The switches an edited mapping file asks for: (kind, name, from, to) for each entry (and project
    default) whose mode the file changed while the store still holds the file's old mode as its seed.
    A shim whose copy of the file is late never undoes a newer change: only a change of its own file
    counts, and only from the seed the store recorded."""
    changes: list[tuple[str, str, str | None, str | None]] = []
    for key, entry in new.groups.items():
        before = old.groups.get(key)
        name = f"{key[0]}:{key[1]}"
        record = fleet.groups.get(name)
        if before is not None and before.mode != entry.mode and record is not None and record.seed == before.mode:
            changes.append(("group", name, record.mode, entry.mode))
    for project in set(old.project_modes) | set(new.project_modes):
        was, now = old.project_modes.get(project), new.project_modes.get(project)
        record = fleet.projects.get(project)
        if was != now and (record.seed if record else None) == was:
            changes.append(("project", project, record.mode if record else None, now))
    return changes


def check_switch(fleet: FleetModes, mappings: Mappings, kind: str, name: str, mode: str | None) -> None:
    """Refuse (ValueError) a switch the mapping rules forbid: a fully migrated project (default `sdrs`)
    has no `legacy` or `shadow` group."""
    if kind == "group":
        project = name.split(":", 1)[0]
        if mode != "sdrs" and _project_mode(fleet, mappings, project) == "sdrs":
            raise ValueError(f"project {project} is fully migrated (its default mode is sdrs): set the project's "
                             f"mode to legacy or shadow first")
        return
    if mode == "sdrs":
        others = [entry.rcg_id for (project, _), entry in mappings.groups.items() if project == name
                  and _group_mode(fleet, entry) != "sdrs"]
        if others:
            raise ValueError(f"project {name} still has groups not in sdrs: {', '.join(sorted(others))}")


def _project_mode(fleet: FleetModes, mappings: Mappings, project: str) -> str | None:
    record = fleet.projects.get(project)
    return record.mode if record is not None else mappings.project_modes.get(project)


def _group_mode(fleet: FleetModes, entry: GroupMapping) -> str:
    record = fleet.groups.get(group_name(entry.project_id, entry.rcg_id))
    return record.mode if record is not None and record.mode is not None else entry.mode


# -- what a shim serves ------------------------------------------------------------------------------


def effective(mappings: Mappings, fleet: FleetModes | None, *, confirmed: bool, done: frozenset[str] = frozenset()
              ) -> Mappings:
    """The mapping file's entries with the fleet's modes: what this shim serves. `done`: switches this
    shim judged complete before the store says so (`kind:name@version`). `confirmed`: the view is fresh
    enough to serve writes and actions."""
    if fleet is None:  # the store never answered: the file's modes, writes and actions refused
        return dataclasses.replace(mappings, unconfirmed=True, mode_version=None)
    groups: dict[tuple[str, str], GroupMapping] = {}
    fenced: set[tuple[str, str]] = set()
    for key, entry in mappings.groups.items():
        name = f"{key[0]}:{key[1]}"
        record = fleet.groups.get(name)
        if record is not None and record.mode is not None:
            mode: Mode = record.mode  # type: ignore[assignment]
            if record.mode != entry.mode:  # the file's mode, unless the fleet's differs
                entry = dataclasses.replace(entry, mode=mode, mode_source="fleet")
            if record.switching and f"group:{name}@{record.version}" not in done:
                fenced.add(key)
        groups[key] = entry
    project_modes: dict[str, Mode] = dict(mappings.project_modes)
    fenced_projects: set[str] = set()
    for project, record in fleet.projects.items():
        if record.mode is None:
            project_modes.pop(project, None)
        else:
            project_modes[project] = record.mode  # type: ignore[assignment]
        if record.switching and f"project:{project}@{record.version}" not in done:
            fenced_projects.add(project)
    fenced_projects |= {project for project, _ in fenced}
    return Mappings(groups, mappings.errors, mappings.statuses, mappings.source, project_modes,
                    fenced=frozenset(fenced), fenced_projects=frozenset(fenced_projects),
                    unconfirmed=not confirmed, mode_version=fleet.version)


def switching_error(what: str) -> LegacyError:
    return LegacyError(503, f"{what} is being switched between the legacy endpoint and SDRS by every migration "
                            "proxy in front of it; try again shortly.", retry_after=SWITCHING_RETRY_AFTER_SECONDS)


def refuses_unconfirmed(mappings: Mappings, method: str, project_id: str | None, rcg_id: str | None) -> bool:
    """A write or an action about a mapped group (or in a project with mapped groups, for calls that
    name no group) while this shim cannot confirm the fleet's modes: fail closed."""
    if not mappings.unconfirmed or method in ("GET", "HEAD") or project_id is None:
        return False
    if rcg_id is not None:
        return mappings.entry(project_id, rcg_id) is not None or id_key(project_id) in mappings.project_modes
    return bool(mappings.entries_of_project(project_id)) or id_key(project_id) in mappings.project_modes


def all_acknowledged(version: int, heartbeats: Mapping[str, Mapping[str, Any] | None]) -> bool:
    """Every member shim serves `version` or later (a member without a heartbeat has not)."""
    def served(beat: Mapping[str, Any] | None) -> int:
        try:
            return int((beat or {}).get("version") or 0)
        except (TypeError, ValueError):
            return 0

    return bool(heartbeats) and all(served(beat) >= version for beat in heartbeats.values())
