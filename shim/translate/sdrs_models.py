"""The SDRS v1 answers the shim reads, as pydantic models: a success answer that does not validate is
not the documented shape (legacy 502). Unknown extra fields are ignored, as SDRS may add some."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ServerGroup(_Answer):
    id: SafeId
    name: str | None = None
    description: str | None = None
    status: str = Field(min_length=1)
    priority_station: Literal["source", "target"] | None = None
    source_availability_zone: str | None = None
    target_availability_zone: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class ServerGroupAnswer(_Answer):
    server_group: ServerGroup


# Ids SDRS hands out go back into SDRS URLs (GET /jobs/{job_id}): only URL-safe ids are accepted.
SafeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
JobId = SafeId


class JobAccepted(_Answer):
    job_id: JobId


class Job(_Answer):
    job_id: JobId
    job_type: str | None = None
    status: Literal["INIT", "RUNNING", "SUCCESS", "FAIL"]
    error_code: str | None = None
    fail_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCESS", "FAIL")


class ServerGroupsAnswer(_Answer):
    server_groups: list[ServerGroup]
    count: int | None = None


class ReplicationPair(_Answer):
    id: SafeId
    name: str | None = None
    description: str | None = None
    status: str = Field(min_length=1)
    replication_status: str | None = None
    progress: int | None = None
    server_group_id: str
    volume_ids: str = ""
    priority_station: Literal["source", "target"] | None = None
    fault_level: str | int | None = None
    failure_detail: str | None = None
    record_metadata: dict[str, Any] | str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def volume_id_list(self) -> list[str]:
        return [part.strip() for part in self.volume_ids.split(",") if part.strip()]


class ReplicationAnswer(_Answer):
    replication: ReplicationPair


class ReplicationsAnswer(_Answer):
    replications: list[ReplicationPair]
    count: int | None = None


# SDRS's own answers that a resource does not exist (SDRS.0408 "Null job" is what SDRS, and the
# simulator, answer for an unknown job id). Nothing else, a gateway 404 without a code included,
# means "gone": a pending job stays pending, a pair stays unknown.
JOB_NOT_FOUND_CODES = frozenset({"SDRS.0408"})
PAIR_NOT_FOUND_CODES = frozenset({"SDRS.1608"})

# Every status the SDRS appendix documents; the status table must give each one a legacy reading.
SDRS_GROUP_STATUSES = frozenset({
    "creating", "available", "protected", "deleting", "error-deleting", "error", "starting",
    "error-starting", "reprotecting", "error-reprotecting", "stopping", "error-stopping", "reversing",
    "error-reversing", "failing-over", "failed-over", "error-failing-over",
})  # fmt: skip
SDRS_PAIR_STATUSES = frozenset({
    "creating", "available", "deleting", "error-deleting", "error", "extending", "error-extending",
    "starting", "error-starting", "protected", "reversing", "error-reversing", "failing-over",
    "failed-over", "error-failing-over", "reprotecting", "error-reprotecting", "stopping",
    "error-stopping", "invalid", "fault", "attaching", "detaching", "error-attaching", "error-detaching",
})  # fmt: skip


# -- what an SDRS exchange gave back, before it is judged ------------------------------------------


class SdrsTransportError(Exception):
    """SDRS gave no usable HTTP answer."""

    label = "unreachable"  # for metrics and the audit line's sdrs_status


class SdrsUnreachable(SdrsTransportError):
    """Connection refused, reset or closed before a complete answer."""


class SdrsNotSent(SdrsUnreachable):
    """No connection to SDRS was made (refused, no route, TLS failure, or no pooled connection free in
    time): the request never left, so nothing can have been started."""


class SdrsTimeout(SdrsTransportError):
    """SDRS did not answer within the configured timeouts."""

    label = "timeout"


class SdrsAnswerTooLarge(SdrsTransportError):
    """SDRS's answer is larger than the shim reads (`limits.upstream_body_bytes`): a gateway fault."""

    label = "too_large"


@dataclass(frozen=True)
class SdrsAnswer:
    status: int
    body: bytes
    headers: CIMultiDict[str]

    def json(self) -> Any:
        """The decoded body, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None
