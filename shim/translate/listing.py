"""Legacy list calls over two sources (pure): the legacy endpoint's items merged with mapped SDRS ones.

The legacy filters go to the legacy endpoint (which applies them to its own items) and are applied
here to the mapped items; sorting and paging (`sort_key`, `sort_dir`, `marker`, `offset`, `limit`)
are applied here to the merged list, so a page is right whichever source its items come from.
A mapped group or pair is never listed twice: SDRS's version replaces the legacy endpoint's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shim.translate.legacy import LegacyError, id_key, is_legacy_id

PAGING_PARAMETERS = frozenset({"marker", "limit", "offset", "sort_key", "sort_dir"})
SORT_KEYS = frozenset({"created_at", "updated_at", "id", "name", "status", "priority_station"})
MAX_LIMIT = 1000


@dataclass(frozen=True)
class ListQuery:
    filters: dict[str, str]  # every other query parameter, as the legacy client sent it
    marker: str | None = None
    limit: int = MAX_LIMIT
    offset: int = 0
    sort_key: str = "created_at"
    sort_dir: str = "desc"


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """The legacy list parameters, validated as EVS validates them (400 with the EVS code)."""
    limit = _integer(query, "limit", MAX_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise LegacyError(400, "invalid filter limit! (limit must be 1-1000)", code="EVS.1023")
    offset = _integer(query, "offset", 0)
    if offset < 0:
        raise LegacyError(400, "offset param must be a non-negative integer.", code="EVS.5400")
    marker = query.get("marker") or None
    if marker is not None and not is_legacy_id(marker):
        raise LegacyError(400, "invalid filter marker! (must be a UUID)", code="EVS.1024")
    sort_key = query.get("sort_key") or "created_at"
    if sort_key not in SORT_KEYS:
        raise LegacyError(400, f"invalid sort_key! ({', '.join(sorted(SORT_KEYS))})", code="EVS.1039")
    sort_dir = (query.get("sort_dir") or "desc").lower()
    if sort_dir not in ("asc", "desc"):
        raise LegacyError(400, "invalid sort_dir! (desc/asc)", code="EVS.1040")
    filters = {key: value for key, value in query.items() if key not in PAGING_PARAMETERS}
    return ListQuery(filters, marker, limit, offset, sort_key, sort_dir)


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise LegacyError(400, f"{name} param must be an integer.", code="EVS.5400") from None


@dataclass(frozen=True)
class MappedItem:
    """A legacy object built from SDRS, with what its filters need that the object does not show."""

    legacy: dict[str, Any]
    volume_ids: frozenset[str] = frozenset()


FilterRule = Callable[[MappedItem, str], bool]


def _field_equals(field: str) -> FilterRule:
    return lambda item, value: str(item.legacy.get(field)) == value


def _id_equals(field: str) -> FilterRule:
    """An id filter: any spelling of the id matches (case and dashes do not matter)."""
    return lambda item, value: id_key(str(item.legacy.get(field))) == id_key(value)


def _volume_ids_equal(item: MappedItem, value: str) -> bool:
    return {id_key(part.strip()) for part in value.split(",") if part.strip()} == {
        id_key(volume) for volume in item.volume_ids}


def _changed_since(item: MappedItem, value: str) -> bool:
    """ISO timestamps compare as text once both are in the legacy form (`T`, no zone suffix)."""
    stamp = item.legacy.get("updated_at") or item.legacy.get("created_at") or ""
    return stamp >= value.strip().replace(" ", "T").removesuffix("Z")


GROUP_FILTERS: dict[str, FilterRule] = {
    "name": _field_equals("name"),
    "status": _field_equals("status"),
    "priority_station": _field_equals("priority_station"),
    "volume_id": lambda item, value: id_key(value) in {id_key(volume) for volume in item.volume_ids},
    "changes-since": _changed_since,
}
PAIR_FILTERS: dict[str, FilterRule] = {
    **GROUP_FILTERS,
    "replication_consistency_group_id": _id_equals("replication_consistency_group_id"),
    "volume_ids": _volume_ids_equal,
}


def select_mapped(
    items: Iterable[MappedItem], query: ListQuery, rules: Mapping[str, FilterRule]
) -> list[dict[str, Any]]:
    """The mapped items that pass every known legacy filter (unknown parameters are ignored, as EVS does)."""
    return [
        item.legacy
        for item in items
        if all(rules[key](item, value) for key, value in query.filters.items() if key in rules)
    ]


def merge_page(
    legacy_items: list[dict[str, Any]], mapped_items: list[dict[str, Any]], query: ListQuery
) -> list[dict[str, Any]]:
    """Merged, de-duplicated (mapped wins), sorted and paged."""
    mapped_ids = {id_key(str(item["id"])) for item in mapped_items}
    merged = [item for item in legacy_items if id_key(str(item.get("id"))) not in mapped_ids] + mapped_items
    merged.sort(key=lambda item: (_sort_value(item.get(query.sort_key)), str(item.get("id"))),
                reverse=query.sort_dir == "desc")
    start = 0
    if query.marker is not None:
        positions = [index for index, item in enumerate(merged) if id_key(str(item.get("id"))) == id_key(query.marker)]
        if not positions:
            raise LegacyError(400, f"invalid filter marker! (marker {query.marker} not found)", code="EVS.1024")
        start = positions[0] + 1
    start += query.offset
    return merged[start:start + query.limit]


def _sort_value(value: Any) -> tuple[int, str]:
    """None sorts before any value, whatever its type."""
    return (0, "") if value is None else (1, str(value))


def upstream_list_query(query: Mapping[str, str]) -> dict[str, str]:
    """What to ask the legacy endpoint: the client's filters, without paging (paging is done here)."""
    return {key: value for key, value in query.items() if key not in PAGING_PARAMETERS}
