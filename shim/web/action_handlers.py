"""aiohttp handlers for the legacy action URL: the thin I/O shell around shim/translate/actions.py."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from shim.context import AUDIT
from shim.translate.actions import (
    TRANSLATED_ACTIONS,
    ActionTranslation,
    check_precondition,
    job_outcome,
    not_confirmed,
    parse_action_body,
    plan_calls,
)
from shim.translate.legacy import LegacyError
from shim.translate.ownership import mapped_group
from shim.upstreams.sdrs_calls import SdrsCalls
from shim.web.incoming import read_capped_body, sdrs_calls
from shim.web.owner import deleted_group, serve_from_sdrs, to_legacy
from shim.web.sdrs_work import CLIENTS_OWN_ERRORS, Work, after_previous, backoff, send_calls
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
        deleted = state.retired.group(request.match_info["project_id"], rcg_id)
        if deleted is not None:  # deleted through the shim: never its stale legacy copy again
            raise deleted_group(request, deleted)
        return await to_legacy(request, item=f"Replication consistency group {rcg_id}")
    serve_from_sdrs(request, entry, "")  # filled first: a refused translated call is audited too
    if request.method != "POST":
        raise LegacyError(405, f"Method {request.method} is not allowed on an action URL; use POST.",
                          headers=(("Allow", "POST"),))
    action = parse_action_body(await read_capped_body(request, state.settings.limits.action_body_bytes,
                                                      state.settings.timeouts.request_body_idle))
    audit = request[AUDIT]
    audit["action"] = action.key
    translation = TRANSLATED_ACTIONS.get(action.key)
    if translation is None:  # a mapped group's actions never reach its stale legacy copy
        raise LegacyError(400, f"The action {action.key!r} cannot be performed on replication consistency group "
                               f"{entry.rcg_id}: it is served by SDRS, which has no equivalent.")
    calls = sdrs_calls(request, state)
    project_id, group_id, rcg_id = entry.project_id, entry.protection_group_id, entry.rcg_id
    work = Work(translation.legacy_key, translation.verb, idempotent=translation.idempotent)
    async with state.actions.claim(project_id, group_id, rcg_id) as claim:
        group = await after_previous(state, calls, claim, work, entry)
        if group is None or group.status in translation.already_done:
            audit["outcome"] = "already done: nothing sent"  # stop/sync: the legacy API has no precondition
            return web.Response(status=200, body=b"")
        check_precondition(translation, rcg_id, group)
        pairs = await calls.pairs(project_id, group_id) if translation.per_pair else []
        plan = plan_calls(translation, action, project_id, rcg_id, group, pairs, entry.identity)
        job_ids: list[str] = []
        audit["job_ids"] = job_ids
        await send_calls(claim, calls, work, plan, job_ids)
        if translation.per_pair or state.settings.actions.completion == "confirmed":
            await claim.save()  # the job ids outlive this process before the long wait
            await confirm(state, calls, translation, project_id, rcg_id, group_id, job_ids)
    return web.Response(status=200, body=b"")


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
                if err.status in CLIENTS_OWN_ERRORS:  # an expired token: the client re-authenticates on 401
                    raise
                # SDRS accepted the action: whatever else went wrong while watching it, it may still run.
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
