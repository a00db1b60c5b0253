"""Legacy EVS v2 wire shapes (pure): request bodies parsed into state requests, state rendered as JSON.

Rendering follows the API pages' examples and what golangsdk decodes: every scalar a string or null
(`progress` and `fault_level` too), `replication_ids` a list, a pair's `volume_ids` one
comma-separated string (`"a, b"` in the create answer, `"a,b"` elsewhere, as in the examples),
`record_metadata` a JSON-encoded string, timestamps `2017-09-28T05:08:32.839953` (UTC, no zone).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from shim.legacy_sim.errors import bad_request
from shim.legacy_sim.state import (
    ACTIONS,
    EXTEND,
    REPLICATION_MODEL,
    Extension,
    Group,
    GroupRequest,
    GroupUpdate,
    Pair,
    PairRequest,
)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
MAX_TEXT_BYTES = 255  # name and description
MALFORMED = "Malformed request body."
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def legacy_time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime(TIME_FORMAT)


# -- requests -----------------------------------------------------------------------------------


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as err:  # also bytes that are not UTF-8
        raise bad_request(MALFORMED) from err
    if not isinstance(document, dict):
        raise bad_request(MALFORMED)
    return document


def _wrapped(body: bytes, key: str) -> dict[str, Any]:
    inner = parse_json_object(body).get(key)
    if not isinstance(inner, dict):
        raise bad_request(f"{MALFORMED} It needs a {key!r} object.")
    return inner


def _optional_text(inner: dict[str, Any], name: str) -> str | None:
    value = inner.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode()) > MAX_TEXT_BYTES:
        raise bad_request(f"{name} must be a string of at most {MAX_TEXT_BYTES} bytes.")
    return value


def _required_text(inner: dict[str, Any], name: str) -> str:
    value = inner.get(name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{name} is required.")
    return value


def _replication_model(inner: dict[str, Any], *, required: bool) -> None:
    value = inner.get("replication_model")
    if value is None and not required:
        return
    if value != REPLICATION_MODEL:
        raise bad_request(f"replication_model must be {REPLICATION_MODEL!r}, the only type supported.")


def _ids(inner: dict[str, Any], name: str, *, required: bool) -> tuple[str, ...]:
    value = inner.get(name)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_request(f"{name} must be a list of ids.")
    return tuple(value)


def parse_pair_create(body: bytes) -> PairRequest:
    inner = _wrapped(body, "replication")
    volume_ids = _ids(inner, "volume_ids", required=True)
    if len(volume_ids) != 2 or len({volume_id.lower() for volume_id in volume_ids}) != 2:
        raise bad_request("volume_ids must name two different disks: the production disk, then the DR disk.")
    if not all(is_uuid(volume_id) for volume_id in volume_ids):
        raise bad_request("volume_ids must be disk ids (UUIDs).")
    priority_station = _required_text(inner, "priority_station")
    _replication_model(inner, required=True)
    return PairRequest(
        (volume_ids[0], volume_ids[1]), priority_station, _optional_text(inner, "name"),
        _optional_text(inner, "description"),
    )  # fmt: skip


def parse_group_create(body: bytes) -> GroupRequest:
    inner = _wrapped(body, "replication_consistency_group")
    replication_ids = _ids(inner, "replication_ids", required=True)  # [] reaches the state's 400
    priority_station = _required_text(inner, "priority_station")
    _replication_model(inner, required=True)
    return GroupRequest(
        replication_ids, priority_station, _optional_text(inner, "name"), _optional_text(inner, "description")
    )


def parse_group_update(body: bytes) -> GroupUpdate:
    """Every field is optional: golangsdk omits empty ones and may send `{...: {}}` (no change)."""
    inner = _wrapped(body, "replication_consistency_group")
    _replication_model(inner, required=False)
    return GroupUpdate(
        name=_optional_text(inner, "name"),
        description=_optional_text(inner, "description"),
        add_ids=_ids(inner, "add_replication_ids", required=False),
        remove_ids=_ids(inner, "remove_replication_ids", required=False),
    )


def parse_action(body: bytes) -> tuple[str, tuple[Extension, ...]]:
    """`{"<action>": null}`, or the extend in either shape: the documented
    `{"replications": [{"id", "new_size"}, ...]}` or the flat `{"id", "new_size"}` golangsdk sends."""
    document = parse_json_object(body)
    if len(document) != 1:
        raise bad_request(f"{MALFORMED} It must hold exactly one action.")
    [(action, params)] = document.items()
    if action not in ACTIONS:
        raise bad_request(f"Unknown action {action!r}.")
    if action != EXTEND:
        if params is not None and params != {}:
            raise bad_request(f"{action} takes no parameters (null).")
        return action, ()
    if not isinstance(params, dict):
        raise bad_request(f"{MALFORMED} {EXTEND} needs the replications to expand.")
    items = params.get("replications") if "replications" in params else [params]
    if not isinstance(items, list):
        raise bad_request(f"{MALFORMED} replications must be a list.")
    return action, tuple(_extension(item) for item in items)


def _extension(item: Any) -> Extension:
    pair_id = item.get("id") if isinstance(item, dict) else None
    new_size = item.get("new_size") if isinstance(item, dict) else None
    if not isinstance(pair_id, str) or isinstance(new_size, bool) or not isinstance(new_size, int) or new_size < 1:
        raise bad_request(f"{MALFORMED} Each expansion needs an id and a whole new_size in GB.")
    return Extension(pair_id, new_size)


# -- responses ----------------------------------------------------------------------------------


def record_metadata(pair: Pair) -> str:
    return json.dumps(
        {"volume_size": pair.volume_size, "volume_type": pair.volume_type, "multiattach": pair.multiattach}
    )


def render_pair(pair: Pair) -> dict[str, Any]:
    """A pair as get and list show it."""
    return {
        "id": pair.id,
        "name": pair.name,
        "description": pair.description,
        "status": pair.status,
        "replication_consistency_group_id": pair.group_id,
        "volume_ids": ",".join(pair.volume_ids),
        "priority_station": pair.priority_station,
        "created_at": legacy_time(pair.created_at),
        "updated_at": legacy_time(pair.updated_at),
        "replication_model": pair.replication_model,
        "replication_status": pair.replication_status,
        "progress": None if pair.progress is None else str(pair.progress),
        "failure_detail": pair.failure_detail,
        "record_metadata": record_metadata(pair),
        "fault_level": pair.fault_level,
    }


def render_created_pair(pair: Pair) -> dict[str, Any]:
    """The create answer: nine fields, as in the API page's example."""
    return {
        "id": pair.id,
        "name": pair.name,
        "description": pair.description,
        "status": pair.status,
        "replication_consistency_group_id": pair.group_id,
        "volume_ids": ", ".join(pair.volume_ids),
        "priority_station": pair.priority_station,
        "created_at": legacy_time(pair.created_at),
        "updated_at": legacy_time(pair.updated_at),
    }


def render_group(group: Group) -> dict[str, Any]:
    """A group as get and list show it."""
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "status": group.status,
        "priority_station": group.priority_station,
        "replication_model": group.replication_model,
        "replication_status": group.replication_status,
        "replication_ids": list(group.replication_ids),
        "created_at": legacy_time(group.created_at),
        "updated_at": legacy_time(group.updated_at),
        "failure_detail": group.failure_detail,
        "fault_level": group.fault_level,
    }


def render_accepted_group(group: Group) -> dict[str, Any]:
    """The create and update answers: the seven fields golangsdk's CreateorUpdate struct has."""
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "status": group.status,
        "priority_station": group.priority_station,
        "created_at": legacy_time(group.created_at),
        "updated_at": legacy_time(group.updated_at),
    }
