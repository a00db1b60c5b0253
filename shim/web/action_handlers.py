"""aiohttp handlers for the legacy action URL: the thin I/O shell around shim/translate/actions.py."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Iterator

from aiohttp import web

from shim.context import AUDIT
from shim.state.action_guard import GroupClaim
from shim.translate.actions import (
    TRANSLATED_ACTIONS,
    ActionTranslation,
    SdrsCall,
    check_precondition,
    job_outcome,
    not_confirmed,
    outcome_is_unknown,
    parse_action_body,
    plan_calls,
    refuse_while_job_pending,
)
from shim.translate.legacy import LegacyError
from shim.translate.ownership import mapped_group
from shim.translate.sdrs_answers import DEFAULT_RETRY_AFTER_SECONDS, legacy_error_for_transport, parse_answer
from shim.translate.sdrs_models import Job, JobAccepted, SdrsAnswer, SdrsNotSent, SdrsTransportError, ServerGroup
from shim.translate.tables import GroupMapping
from shim.upstreams.sdrs_calls import SdrsCalls
from shim.web.incoming import read_capped_body, sdrs_calls
from shim.web.owner import serve_from_sdrs, to_legacy
from shim.web.shim_state import STATE, ShimState


async def passthrough(request: web.Request) -> web.StreamResponse:
    return await to_legacy(request)


async def rcg_action(request: web.Request) -> web.StreamResponse:
    """POST .../os-vendor-replication-consistency-groups/{rcg_id}/action: SDRS's for a mapped group,
    the legacy endpoint's (any key, body as sent) for every other group."""
    state = request.app[STATE]
    rcg_id = request.match_info["rcg_id"]
    entry = mapped_group(state.mappings, request.match_info["project_id"], rcg_id)
    if entry is None:
        return await to_legacy(request, item=f"Replication consistency group {rcg_id}")
    serve_from_sdrs(request, entry, "")  # filled first: a refused translated call is audited too
    if request.method != "POST":
        raise LegacyError(405, f"Method {request.method} is not allowed on an action URL; use POST.",
                          headers=(("Allow", "POST"),))
    action = parse_action_body(await read_capped_body(request, state.settings.limits.action_body_bytes))
    audit = request[AUDIT]
    audit["action"] = action.key
    translation = TRANSLATED_ACTIONS.get(action.key)
    if translation is None:  # a mapped group's actions never reach its stale legacy copy
        raise LegacyError(400, f"The action {action.key!r} cannot be performed on replication consistency group "
                               f"{entry.rcg_id}: it is served by SDRS, which has no equivalent.")
    calls = sdrs_calls(request, state)
    project_id, group_id, rcg_id = entry.project_id, entry.protection_group_id, entry.rcg_id
    async with state.actions.claim(project_id, group_id, rcg_id) as claim:
        group = await after_previous_action(state, calls, claim, translation, entry)
        if group is None or group.status in translation.already_done:
            audit["outcome"] = "already done: nothing sent"  # stop/sync: the legacy API has no precondition
            return web.Response(status=200, body=b"")
        check_precondition(translation, rcg_id, group)
        pairs = await calls.pairs(project_id, group_id) if translation.per_pair else []
        plan = plan_calls(translation, action, project_id, rcg_id, group, pairs)
        job_ids: list[str] = []
        audit["job_ids"] = job_ids
        await send_actions(claim, calls, translation, plan, job_ids)
        if translation.per_pair or state.settings.actions.completion == "confirmed":
            await claim.save()  # the job ids outlive this process before the long wait
            await confirm(state, calls, translation, project_id, rcg_id, group_id, job_ids)
    return web.Response(status=200, body=b"")


