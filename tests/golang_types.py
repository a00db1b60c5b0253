"""What golangsdk (openstack/drs/v2) decodes, as checks: every scalar a JSON string or null.

A JSON number where the Go struct has `string` fails the whole extraction
("cannot unmarshal number into ... of type string"); `replication_ids` is `[]string`.
"""

from __future__ import annotations

from typing import Any

# Go struct fields of ReplicationConsistencyGroup (get/list) and Replication (get/list).
RCG_STRING_FIELDS = (
    "id", "name", "description", "status", "priority_station", "replication_model",
    "replication_status", "created_at", "updated_at", "failure_detail", "fault_level",
)
PAIR_STRING_FIELDS = (
    "id", "name", "description", "status", "replication_consistency_group_id", "volume_ids",
    "priority_station", "created_at", "updated_at", "replication_model", "replication_status",
    "progress", "failure_detail", "record_metadata", "fault_level",
)


def assert_go_decodes_group(group: dict[str, Any], *, complete: bool = True) -> None:
    """`complete`: every field present (what the shim builds); otherwise absent fields are allowed
    (Go leaves them empty), as in the legacy list example, which has no failure_detail."""
    for field in RCG_STRING_FIELDS:
        assert field in group or not complete, f"missing {field}"
        value = group.get(field)
        assert value is None or isinstance(value, str), f"{field} is {value!r}"
    assert isinstance(group["replication_ids"], list), group["replication_ids"]
    assert all(isinstance(item, str) for item in group["replication_ids"])
    assert group["fault_level"] in ("0", "2", "5")
    assert group["replication_model"] == "hypermetro"
    assert "priority_staion" not in group  # the docs' typo: emit the spelling the client reads


def assert_go_decodes_pair(pair: dict[str, Any], *, complete: bool = True) -> None:
    for field in PAIR_STRING_FIELDS:
        assert field in pair or not complete, f"missing {field}"
        value = pair.get(field)
        assert value is None or isinstance(value, str), f"{field} is {value!r}"
    assert pair["fault_level"] in ("0", "2", "5")
    if pair["progress"] is not None:
        assert pair["progress"].isdigit()
    if pair["record_metadata"] is not None:
        import json

        metadata = json.loads(pair["record_metadata"])
        assert isinstance(metadata["volume_size"], int)
        assert isinstance(metadata["volume_type"], str)
        assert isinstance(metadata["multiattach"], bool)


# The create/update answers decode into smaller structs: ReplicationConsistencyGroupCreateorUpdate
# (create and update of a group) and ReplicationCreate (create of a pair).
RCG_ACCEPTED_FIELDS = ("id", "name", "description", "status", "priority_station", "created_at", "updated_at")
PAIR_CREATED_FIELDS = (
    "id", "name", "description", "status", "replication_consistency_group_id", "volume_ids",
    "priority_station", "created_at", "updated_at",
)


def assert_go_decodes_accepted_group(group: dict[str, Any]) -> None:
    for field in RCG_ACCEPTED_FIELDS:
        assert field in group, f"missing {field}"
        assert group[field] is None or isinstance(group[field], str), f"{field} is {group[field]!r}"


def assert_go_decodes_created_pair(pair: dict[str, Any]) -> None:
    for field in PAIR_CREATED_FIELDS:
        assert field in pair, f"missing {field}"
        assert pair[field] is None or isinstance(pair[field], str), f"{field} is {pair[field]!r}"
