"""What the shim remembers about one protection group between requests, and what it means (pure).

A `GroupRecord` outlives the process that wrote it (see `shim.state.store`). Times are seconds since
the epoch on the state store's clock (`StateStore.now()`: Redis's `TIME`, the host's for SQLite), so a
deadline written before a restart still holds after it, and every shim sharing the store reads it on
the clock that wrote it, whatever its own clock says.

The record answers one question before an action is sent: may SDRS get another action POST for this
group now? Not while:
- a POST may be on its way or its answer was lost (`sending_since`: written *before* the POST, cleared
  once SDRS answered with a job id or a definite refusal): the action may have started, so nothing is
  sent for `settle_seconds` after it;
- the settle deadline after an action whose outcome is unknown has not passed (`settle_until`);
- the jobs of the last action are not known to have finished (`job_ids` with `jobs_pending`): the
  caller reads them from SDRS first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from shim.translate.legacy import id_key

# Jobs older than this are no longer read before an action: SDRS jobs end long before.
JOB_MEMORY_SECONDS = 3600.0


def group_key(project_id: str, group_id: str) -> str:
    """The one key a group's record lives under, whatever the spelling of either id."""
    return f"group:{id_key(project_id)}:{id_key(group_id)}"


@dataclass(frozen=True)
class GroupRecord:
    action: str = ""  # the legacy action key that started job_ids
    job_ids: tuple[str, ...] = ()
    jobs_pending: bool = False  # False once the jobs were seen finished
    started_at: float = 0.0
    sending_since: float | None = None
    settle_until: float = 0.0
    holder: str = ""  # the lease token of the claim that wrote it (see `absorbing`)
    extra: dict[str, Any] = field(default_factory=dict)  # fields written by later features, kept as read

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> GroupRecord:
        if not document:
            return cls()
        known = {name: document[name] for name in cls.__dataclass_fields__ if name in document and name != "extra"}
        extra = {name: value for name, value in document.items() if name not in cls.__dataclass_fields__}
        try:
            return cls(
                action=str(known.get("action", "")),
                job_ids=tuple(str(job) for job in known.get("job_ids", ())),
                jobs_pending=bool(known.get("jobs_pending", False)),
                started_at=float(known.get("started_at", 0.0)),
                sending_since=None if known.get("sending_since") is None else float(known["sending_since"]),
                settle_until=float(known.get("settle_until", 0.0)),
                holder=str(known.get("holder", "")),
                extra=extra,
            )
        except (TypeError, ValueError):
            # A record this version cannot read: assume the worst (an action may be on its way).
            return cls(sending_since=0.0, extra=extra)

    def to_document(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies recursively, and this runs twice per action.
        return {**self.extra, "action": self.action, "job_ids": list(self.job_ids), "jobs_pending": self.jobs_pending,
                "started_at": self.started_at, "sending_since": self.sending_since,
                "settle_until": self.settle_until, "holder": self.holder}

    # -- the questions asked before an action ---------------------------------------------------

    def unsettled_for(self, now: float, settle_seconds: float) -> int:
        """Whole seconds until a new action may be sent as far as unknown outcomes go (0: may now)."""
        deadline = self.settle_until
        if self.sending_since is not None:
            deadline = max(deadline, self.sending_since + settle_seconds)
        return max(0, math.ceil(deadline - now))

    def pending_jobs(self, now: float) -> tuple[str, ...]:
        """The last action's jobs while they may still run (forgotten after JOB_MEMORY_SECONDS)."""
        if not self.jobs_pending or now - self.started_at > JOB_MEMORY_SECONDS:
            return ()
        return self.job_ids

    # -- what each step of an action writes -----------------------------------------------------

    def held_by(self, token: str) -> GroupRecord:
        """The record as a new claim (lease `token`) will write it."""
        return replace(self, holder=token)

    def about_to_send(self, now: float) -> GroupRecord:
        """Written (durably, under the lease) before an action POST leaves."""
        return replace(self, sending_since=now)

    def job_started(self, action: str, job_id: str, now: float, first_of_action: bool) -> GroupRecord:
        job_ids = (job_id,) if first_of_action else (*self.job_ids, job_id)
        return replace(self, action=action, job_ids=job_ids, jobs_pending=True, started_at=now, sending_since=None)

    def not_sent(self) -> GroupRecord:
        """The POST never left (no connection) or SDRS refused it outright: nothing was started."""
        return replace(self, sending_since=None)

    def outcome_unknown(self, now: float, settle_seconds: float) -> GroupRecord:
        return replace(self, sending_since=None, settle_until=max(self.settle_until, now + settle_seconds))

    def jobs_finished(self) -> GroupRecord:
        return replace(self, jobs_pending=False)

    def settled(self, now: float) -> GroupRecord:
        """A `sending_since` whose settle time has passed is history: the group's status now tells."""
        return replace(self, sending_since=None) if self.sending_since is not None else self

    # -- a holder whose lease ran out ------------------------------------------------------------

    def absorbing(self, lost: GroupRecord) -> GroupRecord:
        """This record (the store's, written by whoever held the group last) with what a holder whose
        lease ran out meanwhile (a stall longer than the lease) learnt: `lost`, its own record. Where
        this is `lost`'s own earlier write, `lost` simply replaces it. Else another claim acted in
        between: its record stays, `lost`'s pending jobs are added to it and its unknown outcomes keep
        their settle times, so no later action starts while anything either of them started may run."""
        if self.holder == lost.holder:
            return lost
        record = replace(self, settle_until=max(self.settle_until, lost.settle_until))
        if lost.sending_since is not None:
            since = lost.sending_since if record.sending_since is None else max(record.sending_since,
                                                                                   lost.sending_since)
            record = replace(record, sending_since=since)
        if lost.jobs_pending and lost.job_ids:
            if record.jobs_pending:
                job_ids = record.job_ids + tuple(job for job in lost.job_ids if job not in record.job_ids)
                record = replace(record, job_ids=job_ids, started_at=max(record.started_at, lost.started_at))
            else:
                record = replace(record, action=lost.action, job_ids=lost.job_ids, jobs_pending=True,
                                 started_at=lost.started_at)
        return record
