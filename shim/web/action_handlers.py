"""aiohttp handlers for the translated action URL: the thin I/O shell around shim/rcg_actions.py."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

from aiohttp import web

from shim.context import AUDIT
from shim.state.action_guard import GroupKey
from shim.translate.actions import (
    TRANSLATED_ACTIONS,
    ActionTranslation,
    SdrsCall,
    check_precondition,
    job_outcome,
    not_confirmed,
    parse_action_body,
    plan_calls,
    refuse_while_job_pending,
)
from shim.translate.legacy import LegacyError, is_legacy_id
from shim.translate.sdrs_answers import parse_answer, sdrs_error_code
from shim.translate.sdrs_models import JobAccepted, SdrsAnswer
from shim.upstreams.sdrs_calls import SdrsCalls
from shim.web.incoming import read_capped_body, sdrs_calls
from shim.web.shim_state import STATE, ShimState

# SDRS answers after which the action may have been started all the same (a gateway gave up waiting).
OUTCOME_UNKNOWN_STATUSES = frozenset({502, 504})


def outcome_unknown(answer: SdrsAnswer | None, calls: SdrsCalls) -> bool:
    """Whether SDRS may have started an action although the shim got no job id for it: no answer,
    a success of the wrong shape, a gateway that gave up waiting (502/504), or a 500 without a
    documented SDRS code (a crashed backend says nothing about what it had done). A 503 means the
    request was not taken on."""
    if answer is None or answer.status < 400 or answer.status in OUTCOME_UNKNOWN_STATUSES:
        return True
    return answer.status == 500 and sdrs_error_code(answer) not in calls.errors.codes

async def passthrough(request: web.Request) -> web.StreamResponse:
    return await request.app[STATE].legacy.forward(request)


async def rcg_action(request: web.Request) -> web.StreamResponse:
    """POST .../os-vendor-replication-consistency-groups/{rcg_id}/action."""
    state = request.app[STATE]
    if request.method != "POST":
        raise LegacyError(405, f"Method {request.method} is not allowed on an action URL; use POST.",
                          headers=(("Allow", "POST"),))
    project_id, rcg_id = request.match_info["project_id"], request.match_info["rcg_id"]
    for name, value in (("project id", project_id), ("replication consistency group id", rcg_id)):
        if not is_legacy_id(value):
            raise LegacyError(400, f"Malformed request url: the {name} must be a UUID.")
    raw = await read_capped_body(request, state.settings.limits.action_body_bytes,
                                 state.settings.timeouts.request_body_idle)
    action = parse_action_body(raw)
    translation = TRANSLATED_ACTIONS.get(action.key)
    if translation is None:
        return await state.legacy.forward(request, body=raw)
    group_id = state.mappings.protection_group_for(project_id, rcg_id)
    project_id = project_id.lower()
    audit = request[AUDIT]  # filled first: a refused translated call is audited too
    audit.update(project_id=project_id, rcg_id=rcg_id, protection_group_id=group_id, action=action.key)
    calls = sdrs_calls(request, state)
    if group_id is None:
        raise LegacyError(404, f"Replication consistency group {rcg_id} could not be found.")
    key = (project_id, group_id)
    state.actions.acquire(key, rcg_id)
    try:
        # The previous action's jobs and the group are read together (GETs: safe to overlap).
        jobs, group = await asyncio.gather(
            asyncio.gather(*(calls.job(project_id, job_id) for job_id in state.actions.pending_jobs(key))),
            calls.group(project_id, group_id),
        )
        for job in jobs:
            if job is not None:
                refuse_while_job_pending(job, translation, rcg_id)
        state.actions.jobs_finished(key)
        check_precondition(translation, rcg_id, group)
        pairs = await calls.pairs(project_id, group_id) if translation.per_pair else []
        plan = plan_calls(translation, action, project_id, rcg_id, group, pairs)
        job_ids: list[str] = []
        audit["job_ids"] = job_ids
        await send_actions(state, calls, key, translation, plan, job_ids)
        if translation.per_pair or state.settings.actions.completion == "confirmed":
            await confirm(state, calls, translation, project_id, rcg_id, group_id, job_ids)
    finally:
        state.actions.release(key)
    return web.Response(status=200, body=b"")


async def send_actions(
    state: ShimState, calls: SdrsCalls, key: GroupKey, translation: ActionTranslation,
    plan: list[SdrsCall], job_ids: list[str],
) -> None:
    """POST each planned action once, in order, adding each job id to `job_ids` as it is accepted;
    stop at the first refusal and say what had been started."""
    for call in plan:
        doing = f"{translation.verb} {call.subject}"
        answer: SdrsAnswer | None = None
        try:
            answer = await calls.post(call.path, call.body, doing)
            job_id = parse_answer(answer, JobAccepted, calls.errors, doing).job_id
        except LegacyError as err:
            if outcome_unknown(answer, calls):
                state.actions.outcome_unknown(key)  # SDRS may have started it: never resend blindly
            if job_ids:
                raise dataclasses.replace(
                    err, message=f"{err.message} (started before this failure: job {', '.join(job_ids)})"
                ) from None
            raise
        state.actions.job_started(key, translation.legacy_key, job_id)
        job_ids.append(job_id)


async def confirm(
    state: ShimState, calls: SdrsCalls, translation: ActionTranslation, project_id: str, rcg_id: str,
    group_id: str, job_ids: list[str],
) -> None:
    """Poll the jobs (GETs, backoff with jitter) until each took effect, failed, or time ran out."""
    settings = state.settings.actions
    deadline = time.monotonic() + settings.confirm_timeout_seconds
    pause = settings.poll_initial_seconds
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
        await asyncio.sleep(min(remaining, pause * random.uniform(0.5, 1.0)))
        pause = min(pause * 2, settings.poll_max_seconds)
