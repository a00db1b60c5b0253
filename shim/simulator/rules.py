"""The documented SDRS v1 rules as data: status vocabularies, what each job does, and which statuses
each operation is allowed from (the pages under docs/sdrs/api-ref, one table per operation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP_STATUSES = frozenset({
    "creating", "available", "protected", "deleting", "error-deleting", "error",
    "starting", "error-starting", "reprotecting", "error-reprotecting", "stopping", "error-stopping",
    "reversing", "error-reversing", "failing-over", "failed-over", "error-failing-over",
})  # fmt: skip
PAIR_STATUSES = frozenset({
    "creating", "available", "deleting", "error-deleting", "error", "extending", "error-extending",
    "starting", "error-starting", "protected", "reversing", "error-reversing", "failing-over",
    "failed-over", "error-failing-over", "reprotecting", "error-reprotecting", "stopping",
    "error-stopping", "invalid", "fault", "attaching", "detaching", "error-attaching", "error-detaching",
})  # fmt: skip
REPLICATION_STATUSES = frozenset({"active", "inactive", "copying", "active-stopped"})
FAULT_LEVELS = frozenset({"0", "2", "5"})  # none; production disk lost R/W; replication link broken
STATIONS = ("source", "target")

# "Expanding the Capacity of a Replication Pair": the pair's status must be one of these.
EXTENDABLE_PAIR_STATUSES = frozenset({"available", "protected", "error-extending"})
# "Deleting a Replication Pair": the group's and the pair's status must be one of these.
PAIR_DELETE_GROUP_STATUSES = frozenset({
    "available", "protected", "failed-over", "error-starting", "error-stopping", "error-reversing",
    "error-failing-over", "error-deleting", "error-reprotecting",
})  # fmt: skip
DELETABLE_PAIR_STATUSES = frozenset({
    "available", "protected", "failed-over", "error", "error-starting", "error-stopping",
    "error-reversing", "error-failing-over", "error-deleting", "error-reprotecting", "error-attaching",
    "error-extending", "invalid", "fault",
})  # fmt: skip
# "Creating a Replication Pair": the group's status must be one of these.
PAIR_CREATE_GROUP_STATUSES = frozenset({"available", "protected"})

# Names of groups and pairs: "a maximum of 64 bytes", letters, digits, '.', '_' and '-'.
NAME_MAX_BYTES = 64
_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Descriptions: "a maximum of 64 bytes" without '<' or '>'.
DESCRIPTION_MAX_BYTES = 64


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None and len(value) <= NAME_MAX_BYTES


def is_valid_description(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value.encode()) <= DESCRIPTION_MAX_BYTES
        and "<" not in value
        and ">" not in value
    )


@dataclass(frozen=True)
class Transition:
    """What one job does: its type, the status it shows while RUNNING, and its outcomes.

    An empty `success` means the job's own effect decides (a pair job hands the pair back to its
    group, a delete removes the resource).
    """

    job_type: str
    transitional: str
    success: str
    failure: str
    failure_code: str  # the job's error_code when it fails without an injected one


START = Transition("startProtectionGroupNoCG", "starting", "protected", "error-starting", "SDRS.1027")
REPROTECT = Transition(
    "reprotectProtectionGroupNoCG", "reprotecting", "protected", "error-reprotecting", "SDRS.1032"
)
STOP = Transition("stopProtectionGroupNoCG", "stopping", "available", "error-stopping", "SDRS.1028")
FAILOVER = Transition(
    "failoverProtectionGroupNoCG", "failing-over", "failed-over", "error-failing-over", "SDRS.1030"
)
REVERSE = Transition("reverseProtectionGroupNoCG", "reversing", "protected", "error-reversing", "SDRS.1029")
DELETE_GROUP = Transition("deleteProtectionGroupNoCG", "deleting", "", "error-deleting", "SDRS.1016")
# Pair jobs: the pair shows the transitional status, then follows its group again (or keeps the
# failure status until a job of its own succeeds).
EXTEND = Transition("expandReplicationPairNew", "extending", "", "error-extending", "SDRS.1820")
DELETE_PAIR = Transition("deleteReplicationPairNoCG", "deleting", "", "error-deleting", "SDRS.1607")
CREATE_PAIR = Transition("createReplicationPairNoCG", "creating", "", "error", "SDRS.1609")

# The gating matrix of the docs: action -> {group status it is allowed from -> what it does}.
# start-server-group is an enable or a re-protect depending on the current status.
GATES: dict[str, dict[str, Transition]] = {
    "start-server-group": {
        "available": START, "error-starting": START,
        "failed-over": REPROTECT, "error-reprotecting": REPROTECT,
    },
    "stop-server-group": {"protected": STOP, "error-stopping": STOP},
    "failover-server-group": {
        "protected": FAILOVER, "error-failing-over": FAILOVER, "error-reversing": FAILOVER,
    },
    "reverse-server-group": {"protected": REVERSE, "error-reversing": REVERSE},
}  # fmt: skip
ACTIONS = tuple(GATES)
