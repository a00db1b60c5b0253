"""What the shim keeps about mapped groups beside the guard's record, in the state store:
- the legacy `description` of a group (SDRS has no such field; without it the client would see drift);
- that a group was renamed through the shim (it then reads with SDRS's name, not the legacy name
  discovery recorded; translate/identity.py);
- the pairs it removed from a group (their legacy DELETE then answers 202 and their GET 404, as a
  removed legacy pair's delete would end, instead of reaching the legacy endpoint);
- the groups it deleted (their mapping entries are retired: `shim validate` and the report say so).
Keys are built from normalised ids (`id_key`), so any spelling finds the note. Deleted groups and
removed pairs also go into the retired index (retired.py), which every shim keeps in memory.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from shim.state.retired import Retired, RetiredIndex
from shim.state.store import StateStore, StoreUnavailable
from shim.translate.legacy import id_key
from shim.translate.tables import GroupMapping

log = logging.getLogger("shim.state")


def description_key(project_id: str, group_id: str) -> str:
    return f"description:{id_key(project_id)}:{id_key(group_id)}"


def renamed_key(project_id: str, group_id: str) -> str:
    return f"renamed:{id_key(project_id)}:{id_key(group_id)}"


def removed_pair_key(project_id: str, pair_id: str) -> str:
    return f"removed-pair:{id_key(project_id)}:{id_key(pair_id)}"


def retired_key(project_id: str, rcg_id: str) -> str:
    return f"retired:{id_key(project_id)}:{id_key(rcg_id)}"


class GroupNotes:
    def __init__(self, store: StateStore, retired: RetiredIndex | None = None) -> None:
        self.store = store
        self.index = retired if retired is not None else RetiredIndex()

    async def description(self, entry: GroupMapping) -> tuple[bool, str | None]:
        """(known, description): known is False when none was ever set or the store cannot say."""
        try:
            note = await self.store.get(description_key(entry.project_id, entry.protection_group_id))
        except StoreUnavailable as err:
            log.warning("state store unavailable: read shown without its description", extra={"error": str(err)[:300]})
            return False, None
        return (True, note.get("description")) if note is not None else (False, None)

    async def set_description(self, entry: GroupMapping, description: str | None) -> None:
        """Raises StoreUnavailable: the write it belongs to is refused before anything else changes."""
        await self.store.put(description_key(entry.project_id, entry.protection_group_id),
                             {"description": description, "set_at": time.time()})

    async def renamed(self, entry: GroupMapping, strict: bool = False) -> bool:
        """Whether the group was renamed through the shim; False when the store cannot say (`strict`:
        raises StoreUnavailable instead, for a write that must not guess)."""
        if entry.identity is None:
            return False  # nothing recorded: SDRS's name shows either way
        try:
            return await self.store.get(renamed_key(entry.project_id, entry.protection_group_id)) is not None
        except StoreUnavailable as err:
            if strict:
                raise
            log.warning("state store unavailable: read shown with the recorded legacy name",
                        extra={"error": str(err)[:300]})
            return False

    async def note_renamed(self, entry: GroupMapping, name: str) -> None:
        """Raises StoreUnavailable (the rename is done in SDRS; the client's retry notes it)."""
        await self.store.put(renamed_key(entry.project_id, entry.protection_group_id),
                             {"name": name, "renamed_at": time.time()})

    async def removed_pair_if_known(self, project_id: str, pair_id: str) -> dict[str, Any] | None:
        """The per-key note of a removed pair, or None when there is none or the store cannot say: the
        retired index (in memory) already holds every removal noted since it was built, so a read
        needs the store only for notes of older versions."""
        try:
            return await self.removed_pair(project_id, pair_id)
        except StoreUnavailable:
            return None

    async def removed_pair(self, project_id: str, pair_id: str) -> dict[str, Any] | None:
        return await self.store.get(removed_pair_key(project_id, pair_id))

    async def note_removed_pair(self, entry: GroupMapping, pair_id: str, job_id: str,
                                volume_ids: tuple[str, ...] = ()) -> None:
        now = time.time()
        await self.store.put(removed_pair_key(entry.project_id, pair_id), {
            "pair_id": pair_id, "rcg_id": entry.rcg_id, "protection_group_id": entry.protection_group_id,
            "job_id": job_id, "removed_at": now, "volume_ids": list(volume_ids)})
        await self.index.note(self.store, Retired(entry.project_id, entry.rcg_id, entry.protection_group_id,
                                                    job_id, now, pair_id, volume_ids))
        recorded = entry.identity.by_sdrs_id(pair_id) if entry.identity is not None else None
        if recorded is not None and id_key(recorded.legacy_id) != id_key(pair_id):
            # Clients know the pair by its legacy id: that id stays removed too, also once the mapping entry
            # (and the correspondence it records) is gone.
            await self.index.note(self.store, Retired(entry.project_id, entry.rcg_id, entry.protection_group_id,
                                                        job_id, now, recorded.legacy_id, volume_ids))

    async def note_retired(self, entry: GroupMapping, job_id: str) -> None:
        now = time.time()
        await self.store.put(retired_key(entry.project_id, entry.rcg_id), {
            "rcg_id": entry.rcg_id, "protection_group_id": entry.protection_group_id, "job_id": job_id,
            "deleted_at": now})
        await self.index.note(self.store, Retired(entry.project_id, entry.rcg_id, entry.protection_group_id,
                                                    job_id, now))

    async def retired(self, entry: GroupMapping) -> dict[str, Any] | None:
        return await self.store.get(retired_key(entry.project_id, entry.rcg_id))
