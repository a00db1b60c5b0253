"""Never a duplicate SDRS action: one action at a time per protection group, across workers, shims
and restarts.

SDRS has no idempotency key, and its status gate lets a second `start-server-group` through while the
first job is still INIT (the group keeps `failed-over` until the job runs). So, per (project,
protection group), keyed by normalised ids (`records.group_key`):
- an action holds the group's lease in the state store: a concurrent action anywhere gets 409;
- before each action POST leaves, the record says so (`sending_since`, written under the lease): if
  the process dies before SDRS's answer is recorded, the next holder knows an action may have started
  and sends nothing for `settle_seconds`. The claim writes that note with the lease, in the same
  store transaction, dated `note_ahead` seconds ahead: a first POST that leaves before then is
  covered by it (one write fewer per action); a later one writes its own note first. A claim that
  sends nothing clears it when it ends; one that dies before sending leaves the group waiting
  `settle_seconds` (plus `note_ahead`) instead of the lease's time;
- after the POST, the job id (or the unknown outcome, or "nothing was sent") is recorded;
- the caller reads the last action's jobs before a new action and refuses while they run.
When the store cannot be reached, actions fail closed: a legacy 503 and nothing sent.

Every time written or compared here is the store's clock (`StateStore.now()`, and the time the lease was
taken, handed to the claim's note), never this shim's own: two shims whose clocks disagree by hours
still agree on a settle deadline and on which jobs are recent enough to be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from shim.state.records import GroupRecord, group_key
from shim.state.store import Document, Lease, LeaseLost, StateStore, StoreUnavailable
from shim.translate.legacy import LegacyError

log = logging.getLogger("shim.state")

STORE_RETRY_AFTER_SECONDS = 5
LEASE_POLL_SECONDS = 0.05
NOTE_AHEAD_SECONDS = 1.0  # how far ahead the claim's own note reaches (capped at a third of the lease)


def recorded(document: Document, now: float) -> Document:
    """A group record as written at `now` (the store's clock): `recorded_at` says how old the knowledge
    in it is (the report shows it; the guard itself never reads it)."""
    return {**document, "recorded_at": now}


def store_unavailable(doing: str) -> LegacyError:
    return LegacyError(
        503, f"The migration proxy cannot reach its state store, so it sends no action to SDRS ({doing}); "
        "try again shortly.", retry_after=STORE_RETRY_AFTER_SECONDS, refusal="state_store",
    )


@dataclass
class GroupClaim:
    """One action's hold on a group: the record as read under the lease, changed step by step."""

    store: StateStore
    lease: Lease
    record: GroupRecord
    settle_seconds: float
    noted_until: float | None = None  # the claim's note, while no POST has used it
    lost: bool = False
    _renewal: asyncio.Task[None] | None = field(default=None, repr=False)

    async def save(self) -> None:
        """Write the record now, only while the lease is still held (a fenced write)."""
        if self.lost:
            raise LegacyError(409, "The migration proxy lost its hold on the group; nothing more was sent.",
                             refusal="lease_lost")
        try:
            await self.store.put(self.lease.key, recorded(self.record.to_document(), self.store.now()),
                                 fence=self.lease)
        except LeaseLost:
            self.lost = True
            raise LegacyError(409, "The migration proxy lost its hold on the group; nothing more was sent.",
                             refusal="lease_lost") from None
        except StoreUnavailable as err:
            log.warning("state store unavailable before an action POST", extra={"error": str(err)[:300]})
            raise store_unavailable("it could not record the action before sending it") from None

    def start_renewal(self, keeping: Coroutine[Any, Any, None]) -> None:
        self._renewal = asyncio.get_running_loop().create_task(keeping)

    async def before_post(self) -> None:
        """Durably note that a POST is about to leave: no POST without that note and the lease. The
        claim's own note covers the first POST when it leaves before the time the note names (the
        lease, a third of which is longer, is still held then)."""
        now = self.store.now()
        noted, self.noted_until = self.noted_until, None
        if noted is not None and now <= noted and not self.lost and self.record.sending_since == noted:
            return
        self.record = self.record.about_to_send(now)
        await self.save()

    def job_started(self, action: str, job_id: str, first_of_action: bool) -> None:
        self.record = self.record.job_started(action, job_id, self.store.now(), first_of_action)

    def not_sent(self) -> None:
        self.record = self.record.not_sent()

    def outcome_unknown(self) -> None:
        self.record = self.record.outcome_unknown(self.store.now(), self.settle_seconds)

    def jobs_finished(self) -> None:
        self.record = self.record.jobs_finished()

    def pending_jobs(self) -> tuple[str, ...]:
        return self.record.pending_jobs(self.store.now())


class ActionGuard:
    def __init__(self, store: StateStore, settle_seconds: float, lease_seconds: float = 30.0) -> None:
        self.store = store
        self._settle_seconds = settle_seconds
        self._lease_seconds = lease_seconds
        self._note_ahead = min(NOTE_AHEAD_SECONDS, lease_seconds / 3)

    @contextlib.asynccontextmanager
    async def claim(
        self, project_id: str, group_id: str, rcg_id: str, wait_seconds: float = 0.0,
    ) -> AsyncIterator[GroupClaim]:
        """Hold the group for one action, or raise the legacy error that says why not (409, 503).
        With `wait_seconds`, a group held by another action is waited for that long first (work that
        may run beside the holder's, such as deleting another pair of the group)."""
        key = group_key(project_id, group_id)
        deadline = time.monotonic() + wait_seconds
        noted: GroupRecord | None = None

        def note(document: Document | None, token: str, now: float) -> Document | None:
            """The record as this claim takes it (at `now`, the store's clock), noting a POST about to
            leave: none while the previous action's outcome is still unknown (the claim is then refused)."""
            nonlocal noted
            record = GroupRecord.from_document(document).held_by(token)
            if record.unsettled_for(now, self._settle_seconds):
                noted = None
                return None
            noted = record.settled(now).about_to_send(now + self._note_ahead)
            return recorded(noted.to_document(), now)

        while True:
            try:
                acquired = await self.store.acquire(key, self._lease_seconds, note)
            except StoreUnavailable as err:
                log.warning("state store unavailable: action refused", extra={"error": str(err)[:300]})
                raise store_unavailable("it could not take the group's lease") from None
            if acquired is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(LEASE_POLL_SECONDS)
        if acquired is None:
            raise LegacyError(409, f"Another action on replication consistency group {rcg_id} is in progress.",
                              refusal="in_progress")
        lease, document = acquired
        # Without a note, the claim only holds the group long enough to refuse it (below).
        claim = GroupClaim(
            self.store, lease, GroupRecord.from_document(document).held_by(lease.token) if noted is None else noted,
            self._settle_seconds, noted_until=None if noted is None else noted.sending_since,
        )
        renewal_due: asyncio.TimerHandle | None = None
        try:
            if noted is None:
                wait = max(1, claim.record.unsettled_for(self.store.now(), self._settle_seconds))
                raise LegacyError(
                    409, f"The outcome of the previous action on replication consistency group {rcg_id} is not "
                    f"known yet (SDRS did not answer it); retry in {wait} s.", retry_after=wait, refusal="settle",
                )
            # Most actions end long before a renewal is due: a timer costs less than a task per action.
            loop = asyncio.get_running_loop()
            renewal_due = loop.call_later(self._lease_seconds / 3, lambda: claim.start_renewal(self._keep(claim)))
            yield claim
        finally:
            if renewal_due is not None:
                renewal_due.cancel()
            if claim._renewal is not None:
                claim._renewal.cancel()
            await self._release(claim)

    async def _keep(self, claim: GroupClaim) -> None:
        """Renew the lease, now and every third of its time, while the action runs (a confirmed
        action may poll for a minute)."""
        while True:
            try:
                if not await self.store.renew(claim.lease, self._lease_seconds):
                    claim.lost = True
                    return
            except StoreUnavailable:
                pass  # the next fenced write decides; the lease may still be held
            await asyncio.sleep(self._lease_seconds / 3)

    async def _release(self, claim: GroupClaim) -> None:
        if claim.noted_until is not None:
            claim.not_sent()  # the claim's note was never used: no POST left
        mine = claim.record
        try:
            if await asyncio.shield(self.store.release(claim.lease, recorded(mine.to_document(), self.store.now()))):
                return
            # The lease ran out and another claim took the group meanwhile: its record is newer and
            # stays; this action's facts (a job SDRS handed out, an unknown outcome) are merged in.
            log.warning("the group's lease ran out before this action ended: its record was merged with the "
                        "store's (another claim may have acted meanwhile)",
                        extra={"group": claim.lease.key, "job_ids": list(mine.job_ids)})
            await asyncio.shield(self.store.update(
                claim.lease.key,
                lambda current: recorded(GroupRecord.from_document(current).absorbing(mine).to_document(),
                                         self.store.now())))
        except StoreUnavailable as err:
            # The lease expires by itself; the record written before the POST still protects the group.
            log.warning("state store unavailable when releasing a group", extra={"error": str(err)[:300]})

    async def pending_action(self, project_id: str, group_id: str) -> tuple[str, tuple[str, ...]] | None:
        """(legacy action key, job ids) of the last action while its jobs may still run, for reads;
        None when there is none or the store cannot say (reads keep working without it)."""
        try:
            document = await self.store.get(group_key(project_id, group_id))
        except StoreUnavailable as err:
            log.warning("state store unavailable: read shown without the pending action",
                        extra={"error": str(err)[:300]})
            return None
        record = GroupRecord.from_document(document)
        jobs = record.pending_jobs(self.store.now())
        return (record.action, jobs) if jobs else None
