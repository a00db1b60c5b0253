"""Never a duplicate SDRS action: what this shim has in flight, or recently started, per protection group.

SDRS has no idempotency key, and its status gate lets a second `start-server-group` through while the
first job is still INIT (the group keeps `failed-over` until the job runs). So the shim remembers, per
(project, protection group):
- an action in flight: a concurrent one is refused (409) before it reaches SDRS;
- the job its last action started: a new action is refused while that job is INIT or RUNNING;
- an action POST whose outcome is unknown (SDRS timed out or dropped the connection after the POST
  was sent): new actions are refused for `settle_seconds`, as SDRS may have started it.
State is per shim process; entries go away when their job is seen finished or after `job_memory_seconds`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from shim.legacy import LegacyError

GroupKey = tuple[str, str]  # (project_id, protection_group_id)


@dataclass
class _GroupRecord:
    in_flight: bool = False
    job_ids: tuple[str, ...] = ()
    job_action: str = ""  # the legacy action key that started job_ids
    job_started: float = 0.0
    unknown_until: float = 0.0


class ActionGuard:
    def __init__(
        self, settle_seconds: float, job_memory_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settle_seconds = settle_seconds
        self._job_memory_seconds = job_memory_seconds
        self._clock = clock
        self._records: dict[GroupKey, _GroupRecord] = {}

    def acquire(self, key: GroupKey, rcg_id: str) -> None:
        """Claim the group for one action, or raise a legacy 409 saying why not."""
        record = self._records.setdefault(key, _GroupRecord())
        now = self._clock()
        if record.in_flight:
            raise LegacyError(409, f"Another action on replication consistency group {rcg_id} is in progress.")
        if record.unknown_until > now:
            wait = math.ceil(record.unknown_until - now)
            raise LegacyError(
                409,
                f"The outcome of the previous action on replication consistency group {rcg_id} is not "
                f"known yet (SDRS did not answer it); retry in {wait} s.",
                retry_after=wait,
            )
        if record.job_ids and now - record.job_started > self._job_memory_seconds:
            record.job_ids = ()
        record.in_flight = True

    def release(self, key: GroupKey) -> None:
        record = self._records.get(key)
        if record is None:
            return
        record.in_flight = False
        if not record.job_ids and record.unknown_until <= self._clock():
            del self._records[key]

    def pending_jobs(self, key: GroupKey) -> tuple[str, ...]:
        """The jobs the last action on this group started, while they may still be running."""
        record = self._records.get(key)
        return record.job_ids if record else ()

    def pending_action(self, key: GroupKey) -> tuple[str, tuple[str, ...]] | None:
        """(legacy action key, job ids) of the last action, while its jobs may still be running."""
        record = self._records.get(key)
        if record is None or not record.job_ids:
            return None
        if self._clock() - record.job_started > self._job_memory_seconds:
            return None
        return record.job_action, record.job_ids

    def job_started(self, key: GroupKey, action: str, job_id: str) -> None:
        record = self._records.setdefault(key, _GroupRecord())
        record.job_ids, record.job_action = (*record.job_ids, job_id), action
        record.job_started = self._clock()

    def jobs_finished(self, key: GroupKey) -> None:
        record = self._records.get(key)
        if record is not None:
            record.job_ids = ()
            if not record.in_flight and record.unknown_until <= self._clock():
                del self._records[key]

    def outcome_unknown(self, key: GroupKey) -> None:
        record = self._records.setdefault(key, _GroupRecord())
        record.unknown_until = self._clock() + self._settle_seconds
