"""What SDRS would tell an old client about a group, beside what the legacy endpoint told it (pure).

Compared (`COMPARED_FIELDS`): what old clients act on, and what a migration must carry over.
- `status`, `replication_status`: what Terraform and scripts poll and branch on (the status table
  reads SDRS's statuses the way they are shown in sdrs mode);
- `priority_station`: the production AZ, where clients expect their servers to run;
- `replication_model`, `fault_level`: read by clients to decide on a failover;
- `pair_count` (the length of `replication_ids`) and `production_volumes` (the production disk of each
  pair): the same disks must be protected on both sides.
Not compared, on purpose: names, descriptions and pair ids (SDRS allows only `[A-Za-z0-9._-]` in names,
cannot change a description, and its pairs are new objects: sdrs mode shows the legacy ones recorded
in the mapping entry, translate/identity.py), timestamps (each side records its own creation
and transitions, a few ms apart at best), `progress` (moves continuously while copying;
`replication_status` says whether a copy runs) and `failure_detail` (legacy codes that SDRS does not
have; the shim shows null).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shim.translate.legacy import id_key
from shim.translate.reads import legacy_group
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.translate.tables import GroupMapping, StatusTable

GROUP_FIELDS = ("status", "replication_status", "priority_station", "replication_model", "fault_level")
COMPARED_FIELDS = (*GROUP_FIELDS, "pair_count", "production_volumes")

Facts = dict[str, Any]  # field -> value, for COMPARED_FIELDS
Differences = dict[str, dict[str, Any]]  # field -> {"legacy": value, "sdrs": value}


def volume_list(value: Any) -> list[str]:
    """A pair's disks: the legacy and SDRS answers give a comma-separated string, a create a list."""
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return [part.strip().lower() for part in parts if isinstance(part, str) and part.strip()]


def production_volume(pair: Mapping[str, Any]) -> str | None:
    """A legacy pair's production disk: the first of its `volume_ids` (the create body names the
    production disk first, and the legacy endpoint keeps that order)."""
    disks = volume_list(pair.get("volume_ids"))
    return disks[0] if disks else None


def legacy_facts(group: Mapping[str, Any], pairs: Iterable[Mapping[str, Any]]) -> Facts:
    """The compared fields of a legacy group document and its pairs' documents."""
    pairs = list(pairs)
    facts: Facts = {field: group.get(field) for field in GROUP_FIELDS}
    replication_ids = group.get("replication_ids")
    facts["pair_count"] = len(replication_ids) if isinstance(replication_ids, list) else len(pairs)
    facts["production_volumes"] = sorted(disk for pair in pairs if (disk := production_volume(pair)))
    return facts


def sdrs_facts(
    rcg_id: str, group: ServerGroup, pairs: list[ReplicationPair], table: StatusTable, legacy_production: Iterable[str],
) -> Facts:
    """The compared fields of the group as sdrs mode would show it (the same functions as the
    translated reads). SDRS does not say which of a pair's disks is the production one, so a pair's
    production disk is the one the legacy side calls production, else its first."""
    shown = legacy_group(rcg_id, group, pairs, table)
    facts: Facts = {field: shown[field] for field in GROUP_FIELDS}
    facts["pair_count"] = len(pairs)
    known = {id_key(disk) for disk in legacy_production}
    production = []
    for pair in pairs:
        disks = volume_list(pair.volume_ids)
        production.append(next((disk for disk in disks if id_key(disk) in known), disks[0] if disks else ""))
    facts["production_volumes"] = sorted(production)
    return facts


def differences(legacy: Facts, sdrs: Facts) -> Differences:
    """Every compared field whose values differ, with both values."""
    return {field: {"legacy": legacy.get(field), "sdrs": sdrs.get(field)}
            for field in COMPARED_FIELDS if legacy.get(field) != sdrs.get(field)}


# -- which shadow groups a legacy answer is about -------------------------------------------------

# Translated route name -> (key of its answer's object or list, what the items are).
_ANSWER_SHAPES = {
    "rcg": ("replication_consistency_group", "group"),
    "rcgs": ("replication_consistency_groups", "group"),
    "pair": ("replication", "pair"),
    "pairs": ("replications", "pair"),
}


def shadow_groups_in(
    route: str, document: Any, shadow: Mapping[str, GroupMapping]
) -> dict[str, Mapping[str, Any] | None]:
    """id_key(RCG) -> the group's legacy document (None when only its pairs were read), for every
    shadow group (`shadow`: id_key(RCG) -> entry) the legacy answer of this route shows."""
    shape = _ANSWER_SHAPES.get(route)
    if shape is None or not isinstance(document, dict):
        return {}
    key, kind = shape
    found = document.get(key)
    items = found if isinstance(found, list) else [found]
    groups: dict[str, Mapping[str, Any] | None] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        rcg_id = item.get("id") if kind == "group" else item.get("replication_consistency_group_id")
        if not isinstance(rcg_id, str) or id_key(rcg_id) not in shadow:
            continue
        if kind == "group":
            groups[id_key(rcg_id)] = item
        else:
            groups.setdefault(id_key(rcg_id), None)
    return groups
