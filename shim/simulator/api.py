"""SDRS v1 wire shapes: request parsing and JSON rendering, pure functions over the state objects.

Timestamp formats differ per resource in the real API and are reproduced as documented:
protection group `2019-05-23 03:51:58.256`, replication pair `2018-05-04T03:43:24.108526`,
job `2019-04-01T12:00:00.000Z` (all UTC).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shim.simulator.errors import SdrsError
from shim.simulator.models import Job, ProtectionGroup, ReplicationPair
from shim.simulator.rules import ACTIONS, STATIONS, is_valid_description, is_valid_name
from shim.simulator.state import is_resource_id

MAX_LIMIT = 1000  # docs: "0-1000", default 1000; SDRS.0221 says "> 0", so 1..1000 is accepted


def _utc(epoch: float, t: float) -> datetime:
    return datetime.fromtimestamp(epoch + t, tz=UTC)


def group_time(epoch: float, t: float) -> str:
    return _utc(epoch, t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def pair_time(epoch: float, t: float) -> str:
    return _utc(epoch, t).strftime("%Y-%m-%dT%H:%M:%S.%f")


def job_time(epoch: float, t: float) -> str:
    return _utc(epoch, t).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- requests -----------------------------------------------------------------------------------


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise SdrsError("SDRS.0201") from err
    if not isinstance(document, dict):
        raise SdrsError("SDRS.0201")
    return document


def parse_group_action(body: bytes) -> tuple[str, str | None]:
    """`{"<action>": {...}}` -> (action, priority_station for reverse-server-group)."""
    document = parse_json_object(body)
    if len(document) != 1:
        raise SdrsError("SDRS.0206")  # exactly one action per request
    [(action, params)] = document.items()
    if action not in ACTIONS:
        raise SdrsError("SDRS.0206")
    if not isinstance(params, dict):
        raise SdrsError("SDRS.0201")
    if action != "reverse-server-group":
        return action, None
    station = params.get("priority_station")
    if station not in STATIONS:
        raise SdrsError("SDRS.0201")  # mandatory: the production site after the switch
    return action, station


def parse_extend(body: bytes) -> int:
    """`{"extend-replication": {"new_size": N}}` -> N (GB; decimals are cut off, as documented)."""
    document = parse_json_object(body)
    if list(document) != ["extend-replication"]:
        raise SdrsError("SDRS.0206")
    params = document["extend-replication"]
    new_size = params.get("new_size") if isinstance(params, dict) else None
    if isinstance(new_size, bool) or not isinstance(new_size, (int, float)):
        raise SdrsError("SDRS.0201")
    return int(new_size)


def parse_group_rename(body: bytes) -> str:
    """`{"server_group": {"name": ...}}` -> the new name; the name is the only field this API changes."""
    params = _single_object(parse_json_object(body), "server_group")
    if set(params) != {"name"}:
        raise SdrsError("SDRS.0201")
    if not is_valid_name(params["name"]):
        raise SdrsError("SDRS.0202")
    return str(params["name"])


def parse_pair_delete(body: bytes) -> tuple[str | None, bool]:
    """`{"replication": {"server_group_id"?, "delete_target_volume"?}}` -> (group id, delete DR disk).

    The `replication` object is mandatory, both of its fields optional (null = absent)."""
    params = _single_object(parse_json_object(body), "replication")
    if set(params) - {"server_group_id", "delete_target_volume"}:
        raise SdrsError("SDRS.0201")
    group_id = _optional_group_id(params.get("server_group_id"))
    delete_target_volume = params.get("delete_target_volume")
    if delete_target_volume is None:
        return group_id, False  # the documented default: the DR site disk is kept
    if not isinstance(delete_target_volume, bool):
        raise SdrsError("SDRS.0201")
    return group_id, delete_target_volume


def parse_pair_create(body: bytes) -> tuple[str, str, str, str | None]:
    """`{"replication": {"server_group_id", "volume_id", "name", "description"?}}` -> those four.

    `cluster_id` (Huawei Cloud's edition of the API; not on the OTC page) is accepted and ignored."""
    params = _single_object(parse_json_object(body), "replication")
    known = {"server_group_id", "volume_id", "name", "description", "cluster_id"}
    if set(params) - known or not {"server_group_id", "volume_id", "name"} <= set(params):
        raise SdrsError("SDRS.0201")
    group_id = _optional_group_id(params["server_group_id"])
    if group_id is None:
        raise SdrsError("SDRS.0207")
    volume_id = params["volume_id"]
    if not isinstance(volume_id, str) or not is_resource_id(volume_id):
        raise SdrsError("SDRS.0211")
    if not is_valid_name(params["name"]):
        raise SdrsError("SDRS.0202")
    description = params.get("description")
    if description is not None and not is_valid_description(description):
        raise SdrsError("SDRS.0212")
    return group_id, volume_id, str(params["name"]), description


def _single_object(document: dict[str, Any], key: str) -> dict[str, Any]:
    params = document.get(key)
    if list(document) != [key] or not isinstance(params, dict):
        raise SdrsError("SDRS.0201")
    return params


def _optional_group_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_resource_id(value):
        raise SdrsError("SDRS.0207")
    return value


def parse_paging(query: Mapping[str, str]) -> tuple[int, int]:
    return (
        _int_param(query.get("limit"), MAX_LIMIT, 1, MAX_LIMIT, "SDRS.0221"),
        _int_param(query.get("offset"), 0, 0, None, "SDRS.0222"),
    )


def _int_param(raw: str | None, default: int, low: int, high: int | None, code: str) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise SdrsError(code) from err
    if value < low or (high is not None and value > high):
        raise SdrsError(code)
    return value


def fuzzy_match(needle: str | None, name: str) -> bool:
    return needle is None or needle.lower() in name.lower()


# -- responses ----------------------------------------------------------------------------------


def render_group(group: ProtectionGroup, epoch: float) -> dict[str, Any]:
    # protected_status / replication_status / health_status are null for groups created after the
    # platform upgrade (docs); real state is on the pairs, so clients must read those.
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "source_availability_zone": group.source_availability_zone,
        "target_availability_zone": group.target_availability_zone,
        "domain_id": group.domain_id,
        "domain_name": group.domain_name,
        "status": group.status,
        "protected_status": None,
        "replication_status": None,
        "health_status": None,
        "progress": group.progress,
        "priority_station": group.priority_station,
        "protected_instance_num": 0,
        "replication_num": len(group.pairs),
        "disaster_recovery_drill_num": 0,
        "source_vpc_id": group.source_vpc_id,
        "target_vpc_id": group.target_vpc_id,
        "test_vpc_id": None,
        "dr_type": "migration",
        "server_type": "ECS",
        "created_at": group_time(epoch, group.created_at),
        "updated_at": group_time(epoch, group.updated_at),
        "protection_type": "replication-pair",
        "replication_model": None,
    }


