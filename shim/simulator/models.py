"""The simulator's records: jobs, replication pairs and protection groups (plain data, no behaviour
beyond what a job's clock says)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shim.simulator.rules import Transition

JobStatus = Literal["INIT", "RUNNING", "SUCCESS", "FAIL"]


@dataclass(frozen=True)
class JobFailure:
    error_code: str | None
    fail_reason: str | None


@dataclass
class Job:
    job_id: str
    project_id: str
    server_group_id: str
    transition: Transition
    submitted_at: float
    init_seconds: float
    run_seconds: float
    failure: JobFailure | None = None
    replication_id: str | None = None  # pair jobs
    new_size: int | None = None  # extend jobs
    priority_station: str | None = None  # reverse jobs: production site after success
    delete_target_volume: bool = False  # pair delete jobs: the DR disk goes too
    applied: bool = False

    @property
    def job_type(self) -> str:
        return self.transition.job_type

    @property
    def running_at(self) -> float:
        return self.submitted_at + self.init_seconds

    @property
    def ends_at(self) -> float:
        return self.running_at + self.run_seconds

    @property
    def is_group_job(self) -> bool:
        return self.replication_id is None

    def status(self, now: float) -> JobStatus:
        if now < self.running_at:
            return "INIT"
        if now < self.ends_at:
            return "RUNNING"
        return "FAIL" if self.failure is not None else "SUCCESS"

    def events(self, now: float) -> list[float]:
        """When it changed what clients see, up to `now`: it started RUNNING, it ended."""
        return [t for t in (self.running_at, self.ends_at) if t <= now]

    def error_code(self) -> str | None:
        if self.failure is None:
            return None
        return self.failure.error_code or self.transition.failure_code

    def fail_reason(self) -> str | None:
        if self.failure is None:
            return None
        return self.failure.fail_reason or f"{self.job_type}-fail: simulated failure"


@dataclass(frozen=True)
class PairPin:
    """Values a test set on a pair (`status`, `replication_status`, `progress`), shown instead of the
    derived ones until a job on the pair or its group starts or ends after `set_at`."""

    set_at: float
    values: dict[str, Any]


@dataclass
class ReplicationPair:
    id: str
    project_id: str
    server_group_id: str
    name: str
    volume_ids: tuple[str, str]  # production disk, DR disk
    created_at: float
    volume_size: int = 10
    volume_type: str = "SATA"
    description: str | None = None
    fault_level: str = "0"  # "5" (link broken) forbids a failover; kept until changed
    bootable: bool = False
    multiattach: bool = False
    attachment: tuple[str, str] | None = None  # (protected instance id, device): not deletable
    failed_status: str | None = None  # a job of its own failed: shown until one succeeds
    failure_detail: str | None = None  # the error code shown with status `error`
    pin: PairPin | None = None
    changed_at: float = 0.0  # last change not made by a job (creation, a test setting its state)
    # Derived from the group, the jobs and the pin on every refresh:
    status: str = "available"
    replication_status: str | None = "inactive"
    progress: int = 0
    updated_at: float = 0.0

    @property
    def dr_volume_id(self) -> str:
        return self.volume_ids[1]


@dataclass
class ProtectionGroup:
    project_id: str
    id: str
    name: str
    source_availability_zone: str
    target_availability_zone: str
    priority_station: str
    created_at: float
    settled_status: str  # status without a RUNNING job; `status` is what clients see
    ever_started: bool  # an available group that was protected before has stopped (not never-synced) pairs
    description: str | None = None
    domain_id: str = "fb4bb8e3-a574-4437-a156-78c916aeea4d"
    domain_name: str = "ActiveactiveDomain"
    source_vpc_id: str = ""
    target_vpc_id: str = ""
    pairs: list[ReplicationPair] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    pending_failure: JobFailure | None = None  # consumed by the next job on this group
    changed_at: float = 0.0  # last change not made by a job (creation, a rename)
    # Derived on every refresh:
    status: str = ""
    updated_at: float = 0.0

    @property
    def production_availability_zone(self) -> str:
        if self.priority_station == "source":
            return self.source_availability_zone
        return self.target_availability_zone

    @property
    def progress(self) -> int:
        return min((pair.progress for pair in self.pairs), default=0)
