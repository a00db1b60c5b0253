"""Which side owns a legacy call (pure): every call about a group is served by exactly one side.

During a phased migration some groups live in SDRS (mapped) and the rest behind the legacy endpoint.
A mapped group's legacy copy is stale: nothing about it may reach the legacy endpoint, and nothing
about an unmapped group reaches SDRS. For a mapped group (SDRS owns it):
- reads of the group and its pairs come from SDRS, in the legacy shape; actions are translated;
- `PUT`/`DELETE` of the group and `DELETE` of one of its pairs are translated (writes.py, legacy
  preconditions first); a create or update of another group that names one of its pairs or disks is
  refused (`REFUSED_STATUS`);
- lists merge SDRS's items with the legacy endpoint's, the legacy copies of mapped groups and pairs
  hidden; a pair list filtered by a mapped group comes from SDRS alone.
What the shim deleted (a group) or removed from a mapped group (a pair, and its disks) stays SDRS's,
whatever becomes of the mapping entry (the web layer adds the state store's retired index to the
holdings). For an unmapped group (the legacy endpoint owns it) every call is relayed unchanged, body
as sent; so is every call of a project that maps no group and where the shim deleted nothing. When
SDRS cannot answer (`sdrs_cannot_answer`), the holdings last seen (`KnownHoldings`) stand in for it,
and a call nothing known ties to a mapped group is the legacy endpoint's. Ids are compared by `id_key`
(case and dashes do not matter). A mapped group's pairs are named by their SDRS ids or by the legacy
pair ids its mapping entry records (translate/identity.py): both are the group's. The README's
ownership table says the same for operators.

Modes (README, Migration): only an entry in mode `sdrs` hands its group to SDRS. A `legacy` or
`shadow` entry leaves the group to the legacy endpoint exactly as an unmapped one (`shadow_entries`
tells the shim which of them to compare beside it); a project whose default mode is `sdrs` is fully
migrated (`Mappings.fully_migrated`): the legacy endpoint owns none of its groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shim.translate.fleet import switching_error
from shim.translate.legacy import LegacyError, id_key, is_legacy_id
from shim.translate.tables import GroupMapping, Mappings

# The one status every refusal of a legacy write on an SDRS-owned group carries. 400, not 409: golangsdk
# shows the body of a 400 (and 404, 500, 504) but prints a fixed sentence for a 409, and the message
# names the SDRS call the user must make instead; the legacy pages allow either (a wrong state is 400).
REFUSED_STATUS = 400


def require_legacy_ids(project_id: str, item_id: str | None = None, what: str = "id") -> None:
    """Legacy ids in the RCG and pair URLs are UUIDs (dashes optional) or 32 hex digits; anything else
    is a malformed URL, refused before it reaches either side (a legacy endpoint that trims or decodes
    it might read a mapped group's id in it)."""
    if not is_legacy_id(project_id):
        raise LegacyError(400, "Malformed request url: the project id must be a UUID.")
    if item_id is not None and not is_legacy_id(item_id):
        raise LegacyError(400, f"Malformed request url: the {what} must be a UUID.")


def mapped_group(mappings: Mappings, project_id: str, rcg_id: str) -> GroupMapping | None:
    """The mapping that hands this group to SDRS (mode `sdrs`), or None (the legacy endpoint owns it)."""
    require_legacy_ids(project_id, rcg_id, "replication consistency group id")
    if mappings.fenced_projects and mappings.switching(project_id, rcg_id):
        raise _switching(f"Replication consistency group {rcg_id}")
    return mappings.group(project_id, rcg_id)


def project_mappings(mappings: Mappings, project_id: str) -> dict[str, GroupMapping]:
    """id_key(protection group) -> entry for every group of the project that SDRS owns (mode `sdrs`)."""
    require_legacy_ids(project_id)
    if mappings.fenced_projects and mappings.switching(project_id):
        raise _switching(f"A replication consistency group of project {project_id}")
    return mappings.groups_of_project(project_id)


def _switching(what: str) -> LegacyError:
    """A group between sides (translate/fleet.py): neither side serves it until the switch completes."""
    return switching_error(what)


def shadow_entries(mappings: Mappings, project_id: str) -> dict[str, GroupMapping]:
    """id_key(RCG) -> entry for every group of the project in mode `shadow`: the legacy endpoint serves
    them, and the shim compares what SDRS would have answered."""
    return mappings.shadow_by_project.get(id_key(project_id), {})


@dataclass(frozen=True)
class SdrsHoldings:
    """What SDRS holds of a project's mapped groups, for telling legacy copies apart."""

    rcg_ids: frozenset[str]  # id_key of every mapped RCG, whether SDRS still has it or not
    # id_key of each SDRS pair of a mapped group, and of each legacy pair id recorded for one -> its group
    pair_ids: Mapping[str, GroupMapping]
    volume_ids: Mapping[str, GroupMapping]  # id_key of each disk of those pairs -> its group

    @classmethod
    def of(cls, mapped: Mapping[str, GroupMapping], pairs: Iterable[tuple[str, str, list[str]]]) -> SdrsHoldings:
        """`pairs`: (pair id, protection group id, volume ids) of the project's SDRS pairs."""
        recorded = [(entry, pair) for entry in mapped.values()
                    for pair in (entry.identity.pairs if entry.identity else ())]
        # What the mapping file records is the group's even when SDRS cannot be read (an outage): its
        # legacy pair ids and their production disks.
        pair_ids: dict[str, GroupMapping] = {id_key(pair.legacy_id): entry for entry, pair in recorded}
        volume_ids: dict[str, GroupMapping] = {id_key(pair.volume_id): entry for entry, pair in recorded
                                               if pair.volume_id}
        for pair_id, group_id, volumes in pairs:
            entry = mapped.get(id_key(group_id))
            if entry is None:
                continue
            pair_ids[id_key(pair_id)] = entry
            for volume in volumes:
                volume_ids[id_key(volume)] = entry
        return cls(frozenset(id_key(entry.rcg_id) for entry in mapped.values()), pair_ids, volume_ids)

    def filter_names_a_mapped_disk(self, filters: Mapping[str, str]) -> bool:
        """A list filtered by a disk of a mapped group's pair is about that group: SDRS alone answers it
        (only a stale legacy copy could match on the legacy side)."""
        named = [filters.get("volume_id", ""), *filters.get("volume_ids", "").split(",")]
        return any(id_key(volume.strip()) in self.volume_ids for volume in named if volume.strip())

    def is_legacy_copy_of_group(self, item: Mapping[str, Any]) -> bool:
        return _key(item.get("id")) in self.rcg_ids

    def is_legacy_copy_of_pair(self, item: Mapping[str, Any]) -> bool:
        """A legacy pair that stands for a mapped group's pair: it is (or was) in a mapped group, has a
        mapped pair's id, or replicates one of a mapped pair's disks."""
        if _key(item.get("replication_consistency_group_id")) in self.rcg_ids:
            return True
        if _key(item.get("id")) in self.pair_ids:
            return True
        return any(id_key(volume) in self.volume_ids for volume in _volume_list(item.get("volume_ids")))


class KnownHoldings:
    """What SDRS held of each project's mapped groups when this shim last read the project's whole pair
    list (in memory): what ties a call to a mapped group while SDRS cannot answer (README, Who serves
    which call). `learn` says whether anything changed (the caller then keeps a copy in the state
    store, for a shim that starts while SDRS is down)."""

    def __init__(self) -> None:
        self._by_project: dict[str, SdrsHoldings] = {}

    def learn(self, project_id: str, holdings: SdrsHoldings) -> bool:
        known = self._by_project.get(id_key(project_id))
        self._by_project[id_key(project_id)] = holdings
        return known is None or known.pair_ids != holdings.pair_ids or known.volume_ids != holdings.volume_ids

    def of_project(self, project_id: str) -> SdrsHoldings | None:
        return self._by_project.get(id_key(project_id))


def holdings_document(holdings: SdrsHoldings) -> dict[str, Any]:
    """The holdings as a store document: id_key of each pair and disk -> [RCG id, protection group id]."""
    return {section: {key: [entry.rcg_id, entry.protection_group_id] for key, entry in items.items()}
            for section, items in (("pairs", holdings.pair_ids), ("disks", holdings.volume_ids))}


def holdings_from_document(project_id: str, document: Mapping[str, Any] | None) -> SdrsHoldings | None:
    """Holdings a shim kept in the store (None: none, or unreadable)."""
    if not document:
        return None
    try:
        pair_ids, volume_ids = (
            {str(key): GroupMapping(project_id, str(ids[0]), str(ids[1]))
             for key, ids in (document.get(section) or {}).items()}
            for section in ("pairs", "disks"))
    except (AttributeError, IndexError, TypeError):
        return None
    rcg_ids = frozenset(id_key(entry.rcg_id) for entry in pair_ids.values())
    return SdrsHoldings(rcg_ids, pair_ids, volume_ids)


def sdrs_cannot_answer(err: LegacyError) -> bool:
    """SDRS (or the way to it) failed, as opposed to refusing the caller (401, 403, 400): an outage."""
    return err.status >= 500


def _key(value: Any) -> str:
    return id_key(value) if isinstance(value, str) else ""


def _volume_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [part for part in value if isinstance(part, str)]
    return []


# -- legacy writes that would touch an SDRS-owned group --------------------------------------------


def named_pair_ids(document: Any) -> list[str]:
    """The pair ids a group create or update names (`replication_ids`, `add_`/`remove_replication_ids`)."""
    body = document.get("replication_consistency_group") if isinstance(document, dict) else None
    if not isinstance(body, dict):
        return []
    named: list[str] = []
    for field in ("replication_ids", "add_replication_ids", "remove_replication_ids"):
        values = body.get(field)
        if isinstance(values, list):
            named += [value for value in values if isinstance(value, str)]
    return named


def named_volume_ids(document: Any) -> list[str]:
    """The disks a pair create names (`replication.volume_ids`)."""
    body = document.get("replication") if isinstance(document, dict) else None
    return _volume_list(body.get("volume_ids")) if isinstance(body, dict) else []


def refuse_write_on_sdrs_group(entry: GroupMapping, what: str, sdrs_call: str) -> LegacyError:
    """The refusal of a legacy write that would act on the stale legacy copy of an SDRS group."""
    return LegacyError(
        REFUSED_STATUS,
        f"Cannot {what}: replication consistency group {entry.rcg_id} has moved to SDRS (protection group "
        f"{entry.protection_group_id}) and is served from there; its legacy copy is not changed. Use SDRS: "
        f"{sdrs_call.format(project=entry.project_id, group=entry.protection_group_id)}.",
    )
