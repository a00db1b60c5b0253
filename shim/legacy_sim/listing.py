"""Legacy list calls as EVS applies them (pure): query validation, filters, sorting and paging.

Written for the stand-in on its own, not shared with the shim's merged lists (shim/translate/
listing.py): the stand-in plays the legacy endpoint the shim is checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shim.legacy_sim.api import is_uuid
from shim.legacy_sim.errors import bad_request

MAX_LIMIT = 1000
SORT_KEYS = frozenset({"created_at", "updated_at", "id", "name", "status", "priority_station"})
GROUP_FILTERS = frozenset({"name", "status", "priority_station", "volume_id", "changes-since"})
PAIR_FILTERS = GROUP_FILTERS | {"replication_consistency_group_id", "volume_ids"}


@dataclass(frozen=True)
class Listed:
    """One rendered item, with what its filters need that the rendering does not show."""

    document: dict[str, Any]
    volume_ids: frozenset[str]  # a pair's two disks; every disk of a group's pairs
    changed_at: datetime


@dataclass(frozen=True)
class ListQuery:
    filters: dict[str, str]
    changes_since: datetime | None = None
    marker: str | None = None
    limit: int = MAX_LIMIT
    offset: int = 0
    sort_key: str = "created_at"
    sort_dir: str = "desc"


def parse_list_query(query: Mapping[str, str], filter_names: frozenset[str]) -> ListQuery:
    """Validated with the documented EVS codes; unknown parameters and empty values are ignored."""
    limit = _integer(query, "limit", MAX_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request("invalid filter limit!", "EVS.1023")
    offset = _integer(query, "offset", 0)
    if offset < 0:
        raise bad_request("offset param must be a non-negative integer.")
    marker = query.get("marker") or None
    if marker is not None and not is_uuid(marker):
        raise bad_request("invalid filter marker!", "EVS.1024")
    sort_key = query.get("sort_key") or "created_at"
    if sort_key not in SORT_KEYS:
        raise bad_request("invalid sort_key!", "EVS.1039")
    sort_dir = (query.get("sort_dir") or "desc").lower()
    if sort_dir not in ("asc", "desc"):
        raise bad_request("invalid sort_dir!", "EVS.1040")
    since = query.get("changes-since") or None
    filters = {name: query[name] for name in filter_names - {"changes-since"} if query.get(name)}
    return ListQuery(filters, _timestamp(since), marker, limit, offset, sort_key, sort_dir)


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{name} param must be an integer.") from None


def _timestamp(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise bad_request(f"changes-since must be a timestamp, not {raw!r}.") from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


Rule = Callable[[Listed, str], bool]


def _field_is(name: str) -> Rule:
    return lambda item, value: item.document.get(name) == value


RULES: dict[str, Rule] = {
    "name": _field_is("name"),
    "status": _field_is("status"),
    "priority_station": _field_is("priority_station"),
    "replication_consistency_group_id": _field_is("replication_consistency_group_id"),
    "volume_id": lambda item, value: value in item.volume_ids,
    "volume_ids": lambda item, value: {part.strip() for part in value.split(",") if part.strip()} == item.volume_ids,
}


def _matches(item: Listed, query: ListQuery) -> bool:
    if query.changes_since is not None and item.changed_at < query.changes_since:
        return False
    return all(RULES[name](item, value) for name, value in query.filters.items())


def page(items: list[Listed], query: ListQuery) -> list[dict[str, Any]]:
    """Sorted, then what follows the marker (found among all items, as a database query resolves
    it before filtering), filtered, then `offset` and `limit`."""
    ordered = sorted(
        items, key=lambda item: (_sortable(item.document.get(query.sort_key)), item.document["id"]),
        reverse=query.sort_dir == "desc",
    )  # fmt: skip
    if query.marker is not None:
        positions = [index for index, item in enumerate(ordered) if item.document["id"] == query.marker.lower()]
        if not positions:
            raise bad_request("invalid filter marker!", "EVS.1024")
        ordered = ordered[positions[0] + 1 :]
    selected = [item.document for item in ordered if _matches(item, query)]
    return selected[query.offset : query.offset + query.limit]


def _sortable(value: Any) -> tuple[int, str]:
    """None sorts before any value."""
    return (0, "") if value is None else (1, str(value))
