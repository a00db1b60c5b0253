"""Pure SDRS v1 state: protection groups, replication pairs, jobs and the status machine.

No I/O and no background tasks: every status is derived from the injected clock when state is read.
A job is INIT for `job_init_seconds` (the group keeps its status, so SDRS accepts a second action),
then RUNNING for `job_run_seconds` (the group shows the transitional status), then SUCCESS or FAIL;
its outcome is applied to the group the first time anything is read after it ended.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from shim.simulator.errors import SdrsError
from shim.simulator.settings import SimulatorSettings

Clock = Callable[[], float]
JobStatus = Literal["INIT", "RUNNING", "SUCCESS", "FAIL"]

GROUP_STATUSES = frozenset({
    "creating", "available", "protected", "deleting", "error-deleting", "error",
    "starting", "error-starting", "reprotecting", "error-reprotecting", "stopping", "error-stopping",
    "reversing", "error-reversing", "failing-over", "failed-over", "error-failing-over",
})  # fmt: skip
STATIONS = ("source", "target")
EXTENDABLE_PAIR_STATUSES = frozenset({"available", "protected", "error-extending"})
_ID = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_ID_NAMESPACE = uuid.UUID("6f1c1a52-51a4-4a57-9a3c-5d2b7c0e9e11")  # stable ids for seeded pairs/volumes


@dataclass(frozen=True)
class Transition:
    """What one job does: its type, the status it shows while RUNNING, and its outcomes."""

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
# A pair job: the pair shows `extending`, then mirrors its group again (or stays error-extending).
EXTEND = Transition("expandReplicationPairNew", "extending", "", "error-extending", "SDRS.1820")

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


def is_resource_id(value: str) -> bool:
    """SDRS ids are UUIDs; 32 hex digits (job-style) are accepted too."""
    return _ID.fullmatch(value) is not None


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


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
    replication_id: str | None = None  # extend jobs
    new_size: int | None = None  # extend jobs
    priority_station: str | None = None  # reverse jobs: production site after success
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

    def error_code(self) -> str | None:
        if self.failure is None:
            return None
        return self.failure.error_code or self.transition.failure_code

    def fail_reason(self) -> str | None:
        if self.failure is None:
            return None
        return self.failure.fail_reason or f"{self.job_type}-fail: simulated failure"


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
    fault_level: str = "0"  # "5" (link broken) forbids a failover
    bootable: bool = False
    multiattach: bool = False
    extend_failed: bool = False  # shows error-extending until an extend succeeds
    # Derived from the group and jobs on every refresh:
    status: str = "available"
    replication_status: str = "inactive"
    progress: int = 0
    updated_at: float = 0.0


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


def _replication_status(group_status: str, ever_started: bool) -> str:
    if group_status in ("starting", "reprotecting"):
        return "copying"
    if group_status in ("protected", "reversing", "stopping", "failing-over"):
        return "active"
    if group_status == "failed-over" or (group_status == "available" and ever_started):
        return "active-stopped"
    return "inactive"  # never protected, or an error state


def _copy_progress(job: Job, now: float) -> int:
    if job.run_seconds <= 0:
        return 99
    return max(0, min(99, int(100 * (now - job.running_at) / job.run_seconds)))


class SdrsState:
    """All groups, pairs and jobs of all projects; ids are matched exactly as stored."""

    def __init__(self, settings: SimulatorSettings, now: Clock, new_job_id: Callable[[], str]) -> None:
        self.settings = settings
        self.now = now
        self._new_job_id = new_job_id
        self.groups: dict[tuple[str, str], ProtectionGroup] = {}
        self.pairs: dict[tuple[str, str], ReplicationPair] = {}
        self.jobs: dict[str, Job] = {}

    # -- seeding ------------------------------------------------------------------------------

    def add_group(
        self,
        project_id: str,
        group_id: str,
        *,
        status: str,
        name: str,
        source_availability_zone: str,
        target_availability_zone: str,
        priority_station: str,
        pair_count: int,
        description: str | None,
        volume_size: int,
    ) -> ProtectionGroup:
        if not is_resource_id(group_id):
            raise ValueError(f"group id must be a UUID or 32 hex digits: {group_id!r}")
        if status not in GROUP_STATUSES:
            raise ValueError(f"unknown protection group status {status!r}")
        if priority_station not in STATIONS:
            raise ValueError("priority_station must be 'source' or 'target'")
        if (project_id, group_id) in self.groups:
            raise ValueError(f"protection group {group_id} already exists in project {project_id}")
        created = self.now()
        group = ProtectionGroup(
            project_id=project_id, id=group_id, name=name, description=description,
            source_availability_zone=source_availability_zone,
            target_availability_zone=target_availability_zone,
            priority_station=priority_station, created_at=created, settled_status=status,
            ever_started=status != "available",
            source_vpc_id=stable_id(project_id, "vpc"), target_vpc_id=stable_id(project_id, "vpc"),
        )  # fmt: skip
        for index in range(pair_count):
            group.pairs.append(self._new_pair(group, index, volume_size))
        self.groups[(project_id, group_id)] = group
        for pair in group.pairs:
            self.pairs[(project_id, pair.id)] = pair
        self._refresh(group)
        return group

    def _new_pair(self, group: ProtectionGroup, index: int, volume_size: int) -> ReplicationPair:
        key = (group.project_id, group.id, str(index))
        return ReplicationPair(
            id=stable_id(*key, "pair"), project_id=group.project_id, server_group_id=group.id,
            name=f"{group.name}-replication-{index + 1}",
            volume_ids=(stable_id(*key, "production-volume"), stable_id(*key, "dr-volume")),
            created_at=group.created_at, volume_size=volume_size,
        )  # fmt: skip

    def fail_next_job(
        self, project_id: str, group_id: str, error_code: str | None, fail_reason: str | None
    ) -> None:
        group = self.groups.get((project_id, group_id))
        if group is None:
            raise KeyError(f"no protection group {group_id} in project {project_id}")
        group.pending_failure = JobFailure(error_code, fail_reason)

    # -- reads --------------------------------------------------------------------------------

    def group(self, project_id: str, group_id: str) -> ProtectionGroup:
        if not is_resource_id(group_id):
            raise SdrsError("SDRS.0207")
        group = self.groups.get((project_id, group_id))
        if group is None:
            raise SdrsError("SDRS.1013")
        self._refresh(group)
        return group

    def list_groups(self, project_id: str) -> list[ProtectionGroup]:
        groups = [group for (project, _), group in self.groups.items() if project == project_id]
        for group in groups:
            self._refresh(group)
        return groups

    def pair(self, project_id: str, replication_id: str) -> ReplicationPair:
        if not is_resource_id(replication_id):
            raise SdrsError("SDRS.0213")
        pair = self.pairs.get((project_id, replication_id))
        if pair is None:
            raise SdrsError("SDRS.1608")
        self._refresh(self.groups[(project_id, pair.server_group_id)])
        return pair

    def list_pairs(self, project_id: str) -> list[ReplicationPair]:
        return [pair for group in self.list_groups(project_id) for pair in group.pairs]

    def job(self, project_id: str, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.project_id != project_id:
            return None
        self._refresh(self.groups[(project_id, job.server_group_id)])
        return job

    # -- commands -----------------------------------------------------------------------------

    def submit_group_action(
        self, project_id: str, group_id: str, action: str, priority_station: str | None = None
    ) -> Job:
        """Gate `action` on the group's current status and start its job; raises SdrsError."""
        group = self.group(project_id, group_id)
        transition = GATES[action].get(group.status)
        if transition is None:
            raise SdrsError("SDRS.1002")
        if transition is not STOP and not group.pairs:
            raise SdrsError("SDRS.1002")  # enable/re-protect/failover/reverse need replication pairs
        if transition is FAILOVER and any(pair.fault_level == "5" for pair in group.pairs):
            raise SdrsError("SDRS.1824")  # replication link broken: failover not allowed
        if transition is REVERSE and priority_station == group.priority_station:
            raise SdrsError("SDRS.0201")  # already the production site: nothing to switch to
        return self._start_job(group, transition, priority_station=priority_station)

    def submit_extend(self, project_id: str, replication_id: str, new_size: int) -> Job:
        pair = self.pair(project_id, replication_id)
        if pair.status not in EXTENDABLE_PAIR_STATUSES:
            raise SdrsError("SDRS.0214")
        if new_size <= pair.volume_size:
            raise SdrsError("SDRS.0201")
        group = self.groups[(project_id, pair.server_group_id)]
        return self._start_job(group, EXTEND, replication_id=pair.id, new_size=new_size)

    def _start_job(
        self,
        group: ProtectionGroup,
        transition: Transition,
        *,
        priority_station: str | None = None,
        replication_id: str | None = None,
        new_size: int | None = None,
    ) -> Job:
        job = Job(
            job_id=self._new_job_id(), project_id=group.project_id, server_group_id=group.id,
            transition=transition, submitted_at=self.now(),
            init_seconds=self.settings.job_init_seconds, run_seconds=self.settings.job_run_seconds,
            failure=group.pending_failure, priority_station=priority_station,
            replication_id=replication_id, new_size=new_size,
        )  # fmt: skip
        group.pending_failure = None
        group.jobs.append(job)
        self.jobs[job.job_id] = job
        self._refresh(group)
        return job

    # -- derivation ---------------------------------------------------------------------------

    def _refresh(self, group: ProtectionGroup) -> None:
        """Apply ended jobs in end order, then derive the visible status of the group and its pairs."""
        now = self.now()
        for job in sorted(
            (j for j in group.jobs if not j.applied and j.ends_at <= now), key=lambda j: j.ends_at
        ):
            _apply(group, job)
        running = [job for job in group.jobs if job.status(now) == "RUNNING"]
        group_running = [job for job in running if job.is_group_job]
        group.status = group_running[-1].transition.transitional if group_running else group.settled_status
        group.updated_at = _last_change(group.created_at, [j for j in group.jobs if j.is_group_job], now)
        for pair in group.pairs:
            _derive_pair(group, pair, group_running, running, now)