async def after_previous_action(
    state: ShimState, calls: SdrsCalls, claim: GroupClaim, translation: ActionTranslation, entry: GroupMapping,
) -> ServerGroup | None:
    """The group once the previous action's jobs have finished; None when the same idempotent action
    (stop, sync) is still running, so this one is done already.

    The previous action's jobs and the group are read together (GETs: safe to overlap). Another
    action (a Sync right after a Stop, as Terraform sends them) waits, up to
    `actions.wait_for_previous_seconds`, for them to finish rather than failing; the same action again
    is a duplicate: 409 while its job runs."""
    settings = state.settings.actions
    deadline = time.monotonic() + settings.wait_for_previous_seconds
    pauses = backoff(settings.poll_initial_seconds, settings.poll_max_seconds)
    while True:
        jobs, group = await asyncio.gather(
            previous_jobs(calls, entry.project_id, claim.pending_jobs(), entry.rcg_id),
            calls.group(entry.project_id, entry.protection_group_id),
        )
        running = [job for job in jobs if job is not None and not job.finished]
        if not running:
            claim.jobs_finished()
            return group
        if claim.record.action == translation.legacy_key:
            if translation.idempotent:
                return None
            refuse_while_job_pending(running[0], translation, entry.rcg_id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            refuse_while_job_pending(running[0], translation, entry.rcg_id)
        await asyncio.sleep(min(remaining, next(pauses)))


def backoff(initial: float, maximum: float) -> Iterator[float]:
    """Pauses between polls: doubling from `initial` up to `maximum`, with jitter."""
    pause = initial
    while True:
        yield pause * random.uniform(0.5, 1.0)
        pause = min(pause * 2, maximum)


async def previous_jobs(calls: SdrsCalls, project_id: str, job_ids: tuple[str, ...], rcg_id: str) -> list[Job | None]:
    """The last action's jobs, read before a new action (None: SDRS says the job does not exist).
    A job that cannot be read stays pending: no new action is sent while it might run."""
    try:
        return list(await asyncio.gather(*(calls.job(project_id, job_id) for job_id in job_ids)))
    except LegacyError as err:
        raise LegacyError(
            503, f"Cannot tell whether the previous action on replication consistency group {rcg_id} is still "
            f"running (reading SDRS job {', '.join(job_ids)} failed: {err.message}); no new action is sent "
            "until it can be read.", retry_after=DEFAULT_RETRY_AFTER_SECONDS,
        ) from None


async def send_actions(
    claim: GroupClaim, calls: SdrsCalls, translation: ActionTranslation, plan: list[SdrsCall], job_ids: list[str],
) -> None:
    """POST each planned action once, in order, each after the claim durably says it is leaving;
    stop at the first refusal and say what had been started."""
    for call in plan:
        doing = f"{translation.verb} {call.subject}"
        answer: SdrsAnswer | None = None
        await claim.before_post()
        try:
            try:
                answer = await calls.exchange("POST", call.path, call.body)
            except SdrsTransportError as err:
                raise legacy_error_for_transport(err, doing) from err
            job_id = parse_answer(answer, JobAccepted, calls.errors, doing).job_id
        except LegacyError as err:
            if isinstance(err.__cause__, SdrsNotSent):
                claim.not_sent()  # no connection was made: nothing can have started
            elif outcome_is_unknown(answer, calls.errors):
                claim.outcome_unknown()  # SDRS may have started it: never resend blindly
            else:
                claim.not_sent()  # a definite refusal
            if job_ids:
                raise dataclasses.replace(
                    err, message=f"{err.message} (started before this failure: job {', '.join(job_ids)})"
                ) from None
            raise
        claim.job_started(translation.legacy_key, job_id, first_of_action=not job_ids)
        job_ids.append(job_id)


async def confirm(
    state: ShimState, calls: SdrsCalls, translation: ActionTranslation, project_id: str, rcg_id: str,
    group_id: str, job_ids: list[str],
) -> None:
    """Poll the jobs (GETs, backoff with jitter) until each took effect, failed, or time ran out."""
    settings = state.settings.actions
    deadline = time.monotonic() + settings.confirm_timeout_seconds
    pauses = backoff(settings.poll_initial_seconds, settings.poll_max_seconds)
    waiting = list(job_ids)
    while True:
        still_waiting = []
        for job_id in waiting:
            try:
                job = await calls.job(project_id, job_id)
                group = await calls.group(project_id, group_id) if job and job.status == "RUNNING" else None
            except LegacyError as err:
                # SDRS accepted the action: whatever went wrong while watching it, it may still run.
                raise not_confirmed(translation, rcg_id, waiting, settings.confirm_timeout_seconds,
                                    why=err.message) from None
            if job is None:
                raise LegacyError(502, f"SDRS does not know the job {job_id} it has just accepted.")
            if job_outcome(job, group, translation, calls.errors, rcg_id) == "wait":
                still_waiting.append(job_id)
        waiting = still_waiting
        if not waiting:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise not_confirmed(translation, rcg_id, waiting, settings.confirm_timeout_seconds)
        await asyncio.sleep(min(remaining, next(pauses)))
