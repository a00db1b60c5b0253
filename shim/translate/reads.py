"""SDRS protection groups and replication pairs, read back as legacy EVS v2 objects (pure functions).

The legacy shapes are exact to what golangsdk decodes: every scalar a string or null (a number where
it expects a string breaks it), `replication_ids` a list, pair `volume_ids` a comma-separated string,
`record_metadata` a JSON-encoded string, `progress` and `fault_level` strings. Statuses come from the
status table in `mappings/statuses.yaml`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from shim.translate.identity import (
    GroupIdentity,
    shown_group_description,
    shown_group_name,
    shown_pair_id,
    shown_pair_ids,
    shown_pair_text,
)
from shim.translate.legacy import LegacyError
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.translate.tables import StatusTable

# Worst first: the group's replication reads as the worst state among its pairs.
_REPLICATION_SEVERITY = ("error", "inactive", "copying", "active-stopped", "active")


def legacy_time(value: str | None) -> str | None:
    """SDRS timestamps (three formats, with or without a zone) -> the legacy UTC form
    `2017-09-28T05:08:32.839953`; unparsable -> as is. A time with an offset is converted to UTC
    before the offset is dropped (`12:00+02:00` is `10:00`)."""
    if not value:
        return None
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.replace(tzinfo=None).isoformat(timespec="microseconds")


def production_zone(group: ServerGroup) -> str | None:
    """The legacy `priority_station` is the current production AZ; SDRS says `source` or `target`."""
    if group.priority_station == "target":
        return group.target_availability_zone
    return group.source_availability_zone


def other_station(group: ServerGroup) -> str:
    """For a switchover: the SDRS site that is production after it."""
    return "source" if group.priority_station == "target" else "target"


def pair_replication_status(pair: ReplicationPair, table: StatusTable) -> str:
    row = table.pair_statuses.get(pair.status)
    if row is None:
        raise _undocumented("replication pair", pair.status)
    if row.replication_status != "from-sdrs":
        return row.replication_status
    sdrs_value = pair.replication_status
    return sdrs_value if sdrs_value in _REPLICATION_SEVERITY else "error"


def group_replication_status(pairs: Iterable[ReplicationPair], table: StatusTable) -> str:
    statuses = {pair_replication_status(pair, table) for pair in pairs}
    for status in _REPLICATION_SEVERITY:
        if status in statuses:
            return status
    return "inactive"  # a group without pairs replicates nothing


def fault_level(pairs: Iterable[ReplicationPair]) -> str:
    """The worst pair fault level ("0", "2", "5"), always a string."""
    levels = [int(str(pair.fault_level)) for pair in pairs if str(pair.fault_level or "").isdigit()]
    return str(max(levels, default=0))


def group_reading(group: ServerGroup, pairs: Iterable[ReplicationPair], table: StatusTable) -> tuple[str, str]:
    """The legacy (`status`, `replication_status`) of a group, by the status table."""
    row = table.group_statuses.get(group.status)
    if row is None:
        raise _undocumented("protection group", group.status)
    replication_status: str = row.replication_status
    if replication_status == "from-pairs":
        replication_status = group_replication_status(pairs, table)
    return row.status, replication_status


def legacy_group(
    rcg_id: str, group: ServerGroup, pairs: list[ReplicationPair], table: StatusTable, *,
    status: str | None = None, failure_detail: str | None = None,
    written_description: tuple[bool, str | None] = (False, None), identity: GroupIdentity | None = None,
    renamed: bool = False,
) -> dict[str, Any]:
    """GET .../os-vendor-replication-consistency-groups/{id} body object for a mapped group.
    `status` overrides the table's reading (work of this shim's is pending); `written_description` is
    (known, value) of the one the shim keeps (SDRS has none to change); `identity` the group as old
    clients knew it and `renamed` whether it was renamed through the shim since (translate/identity.py)."""
    table_status, replication_status = group_reading(group, pairs, table)
    return {
        "id": rcg_id,
        "name": shown_group_name(identity, group.name, renamed),
        "description": shown_group_description(identity, group.description, written_description),
        "status": status or table_status,
        "priority_station": production_zone(group),
        "replication_model": "hypermetro",
        "replication_status": replication_status,
        "replication_ids": shown_pair_ids(identity, [pair.id for pair in pairs]),
        "created_at": legacy_time(group.created_at),
        "updated_at": legacy_time(group.updated_at),
        "failure_detail": failure_detail,
        "fault_level": fault_level(pairs),
    }


def legacy_pair(pair: ReplicationPair, rcg_id: str, group: ServerGroup, table: StatusTable,
                identity: GroupIdentity | None = None) -> dict[str, Any]:
    """GET .../os-vendor-replications/{id} body object for a pair of a mapped group (its legacy id,
    name and description when `identity` records them)."""
    row = table.pair_statuses.get(pair.status)
    if row is None:
        raise _undocumented("replication pair", pair.status)
    name, description = shown_pair_text(identity, pair.id, pair.name, pair.description)
    return {
        "id": shown_pair_id(identity, pair.id),
        "name": name,
        "description": description,
        "status": row.status,
        "replication_consistency_group_id": rcg_id,
        "volume_ids": ",".join(pair.volume_id_list),
        "priority_station": production_zone(group),
        "created_at": legacy_time(pair.created_at),
        "updated_at": legacy_time(pair.updated_at),
        "replication_model": "hypermetro",
        "replication_status": pair_replication_status(pair, table),
        "progress": None if pair.progress is None else str(pair.progress),
        "failure_detail": None if pair.failure_detail is None else str(pair.failure_detail),
        "record_metadata": _record_metadata(pair.record_metadata),
        "fault_level": str(pair.fault_level if pair.fault_level is not None else "0"),
    }


def _record_metadata(value: dict[str, Any] | str | None) -> str | None:
    """Legacy clients expect the JSON-encoded string form (older golangsdk decodes a string)."""
    if value is None or isinstance(value, str):
        return value
    keep = {key: value[key] for key in ("volume_size", "volume_type", "multiattach") if key in value}
    if isinstance(keep.get("volume_size"), str) and keep["volume_size"].isdigit():
        keep["volume_size"] = int(keep["volume_size"])
    return json.dumps(keep)


def _undocumented(what: str, status: str) -> LegacyError:
    return LegacyError(502, f"SDRS reported the undocumented {what} status {status!r}.")
