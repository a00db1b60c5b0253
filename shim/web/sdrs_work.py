"""Guarded SDRS work (actions and writes alike), the I/O around the duplicate-action guard's claim:
wait for the previous work's jobs, then send each call once, durably noted before it leaves."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from shim.state.action_guard import GroupClaim
from shim.translate.actions import SdrsCall, outcome_is_unknown, refuse_while_job_pending
from shim.translate.legacy import LegacyError
from shim.translate.sdrs_answers import DEFAULT_RETRY_AFTER_SECONDS, legacy_error_for_transport, parse_answer
from shim.translate.sdrs_models import Job, JobAccepted, SdrsAnswer, SdrsNotSent, SdrsTransportError, ServerGroup
from shim.translate.tables import GroupMapping
from shim.upstreams.sdrs_calls import SdrsCalls
from shim.web.shim_state import ShimState


@dataclass(frozen=True)
class Work:
    """What a guarded piece of SDRS work is, for the guard."""

    key: str  # what the record calls it: a legacy action key, or a write's name (translate/writes.py)
    verb: str  # for messages: "reprotect", "update"
    idempotent: bool = False  # the same work still running means this one is done already


async def after_previous(
    state: ShimState, calls: SdrsCalls, claim: GroupClaim, work: Work, entry: GroupMapping,
    seen: list[Job | None] | None = None,
) -> ServerGroup | None:
    """`_after_previous`, then, still under the group's lease and just before anything is sent, the
    fleet's mode of the group read again from the store (README, One switch for the fleet): a switch
    away from SDRS written meanwhile stops the work (503)."""
    group = await _after_previous(state, calls, claim, work, entry, seen)
    await state.fleet.recheck(entry)
    return group


async def _after_previous(
    state: ShimState, calls: SdrsCalls, claim: GroupClaim, work: Work, entry: GroupMapping,
    seen: list[Job | None] | None = None,
) -> ServerGroup | None:
    """The group once the previous work's jobs have finished; None when the same idempotent work is
    still running, so this one is done already.

    The previous jobs and the group are read together (GETs: safe to overlap). Other work (a Sync
    right after a Stop, an update right after a Stop, as Terraform sends them) waits, up to
    `actions.wait_for_previous_seconds`, for them to finish rather than failing; the same work again is
    a duplicate: 409 while its job runs. `seen` receives the previous jobs as last read (how the group
    read to clients until now: a failed update reads `error`)."""
    settings = state.settings.actions
    deadline = time.monotonic() + settings.wait_for_previous_seconds
    pauses = backoff(settings.poll_initial_seconds, settings.poll_max_seconds)
    while True:
        jobs, group = await _jobs_and_group(calls, claim.pending_jobs(), entry)
        running = [job for job in jobs if job is not None and not job.finished]
        if not running:
            if seen is not None:
                seen[:] = jobs
            claim.jobs_finished()
            return group
        if claim.record.action == work.key:
            if work.idempotent:
                return None
            refuse_while_job_pending(running[0], work.verb, entry.rcg_id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            refuse_while_job_pending(running[0], work.verb, entry.rcg_id)
        await asyncio.sleep(min(remaining, next(pauses)))


async def _jobs_and_group(
    calls: SdrsCalls, job_ids: tuple[str, ...], entry: GroupMapping,
) -> tuple[list[Job | None], ServerGroup]:
    """The previous jobs and the group, read at the same time (one task, not a gather of three: this
    runs before every action); a failure to read the jobs comes first."""
    if not job_ids:
        return [], await calls.group(entry.project_id, entry.protection_group_id)
    group_read = asyncio.ensure_future(calls.group(entry.project_id, entry.protection_group_id))
    try:
        jobs = await previous_jobs(calls, entry.project_id, job_ids, entry.rcg_id)
    except BaseException:
        group_read.cancel()
        raise
    return jobs, await group_read


def backoff(initial: float, maximum: float) -> Iterator[float]:
    """Pauses between polls: doubling from `initial` up to `maximum`, with jitter."""
    pause = initial
    while True:
        yield pause * random.uniform(0.5, 1.0)
        pause = min(pause * 2, maximum)


async def previous_jobs(calls: SdrsCalls, project_id: str, job_ids: tuple[str, ...], rcg_id: str) -> list[Job | None]:
    """The last work's jobs, read before new work (None: SDRS says the job does not exist).
    A job that cannot be read stays pending: no new work is sent while it might run. An SDRS 401 is the
    client's 401 (an expired token: golangsdk re-authenticates on 401 only and sends the call again)."""
    try:
        if len(job_ids) == 1:  # the usual case: no gather (and no task) for one read
            return [await calls.job(project_id, job_ids[0])]
        return list(await asyncio.gather(*(calls.job(project_id, job_id) for job_id in job_ids)))
    except LegacyError as err:
        if err.status in CLIENTS_OWN_ERRORS:
            raise
        raise LegacyError(
            503, f"Cannot tell whether the previous action on replication consistency group {rcg_id} is still "
            f"running (reading SDRS job {', '.join(job_ids)} failed: {err.message}); no new action is sent "
            "until it can be read.", retry_after=DEFAULT_RETRY_AFTER_SECONDS,
        ) from None


# SDRS refusals about the caller's own credentials: passed on as they are, never hidden behind a 503/504
# (any SDRS read of an action or write: golangsdk re-authenticates on 401 only).
CLIENTS_OWN_ERRORS = frozenset({401, 403})


JobStarted = Callable[[SdrsCall, str], Awaitable[None]]
CallMayHaveRun = Callable[[SdrsCall], Awaitable[None]]


async def send_calls(
    claim: GroupClaim, calls: SdrsCalls, work: Work, plan: list[SdrsCall] | tuple[SdrsCall, ...],
    job_ids: list[str], on_job: JobStarted | None = None, on_unknown: CallMayHaveRun | None = None,
) -> None:
    """Send each planned call once, in order, each after the claim durably says it is leaving; stop
    at the first refusal and say what had been started. `on_job` is told each job SDRS accepted,
    `on_unknown` a call whose outcome is not known (SDRS may have carried it out)."""
    for call in plan:
        doing = f"{work.verb} {call.subject}"
        answer: SdrsAnswer | None = None
        await claim.before_post()
        try:
            try:
                answer = await calls.exchange(call.method, call.path, call.body, doing)
            except SdrsTransportError as err:
                raise legacy_error_for_transport(err, doing) from err
            job_id = parse_answer(answer, JobAccepted, calls.errors, doing).job_id
        except LegacyError as err:
            if isinstance(err.__cause__, SdrsNotSent):
                claim.not_sent()  # no connection was made: nothing can have started
            elif outcome_is_unknown(answer, calls.errors):
                claim.outcome_unknown()  # SDRS may have started it: never resend blindly
                if on_unknown is not None:
                    await on_unknown(call)
            else:
                claim.not_sent()  # a definite refusal
            if job_ids:
                raise dataclasses.replace(
                    err, message=f"{err.message} (started before this failure: job {', '.join(job_ids)})"
                ) from None
            raise
        claim.job_started(work.key, job_id, first_of_action=not job_ids)
        job_ids.append(job_id)
        if on_job is not None:
            await on_job(call, job_id)