def _apply(group: ProtectionGroup, job: Job) -> None:
    job.applied = True
    if not job.is_group_job:
        pair = next(pair for pair in group.pairs if pair.id == job.replication_id)
        pair.extend_failed = job.failure is not None
        if job.failure is None and job.new_size is not None:
            pair.volume_size = job.new_size
        return
    if job.failure is not None:
        group.settled_status = job.transition.failure
        return
    group.settled_status = job.transition.success
    if job.transition in (START, REPROTECT):
        group.ever_started = True
    elif job.transition is FAILOVER:
        group.priority_station = "target" if group.priority_station == "source" else "source"
    elif job.transition is REVERSE and job.priority_station is not None:
        group.priority_station = job.priority_station


def _last_change(created: float, jobs: list[Job], now: float) -> float:
    """A job changes what clients see when it starts RUNNING and when it ends."""
    times = [t for job in jobs for t in (job.running_at, job.ends_at) if t <= now]
    return max([created, *times])


def _derive_pair(
    group: ProtectionGroup, pair: ReplicationPair, group_running: list[Job], running: list[Job], now: float
) -> None:
    pair.replication_status = _replication_status(group.status, group.ever_started)
    copying = [job for job in group_running if job.transition in (START, REPROTECT)]
    if pair.replication_status == "copying" and copying:
        pair.progress = _copy_progress(copying[-1], now)
    else:
        pair.progress = 100 if pair.replication_status in ("active", "active-stopped") else 0
    own_jobs = [job for job in group.jobs if job.replication_id == pair.id]
    if any(job in running for job in own_jobs):
        pair.status = EXTEND.transitional
    elif pair.extend_failed:
        pair.status = EXTEND.failure
    else:
        pair.status = group.status  # pair statuses mirror the group's (same vocabulary)
    pair.updated_at = _last_change(group.updated_at, own_jobs, now)
