"""Pure SDRS v1 state: protection groups, replication pairs, jobs and the status machine.

No I/O and no background tasks: every status is derived from the injected clock when state is read.
A job is INIT for `job_init_seconds` (the group keeps its status, so SDRS accepts a second action),
then RUNNING for `job_run_seconds` (the group or pair shows the transitional status), then SUCCESS
or FAIL; its outcome is applied the first time anything is read after it ended (derive.py computes
what clients see from there).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from shim.simulator import derive
from shim.simulator.errors import SdrsError
from shim.simulator.models import Job, JobFailure, PairPin, ProtectionGroup, ReplicationPair
from shim.simulator.rules import (
    CREATE_PAIR,
    DELETABLE_PAIR_STATUSES,
    DELETE_GROUP,
    DELETE_PAIR,
    EXTEND,
    EXTENDABLE_PAIR_STATUSES,
    FAILOVER,
    FAULT_LEVELS,
    GATES,
    GROUP_STATUSES,
    PAIR_CREATE_GROUP_STATUSES,
    PAIR_DELETE_GROUP_STATUSES,
    PAIR_STATUSES,
    REPLICATION_STATUSES,
    REPROTECT,
    REVERSE,
    START,
    STATIONS,
    STOP,
    Transition,
)
from shim.simulator.settings import SimulatorSettings

# The records are re-exported: server.py and the benchmark import them from here.
__all__ = [
    "UNSET", "Clock", "Job", "JobFailure", "ProtectionGroup", "ReplicationPair", "SdrsState",
    "is_resource_id", "stable_id",
]  # fmt: skip

Clock = Callable[[], float]
_ID = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_ID_NAMESPACE = uuid.UUID("6f1c1a52-51a4-4a57-9a3c-5d2b7c0e9e11")  # stable ids for seeded pairs/volumes
UNSET: Any = object()  # "leave this field alone" in set_pair_state (None is a value there)


def is_resource_id(value: str) -> bool:
    """SDRS ids are UUIDs; 32 hex digits (job-style) are accepted too."""
    return _ID.fullmatch(value) is not None


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


class SdrsState:
    """All groups, pairs, jobs and volumes of all projects; ids are matched exactly as stored."""

    def __init__(self, settings: SimulatorSettings, now: Clock, new_job_id: Callable[[], str]) -> None:
        self.settings = settings
        self.now = now
        self._new_job_id = new_job_id
        self.groups: dict[tuple[str, str], ProtectionGroup] = {}
        self.pairs: dict[tuple[str, str], ReplicationPair] = {}
        self.jobs: dict[str, Job] = {}
        self.volumes: set[str] = set()  # EVS disks that exist (pairs' disks and added ones)

    # -- seeding and test controls ----------------------------------------------------------------

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
            ever_started=status != "available", changed_at=created,
            source_vpc_id=stable_id(project_id, "vpc"), target_vpc_id=stable_id(project_id, "vpc"),
        )  # fmt: skip
        self.groups[(project_id, group_id)] = group
        for index in range(pair_count):
            key = (project_id, group_id, str(index))
            self._add_pair(group, ReplicationPair(
                id=stable_id(*key, "pair"), project_id=project_id, server_group_id=group_id,
                name=f"{name}-replication-{index + 1}",
                volume_ids=(stable_id(*key, "production-volume"), stable_id(*key, "dr-volume")),
                created_at=created, changed_at=created, volume_size=volume_size,
            ))  # fmt: skip
            self.volumes.update(group.pairs[-1].volume_ids)
        self._refresh(group)
        return group

    def fail_next_job(
        self, project_id: str, group_id: str, error_code: str | None, fail_reason: str | None
    ) -> None:
        group = self._known_group(project_id, group_id)
        group.pending_failure = JobFailure(error_code, fail_reason)

    def set_pair_state(
        self,
        project_id: str,
        pair_id: str,
        *,
        status: str = UNSET,
        replication_status: str | None = UNSET,
        progress: int = UNSET,
        fault_level: str = UNSET,
    ) -> ReplicationPair:
        """Give a pair its own state. `fault_level` stays until changed; the other values show
        until a job on the pair or its group starts or ends, then the pair follows its jobs again."""
        pair = self._known_pair(project_id, pair_id)
        group = self.groups[(project_id, pair.server_group_id)]
        self._refresh(group)  # an expired pin must not be merged into the new one
        if status is not UNSET and status not in PAIR_STATUSES:
            raise ValueError(f"unknown replication pair status {status!r}")
        if replication_status is not UNSET and replication_status not in (*REPLICATION_STATUSES, None):
            raise ValueError(f"unknown replication_status {replication_status!r}")
        if progress is not UNSET and (isinstance(progress, bool) or progress not in range(101)):
            raise ValueError("progress must be an int from 0 to 100")
        if fault_level is not UNSET:
            if fault_level not in FAULT_LEVELS:
                raise ValueError(f"fault_level must be one of {sorted(FAULT_LEVELS)}")
            pair.fault_level = fault_level
        pinned = {"status": status, "replication_status": replication_status, "progress": progress}
        values = {key: value for key, value in pinned.items() if value is not UNSET}
        now = self.now()
        pair.changed_at = now
        if values:
            previous = pair.pin.values if pair.pin is not None else {}
            pair.pin = PairPin(now, {**previous, **values})
        self._refresh(group)
        return pair

    def attach_pair(self, project_id: str, pair_id: str, protected_instance_id: str, device: str) -> None:
        """Attach a pair to a (not simulated) protected instance: it shows in `attachment`."""
        self._known_pair(project_id, pair_id).attachment = (protected_instance_id, device)

    def add_volume(self, volume_id: str) -> None:
        """An EVS disk that exists, e.g. the production disk of a pair to be created."""
        if not is_resource_id(volume_id):
            raise ValueError(f"volume id must be a UUID: {volume_id!r}")
        self.volumes.add(volume_id)

    def _known_group(self, project_id: str, group_id: str) -> ProtectionGroup:
        group = self.groups.get((project_id, group_id))
        if group is None:
            raise KeyError(f"no protection group {group_id} in project {project_id}")
        return group

    def _known_pair(self, project_id: str, pair_id: str) -> ReplicationPair:
        pair = self.pairs.get((project_id, pair_id))
        if pair is None:
            raise KeyError(f"no replication pair {pair_id} in project {project_id}")
        return pair

    # -- reads --------------------------------------------------------------------------------

    def group(self, project_id: str, group_id: str) -> ProtectionGroup:
        if not is_resource_id(group_id):
            raise SdrsError("SDRS.0207")
        group = self.groups.get((project_id, group_id))
        if group is None or not self._refreshed(group):
            raise SdrsError("SDRS.1013")
        return group

    def list_groups(self, project_id: str) -> list[ProtectionGroup]:
        groups = [group for (project, _), group in self.groups.items() if project == project_id]
        return [group for group in groups if self._refreshed(group)]

    def pair(self, project_id: str, replication_id: str) -> ReplicationPair:
        if not is_resource_id(replication_id):
            raise SdrsError("SDRS.0213")
        pair = self.pairs.get((project_id, replication_id))
        if pair is None:
            raise SdrsError("SDRS.1608")
        self._refresh(self.groups[(project_id, pair.server_group_id)])
        if (project_id, replication_id) not in self.pairs:
            raise SdrsError("SDRS.1608")  # its delete job ended just now
        return pair

    def list_pairs(self, project_id: str) -> list[ReplicationPair]:
        return [pair for group in self.list_groups(project_id) for pair in group.pairs]

    def job(self, project_id: str, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.project_id != project_id:
            return None
        group = self.groups.get((project_id, job.server_group_id))
        if group is not None:  # None: the group was deleted; its jobs stay readable
            self._refresh(group)
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

    def rename_group(self, project_id: str, group_id: str, name: str) -> ProtectionGroup:
        """Synchronous; the page lists no constraint, so any status may be renamed."""
        group = self.group(project_id, group_id)
        group.name = name
        group.changed_at = self.now()
        self._refresh(group)
        return group

    def submit_group_delete(self, project_id: str, group_id: str) -> Job:
        """Only an empty group may go (no pairs; protected instances and drills are not simulated).
        The page documents no status constraint, so none is applied."""
        group = self.group(project_id, group_id)
        if group.pairs:
            raise SdrsError("SDRS.1010")
        return self._start_job(group, DELETE_GROUP)

    def submit_extend(self, project_id: str, replication_id: str, new_size: int) -> Job:
        pair = self.pair(project_id, replication_id)
        if pair.status not in EXTENDABLE_PAIR_STATUSES:
            raise SdrsError("SDRS.0214")
        if new_size <= pair.volume_size:
            raise SdrsError("SDRS.0201")
        group = self.groups[(project_id, pair.server_group_id)]
        return self._start_job(group, EXTEND, replication_id=pair.id, new_size=new_size)

    def submit_pair_delete(
        self, project_id: str, replication_id: str, server_group_id: str | None, delete_target_volume: bool
    ) -> Job:
        """The gates of "Deleting a Replication Pair": group status, pair status, not attached."""
        pair = self.pair(project_id, replication_id)
        if server_group_id is not None and server_group_id != pair.server_group_id:
            self.group(project_id, server_group_id)  # SDRS.1013 when there is no such group
            raise SdrsError("SDRS.1611")
        group = self.groups[(project_id, pair.server_group_id)]
        if group.status not in PAIR_DELETE_GROUP_STATUSES:
            raise SdrsError("SDRS.1002")
        if pair.status not in DELETABLE_PAIR_STATUSES:
            raise SdrsError("SDRS.0214")
        if pair.attachment is not None:
            raise SdrsError("SDRS.1605")
        return self._start_job(
            group, DELETE_PAIR, replication_id=pair.id, delete_target_volume=delete_target_volume
        )

    def submit_pair_create(
        self, project_id: str, group_id: str, volume_id: str, name: str, description: str | None
    ) -> Job:
        """The pair exists (`creating`) from now on; its DR disk is created when the job succeeds."""
        group = self.group(project_id, group_id)
        if group.status not in PAIR_CREATE_GROUP_STATUSES:
            # The appendix's message for exactly this constraint ("not available or protected").
            raise SdrsError("SDRS.1024")
        if volume_id not in self.volumes:
            raise SdrsError("SDRS.1803")
        if any(volume_id in pair.volume_ids for pair in self.pairs.values()):
            raise SdrsError("SDRS.1811")
        now = self.now()
        pair = ReplicationPair(
            id=str(uuid.uuid4()), project_id=project_id, server_group_id=group.id, name=name,
            description=description, volume_ids=(volume_id, str(uuid.uuid4())), created_at=now,
            changed_at=now,
        )  # fmt: skip
        self._add_pair(group, pair)
        return self._start_job(group, CREATE_PAIR, replication_id=pair.id)

    def _add_pair(self, group: ProtectionGroup, pair: ReplicationPair) -> None:
        group.pairs.append(pair)
        self.pairs[(group.project_id, pair.id)] = pair

    def _start_job(
        self,
        group: ProtectionGroup,
        transition: Transition,
        *,
        priority_station: str | None = None,
        replication_id: str | None = None,
        new_size: int | None = None,
        delete_target_volume: bool = False,
    ) -> Job:
        job = Job(
            job_id=self._new_job_id(), project_id=group.project_id, server_group_id=group.id,
            transition=transition, submitted_at=self.now(),
            init_seconds=self.settings.job_init_seconds, run_seconds=self.settings.job_run_seconds,
            failure=group.pending_failure, priority_station=priority_station,
            replication_id=replication_id, new_size=new_size, delete_target_volume=delete_target_volume,
        )  # fmt: skip
        group.pending_failure = None
        group.jobs.append(job)
        self.jobs[job.job_id] = job
        self._refresh(group)
        return job

    # -- outcomes -----------------------------------------------------------------------------

    def _refreshed(self, group: ProtectionGroup) -> bool:
        """Refresh `group`; False when its delete job has just ended (it is gone)."""
        self._refresh(group)
        return self.groups.get((group.project_id, group.id)) is group

    def _refresh(self, group: ProtectionGroup) -> None:
        """Apply ended jobs in end order, then derive what clients see (unless the group is gone)."""
        now = self.now()
        for job in sorted(
            (j for j in group.jobs if not j.applied and j.ends_at <= now), key=lambda j: j.ends_at
        ):
            self._apply(group, job)
            if self.groups.get((group.project_id, group.id)) is not group:
                return
        derive.refresh_group(group, now, self.settings.sync_seconds)

    def _apply(self, group: ProtectionGroup, job: Job) -> None:
        job.applied = True
        if not job.is_group_job:
            self._apply_to_pair(group, job)
            return
        if job.transition is DELETE_GROUP and job.failure is None and group.pairs:
            # A pair was created while the delete was INIT: SDRS's own check fails the job.
            job.failure = JobFailure("SDRS.1010", "deleteProtectionGroupNoCG-fail: group has replication pairs")
        if job.failure is not None:
            group.settled_status = job.transition.failure
            return
        if job.transition is DELETE_GROUP:
            del self.groups[(group.project_id, group.id)]
            return
        group.settled_status = job.transition.success
        if job.transition in (START, REPROTECT):
            group.ever_started = True
        elif job.transition is FAILOVER:
            group.priority_station = "target" if group.priority_station == "source" else "source"
        elif job.transition is REVERSE and job.priority_station is not None:
            group.priority_station = job.priority_station

    def _apply_to_pair(self, group: ProtectionGroup, job: Job) -> None:
        pair = next((pair for pair in group.pairs if pair.id == job.replication_id), None)
        if pair is None:
            return  # deleted by an earlier job (a second delete accepted while the first was INIT)
        if job.failure is not None:
            pair.failed_status = job.transition.failure
            if job.transition is CREATE_PAIR:
                pair.failure_detail = job.error_code()
            return
        pair.failed_status = None
        if job.transition is EXTEND and job.new_size is not None:
            pair.volume_size = job.new_size
        elif job.transition is CREATE_PAIR:
            self.volumes.add(pair.dr_volume_id)
        elif job.transition is DELETE_PAIR:
            group.pairs.remove(pair)
            del self.pairs[(group.project_id, pair.id)]
            if job.delete_target_volume:
                self.volumes.discard(pair.dr_volume_id)
