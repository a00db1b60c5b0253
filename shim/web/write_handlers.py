"""aiohttp handlers for legacy writes on a mapped group: update (PUT), delete of the group, delete of
one of its pairs. The thin shell around shim/translate/writes.py; each is guarded like an action
(one at a time per group, never twice) and audited with its SDRS job ids."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from shim.context import AUDIT
from shim.state.action_guard import store_unavailable
from shim.state.store import StoreUnavailable
from shim.translate.actions import SdrsCall
from shim.translate.identity import shown_group_description, shown_group_name
from shim.translate.legacy import id_key
from shim.translate.reads import group_reading
from shim.translate.sdrs_answers import parse_answer
from shim.translate.sdrs_models import Job, ReplicationPair, ServerGroup, ServerGroupAnswer
from shim.translate.tables import GroupMapping
from shim.translate.writes import (
    DELETE_GROUP,
    UPDATE,
    accepted_update,
    check_group_delete_allowed,
    check_update_allowed,
    group_delete,
    parse_group_update,
    plan_update,
    reading_while_pending,
    refuse_pair_delete_in_group,
)
from shim.web.incoming import read_capped_body, sdrs_calls
from shim.web.sdrs_work import Work, after_previous, send_calls
from shim.web.shim_state import ShimState

log = logging.getLogger("shim.writes")

UPDATE_WORK = Work(UPDATE, "update")
DELETE_GROUP_WORK = Work(DELETE_GROUP, "delete", idempotent=True)


async def update_group(request: web.Request, state: ShimState, entry: GroupMapping) -> web.StreamResponse:
    """PUT .../{rcg_id}: rename in SDRS, keep the description, delete the removed pairs (jobs); 202."""
    body = await read_capped_body(request, state.settings.limits.action_body_bytes,
                             state.settings.timeouts.request_body_idle)
    update = parse_group_update(body, entry)
    calls = sdrs_calls(request, state)
    job_ids: list[str] = []
    request[AUDIT]["job_ids"] = job_ids
    seen: list[Job | None]
    async with state.actions.claim(entry.project_id, entry.protection_group_id, entry.rcg_id) as claim:
        # After a Stop (Terraform sends one first), its job must end before pairs can be deleted.
        previous, seen = claim.record.action, []  # the work before this one, and its jobs as last read
        group = await after_previous(state, calls, claim, UPDATE_WORK, entry, seen)
        assert group is not None  # an update is not idempotent work
        pairs = await calls.pairs(entry.project_id, entry.protection_group_id)
        check_update_allowed(entry, *as_clients_read_it(state, group, pairs, previous, seen))
        removed_before = frozenset([id_key(pair_id) for pair_id in update.remove
                                    if await _noted(state.notes.removed_pair(entry.project_id, pair_id))])
        renamed_before = await _noted(state.notes.renamed(entry, strict=True))
        plan = plan_update(update, entry, group, pairs, removed_before,
                           shown_group_name(entry.identity, group.name, renamed_before))
        if update.description is not None:
            await _noted(state.notes.set_description(entry, update.description))
        if plan.rename is not None:
            answer = await calls.send(plan.rename.method, plan.rename.path, "rename the protection group",
                                      plan.rename.body)
            group = parse_answer(answer, ServerGroupAnswer, calls.errors, "rename the protection group").server_group
        if plan.renamed and entry.identity is not None and not renamed_before:
            await _noted(state.notes.note_renamed(entry, update.name or ""))  # reads show SDRS's name from now on

        disks = {id_key(pair.id): tuple(pair.volume_id_list) for pair in pairs}

        async def removed(call: SdrsCall, job_id: str) -> None:
            pair_id = call.path.rsplit("/", 1)[1]
            await _noted(state.notes.note_removed_pair(entry, pair_id, job_id, disks.get(id_key(pair_id), ())))

        async def maybe_removed(call: SdrsCall) -> None:
            # SDRS may have deleted the pair (its answer was lost): the pair stays the group's, gone, never
            # a question for the legacy endpoint once SDRS stops listing it. Best effort: the client gets
            # the outcome's own error either way.
            pair_id = call.path.rsplit("/", 1)[1]
            try:
                await state.notes.note_removed_pair(entry, pair_id, "", disks.get(id_key(pair_id), ()))
            except StoreUnavailable:
                log.warning("state store unavailable: a pair removal of unknown outcome is not noted",
                            extra={"replication_id": pair_id})

        await send_calls(claim, calls, UPDATE_WORK, plan.deletes, job_ids, on_job=removed,
                         on_unknown=maybe_removed)
    renamed = plan.renamed or renamed_before
    name = update.name if plan.renamed else shown_group_name(entry.identity, group.name, renamed)
    description = shown_group_description(entry.identity, group.description, await state.notes.description(entry))
    legacy_answer = accepted_update(entry, group, name, description, working=bool(job_ids))
    return web.json_response(legacy_answer, status=202)


async def delete_group(request: web.Request, state: ShimState, entry: GroupMapping) -> web.StreamResponse:
    """DELETE .../{rcg_id}: the SDRS group delete (a job; SDRS refuses while pairs remain); 202."""
    calls = sdrs_calls(request, state)
    job_ids: list[str] = []
    request[AUDIT]["job_ids"] = job_ids
    seen: list[Job | None]
    async with state.actions.claim(entry.project_id, entry.protection_group_id, entry.rcg_id) as claim:
        previous, seen = claim.record.action, []  # the work before this one, and its jobs as last read
        group = await after_previous(state, calls, claim, DELETE_GROUP_WORK, entry, seen)
        if group is not None:  # None: the same delete is running already
            pairs = await calls.pairs(entry.project_id, entry.protection_group_id)
            status, _ = as_clients_read_it(state, group, pairs, previous, seen)
            check_group_delete_allowed(entry, status, len(pairs))

            async def retired(call: SdrsCall, job_id: str) -> None:
                await _noted(state.notes.note_retired(entry, job_id))

            await send_calls(claim, calls, DELETE_GROUP_WORK, [group_delete(entry)], job_ids, on_job=retired)
    return web.Response(status=202)


async def delete_pair(
    request: web.Request, state: ShimState, entry: GroupMapping, pair: ReplicationPair,
) -> web.StreamResponse:
    """DELETE .../os-vendor-replications/{id} of a pair still in a mapped group: the legacy endpoint deletes
    only a pair in no group (its precondition), so this is its 400 and nothing is sent; the group update
    removes the pair (and SDRS deletes it), after which its DELETE answers 202 (read_handlers)."""
    raise refuse_pair_delete_in_group(entry, pair.id)


def as_clients_read_it(
    state: ShimState, group: ServerGroup, pairs: list[ReplicationPair], previous: str, jobs: list[Job | None],
) -> tuple[str, str]:
    """The legacy (`status`, `replication_status`) a client read until this write: the status table's,
    or `error` after an update whose job failed (read_handlers shows the same)."""
    reading = reading_while_pending(group, previous, jobs)
    status, replication_status = group_reading(reading.group, pairs, state.mappings.statuses)
    return reading.status or status, replication_status


T = TypeVar("T")


async def _noted(note: Awaitable[T]) -> T:
    """A note the write needs: with the store unavailable, a legacy 503 (nothing more is sent)."""
    try:
        return await note
    except StoreUnavailable:
        raise store_unavailable("it could not keep its notes on the group") from None
