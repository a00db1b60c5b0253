"""Never a duplicate SDRS action: what this shim has in flight, or recently started, per protection group.

SDRS has no idempotency key, and its status gate lets a second `start-server-group` through while the
first job is still INIT (the group keeps `failed-over` until the job runs). So the shim remembers, per
(project, protection group):
- an action in flight: a concurrent one is refused (409) before it reaches SDRS;
- the job its last action started: a new action is refused while that job is INIT or RUNNING;
- an action POST whose outcome is unknown (SDRS timed out or dropped the connection after the POST
  was sent): new actions are refused for `settle_seconds`, as SDRS may have started it.
Entries go away when their job is seen finished or after `job_memory_seconds`.

With one process the state lives in memory. With `--workers N` the workers share it through
`shared_dir`: one small file per group, held under an exclusive `flock` while an action is in flight
(another worker's concurrent action finds it locked: 409) and holding the record in between.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shim.translate.legacy import LegacyError

GroupKey = tuple[str, str]  # (project_id, protection_group_id): validated ids, safe in a file name


@dataclass
class _GroupRecord:
    job_ids: tuple[str, ...] = ()
    job_action: str = ""  # the legacy action key that started job_ids
    job_started: float = 0.0
    unknown_until: float = 0.0


@dataclass
class _Claim:
    """An action in flight on one group in this process (and, when shared, its held lock)."""

    record: _GroupRecord
    lock_fd: int | None = None


class ActionGuard:
    def __init__(
        self, settle_seconds: float, job_memory_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic, shared_dir: Path | None = None,
    ) -> None:
        self._settle_seconds = settle_seconds
        self._job_memory_seconds = job_memory_seconds
        self._clock = clock  # with shared_dir: CLOCK_MONOTONIC, the same for every process of the host
        self._shared_dir = shared_dir
        self._records: dict[GroupKey, _GroupRecord] = {}
        self._claims: dict[GroupKey, _Claim] = {}

    def acquire(self, key: GroupKey, rcg_id: str) -> None:
        """Claim the group for one action, or raise a legacy 409 saying why not."""
        in_progress = LegacyError(409, f"Another action on replication consistency group {rcg_id} is in progress.")
        if key in self._claims:
            raise in_progress
        lock_fd = None
        if self._shared_dir is not None:
            lock_fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise in_progress from None
            self._records[key] = _read_record(lock_fd)
        record = self._records.setdefault(key, _GroupRecord())
        now = self._clock()
        if record.unknown_until > now:
            _unlock(lock_fd)
            wait = math.ceil(record.unknown_until - now)
            raise LegacyError(
                409,
                f"The outcome of the previous action on replication consistency group {rcg_id} is not "
                f"known yet (SDRS did not answer it); retry in {wait} s.",
                retry_after=wait,
            )
        if record.job_ids and now - record.job_started > self._job_memory_seconds:
            record.job_ids = ()
        self._claims[key] = _Claim(record, lock_fd)

    def release(self, key: GroupKey) -> None:
        claim = self._claims.pop(key, None)
        if claim is None:
            return
        if claim.lock_fd is not None:
            _write_record(claim.lock_fd, claim.record)
            _unlock(claim.lock_fd)
        elif not claim.record.job_ids and claim.record.unknown_until <= self._clock():
            self._records.pop(key, None)

    def pending_jobs(self, key: GroupKey) -> tuple[str, ...]:
        """The jobs the last action on this group started, while they may still be running."""
        record = self._records.get(key)
        return record.job_ids if record else ()

    def pending_action(self, key: GroupKey) -> tuple[str, tuple[str, ...]] | None:
        """(legacy action key, job ids) of the last action, while its jobs may still be running."""
        record = self._peek(key)
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

    def outcome_unknown(self, key: GroupKey) -> None:
        record = self._records.setdefault(key, _GroupRecord())
        record.unknown_until = self._clock() + self._settle_seconds

    def _peek(self, key: GroupKey) -> _GroupRecord | None:
        """The group's record for a read: another worker may have written it since (no lock needed)."""
        if self._shared_dir is None or key in self._claims:
            return self._records.get(key)
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return _read_record(fd)
        finally:
            os.close(fd)

    def _path(self, key: GroupKey) -> Path:
        assert self._shared_dir is not None
        return self._shared_dir / f"{key[0]}_{key[1]}.json"


def _read_record(fd: int) -> _GroupRecord:
    data = os.pread(fd, 64 * 1024, 0)
    try:
        fields = json.loads(data) if data else {}
        return _GroupRecord(job_ids=tuple(fields.get("job_ids", ())), job_action=fields.get("job_action", ""),
                            job_started=float(fields.get("job_started", 0.0)),
                            unknown_until=float(fields.get("unknown_until", 0.0)))
    except (ValueError, TypeError, AttributeError):
        return _GroupRecord()  # a torn or foreign file: start afresh rather than fail every action


def _write_record(fd: int, record: _GroupRecord) -> None:
    data = json.dumps(asdict(record)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _unlock(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
