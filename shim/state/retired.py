"""What the shim took away from the legacy world, kept in memory for the hot path (README, State).

When the shim deletes a mapped group (its protection group) or removes a pair from one (the SDRS pair
is deleted, its disks kept), the legacy endpoint still holds a stale copy: the group reads `available`
there, its pairs sit on the same disks. That copy must never come back, whatever happens to the
mapping entry afterwards (removed, set to `legacy`): the group stays 404 and out of lists, a pair the
shim removed stays 404 (its DELETE 202), and no legacy pair may be created on its disks again.

The facts live in the state store, shared by every shim that uses it, as one index document
(`retired-index`) beside a version counter (`retired-index-version`). Each shim keeps the index in
memory: it adds its own facts at once, and reads the version (one small read) every
`REFRESH_SECONDS` with the store's health check, the whole index only when the version moved. So a
call about an unmapped group pays no store round trip, and another shim's deletion is known here
within seconds; long before an operator edits the mapping entry. Also written per key (`retired:`,
`removed-pair:` in group_notes.py), as older versions did: `fold_in_older_notes` adds those of the
mapping file's entries at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shim.state.store import Document, StateStore, StoreUnavailable
from shim.translate.legacy import id_key
from shim.translate.tables import GroupMapping

log = logging.getLogger("shim.state")

INDEX_KEY = "retired-index"
VERSION_KEY = "retired-index-version"


@dataclass(frozen=True)
class Retired:
    """A group the shim deleted (`pair_id` None) or a pair it removed from a mapped group."""

    project_id: str
    rcg_id: str
    protection_group_id: str
    job_id: str = ""
    at: float = 0.0
    pair_id: str | None = None
    volume_ids: tuple[str, ...] = ()

    @property
    def entry(self) -> GroupMapping:
        """The mapped group it was (or belonged to)."""
        return GroupMapping(self.project_id, self.rcg_id, self.protection_group_id)

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"project_id": self.project_id, "rcg_id": self.rcg_id,
                                    "protection_group_id": self.protection_group_id, "job_id": self.job_id,
                                    "at": self.at}
        if self.pair_id is not None:
            document.update(pair_id=self.pair_id, volume_ids=list(self.volume_ids))
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Retired:
        pair_id = document.get("pair_id")
        return cls(str(document.get("project_id", "")), str(document.get("rcg_id", "")),
                   str(document.get("protection_group_id", "")), str(document.get("job_id") or ""),
                   float(document.get("at") or 0.0), None if pair_id is None else str(pair_id),
                   tuple(str(volume) for volume in document.get("volume_ids") or ()))


@dataclass
class ProjectRetired:
    """One project's facts, by id_key."""

    groups: dict[str, Retired] = field(default_factory=dict)  # rcg -> the deleted group
    pairs: dict[str, Retired] = field(default_factory=dict)  # pair -> the removed pair
    disks: dict[str, Retired] = field(default_factory=dict)  # disk -> the removed pair it was in


class RetiredIndex:
    """The in-memory copy of the store's index; lookups are dict reads (no I/O)."""

    def __init__(self) -> None:
        self._projects: dict[str, ProjectRetired] = {}
        self.version: int | None = None  # the store's version last loaded (None: never)

    # -- lookups (the hot path) ------------------------------------------------------------------

    def of_project(self, project_id: str) -> ProjectRetired | None:
        return self._projects.get(id_key(project_id))

    def group(self, project_id: str, rcg_id: str) -> Retired | None:
        facts = self._projects.get(id_key(project_id))
        return None if facts is None else facts.groups.get(id_key(rcg_id))

    def pair(self, project_id: str, pair_id: str) -> Retired | None:
        facts = self._projects.get(id_key(project_id))
        return None if facts is None else facts.pairs.get(id_key(pair_id))

    def disk(self, project_id: str, volume_id: str) -> Retired | None:
        facts = self._projects.get(id_key(project_id))
        return None if facts is None else facts.disks.get(id_key(volume_id))

    # -- keeping it -------------------------------------------------------------------------------

    def _add(self, fact: Retired) -> None:
        facts = self._projects.setdefault(id_key(fact.project_id), ProjectRetired())
        if fact.pair_id is None:
            facts.groups[id_key(fact.rcg_id)] = fact
            return
        facts.pairs[id_key(fact.pair_id)] = fact
        for volume in fact.volume_ids:
            facts.disks[id_key(volume)] = fact

    def load(self, document: Document | None) -> None:
        projects, self._projects = self._projects, {}
        try:
            for section in ("groups", "pairs"):
                for item in ((document or {}).get(section) or {}).values():
                    self._add(Retired.from_document(item))
        except (AttributeError, TypeError, ValueError):
            self._projects = projects  # an index this version cannot read: keep what it knew
            log.warning("state store: the retired-groups index could not be read; kept the one in memory")

    async def refresh(self, store: StateStore) -> None:
        """Load the store's index when its version moved (raises StoreUnavailable)."""
        version = _version(await store.get(VERSION_KEY))
        if version == self.version:
            return
        self.load(await store.get(INDEX_KEY))
        self.version = version

    async def note(self, store: StateStore, fact: Retired) -> None:
        """Add one fact, here at once and in the store (raises StoreUnavailable)."""
        self._add(fact)
        section, key = ("groups", fact.rcg_id) if fact.pair_id is None else ("pairs", fact.pair_id)
        name = f"{id_key(fact.project_id)}:{id_key(key)}"

        def added(current: Document | None) -> Document:
            document = dict(current or {})
            document[section] = {**(document.get(section) or {}), name: fact.to_document()}
            return document

        await store.update(INDEX_KEY, added)
        await store.update(VERSION_KEY, lambda current: {"version": _version(current) + 1, "at": time.time()})

    async def fold_in_older_notes(self, store: StateStore, entries: Iterable[GroupMapping]) -> None:
        """Groups deleted by an older version of the shim (its per-key notes) join the index, for the
        entries the mapping file still has."""
        from shim.state.group_notes import retired_key

        missing = [entry for entry in entries if self.group(entry.project_id, entry.rcg_id) is None]
        notes = await asyncio.gather(*(store.get(retired_key(entry.project_id, entry.rcg_id)) for entry in missing))
        for entry, note in zip(missing, notes, strict=True):
            if note is not None:
                await self.note(store, Retired(entry.project_id, entry.rcg_id,
                                               str(note.get("protection_group_id") or entry.protection_group_id),
                                               str(note.get("job_id") or ""), float(note.get("deleted_at") or 0)))


def _version(document: Document | None) -> int:
    try:
        return int((document or {}).get("version") or 0)
    except (TypeError, ValueError):
        return 0


async def start_index(index: RetiredIndex, store: StateStore, entries: Iterable[GroupMapping]) -> None:
    """At start: the store's index, with the older per-key notes of the mapping file's entries."""
    try:
        await index.refresh(store)
        await index.fold_in_older_notes(store, entries)
    except StoreUnavailable as err:
        log.warning("state store unavailable at start: groups deleted through the shim are not known until it "
                    "answers", extra={"error": str(err)[:300]})