def render_pair(pair: ReplicationPair, priority_station: str, epoch: float) -> dict[str, Any]:
    rendered = {
        "id": pair.id,
        "name": pair.name,
        "description": pair.description,
        "replication_model": "hypermetro",
        "status": pair.status,
        "progress": pair.progress,
        "replication_status": pair.replication_status,
        "attachment": _attachment(pair),
        "server_group_id": pair.server_group_id,
        "volume_ids": ",".join(pair.volume_ids),
        "priority_station": priority_station,
        "fault_level": pair.fault_level,
        "created_at": pair_time(epoch, pair.created_at),
        "updated_at": pair_time(epoch, pair.updated_at),
        "record_metadata": {
            "multiattach": pair.multiattach,
            "bootable": pair.bootable,
            "volume_size": pair.volume_size,
            "volume_type": pair.volume_type,
        },
    }
    if pair.status == "error":  # documented: only with status `error`
        rendered["failure_detail"] = pair.failure_detail or "SDRS.1606"
    return rendered


def _attachment(pair: ReplicationPair) -> list[dict[str, str]]:
    if pair.attachment is None:
        return []
    protected_instance, device = pair.attachment
    return [{"protected_instance": protected_instance, "device": device}]


def render_job(job: Job, now: float, epoch: float) -> dict[str, Any]:
    status = job.status(now)
    finished = status in ("SUCCESS", "FAIL")
    entities: dict[str, Any] = {"server_group_id": job.server_group_id}
    if job.replication_id is not None:
        entities["replication_pair_id"] = job.replication_id
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "status": status,
        "entities": entities,
        "begin_time": job_time(epoch, job.submitted_at),
        "end_time": job_time(epoch, job.ends_at) if finished else None,
        "error_code": job.error_code() if status == "FAIL" else None,
        "fail_reason": job.fail_reason() if status == "FAIL" else None,
    }


def version_document(base_url: str) -> dict[str, Any]:
    return {
        "id": "v1",
        "links": [{"href": f"{base_url}/v1", "rel": "self"}],
        "status": "CURRENT",
        "updated": "2018-05-30T15:00:00Z",
        "version": "",
        "min_version": "",
    }
