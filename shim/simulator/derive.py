"""What clients see at a given moment, derived from a group's jobs, the clock and test pins (pure).

A group shows the transitional status of its last RUNNING group job, else its settled status. Each
pair follows its group by default; its own RUNNING job (extend, delete, create), a failure of its own,
a data copy in progress and a test pin change that, in this order of precedence (a pin wins).
"""

from __future__ import annotations

from shim.simulator.models import Job, ProtectionGroup, ReplicationPair
from shim.simulator.rules import CREATE_PAIR, REPROTECT, START

CopyWindow = tuple[float, float]  # (copy starts, copy ends): progress rises linearly across it
_COPYING_GROUP_STATUSES = ("starting", "reprotecting")


def refresh_group(group: ProtectionGroup, now: float, sync_seconds: float) -> None:
    """Set the visible status of `group` and of its pairs as of `now` (ended jobs already applied)."""
    group_jobs = [job for job in group.jobs if job.is_group_job]
    group_running = [job for job in group_jobs if job.status(now) == "RUNNING"]
    group.status = group_running[-1].transition.transitional if group_running else group.settled_status
    group_events = [t for job in group_jobs for t in job.events(now)]
    group.updated_at = max([group.changed_at, *group_events])
    group_copy = _group_copy(group, group_jobs, group_running, now, sync_seconds)
    for pair in group.pairs:
        own_jobs = [job for job in group.jobs if job.replication_id == pair.id]
        _derive_pair(group, pair, group_events, own_jobs, group_copy, now, sync_seconds)


def replication_status(group_status: str, ever_started: bool) -> str:
    if group_status in _COPYING_GROUP_STATUSES:
        return "copying"
    if group_status in ("protected", "reversing", "stopping", "failing-over"):
        return "active"
    if group_status == "failed-over" or (group_status == "available" and ever_started):
        return "active-stopped"
    return "inactive"  # never protected, or an error state


def copy_progress(window: CopyWindow, now: float) -> int:
    """Percent copied; 100 only once the copy is over (then the pair is `active`)."""
    start, end = window
    if end <= start:
        return 99
    return max(0, min(99, int(100 * (now - start) / (end - start))))


def _group_copy(
    group: ProtectionGroup, group_jobs: list[Job], group_running: list[Job], now: float, sync_seconds: float
) -> CopyWindow | None:
    """The data copy of a start/re-protect: while its job runs, then `sync_seconds` after it succeeded."""
    if group.status in _COPYING_GROUP_STATUSES:
        copying = [job for job in group_running if job.transition in (START, REPROTECT)]
        if not copying:
            return None  # seeded in that status: copying, no progress
        return copying[-1].running_at, copying[-1].ends_at + sync_seconds
    if group.status != "protected" or sync_seconds <= 0:
        return None
    started = [job for job in group_jobs if job.running_at <= now]
    if not started:
        return None
    last = max(started, key=lambda job: job.running_at)
    if last.transition in (START, REPROTECT) and last.failure is None and now < last.ends_at + sync_seconds:
        return last.running_at, last.ends_at + sync_seconds
    return None


def _pair_copy(
    group: ProtectionGroup, creation: Job | None, now: float, sync_seconds: float
) -> CopyWindow | None:
    """A pair created in a protected group copies its data for `sync_seconds` after its job."""
    if creation is None or group.status != "protected" or now >= creation.ends_at + sync_seconds:
        return None
    return creation.ends_at, creation.ends_at + sync_seconds


def _derive_pair(
    group: ProtectionGroup,
    pair: ReplicationPair,
    group_events: list[float],
    own_jobs: list[Job],
    group_copy: CopyWindow | None,
    now: float,
    sync_seconds: float,
) -> None:
    creation = next((job for job in own_jobs if job.transition is CREATE_PAIR), None)
    being_created = creation is not None and creation.status(now) in ("INIT", "RUNNING")
    # A pair exists from its create request on, so it shows `creating` while that job is INIT too.
    active = [job for job in own_jobs if job.status(now) == "RUNNING" or (job is creation and being_created)]
    if creation is not None and (being_created or creation.failure is not None):
        pair.replication_status, pair.progress = "inactive", 0  # no data copied yet, or never
    elif (copy := group_copy or _pair_copy(group, creation, now, sync_seconds)) is not None:
        pair.replication_status, pair.progress = "copying", copy_progress(copy, now)
    else:
        pair.replication_status = replication_status(group.status, group.ever_started)
        pair.progress = 100 if pair.replication_status in ("active", "active-stopped") else 0

    if active:
        pair.status = active[-1].transition.transitional
    elif pair.failed_status is not None:
        pair.status = pair.failed_status
    else:
        pair.status = group.status  # pair statuses mirror the group's (same vocabulary)

    events = group_events + [t for job in own_jobs for t in job.events(now)]
    if pair.pin is not None and any(t > pair.pin.set_at for t in events):
        pair.pin = None  # a job took the pair over again
    if pair.pin is not None:
        for key, value in pair.pin.values.items():
            setattr(pair, key, value)
    pair.updated_at = max([pair.changed_at, *events])
