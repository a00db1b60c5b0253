"""aiohttp handlers for legacy reads of mapped groups and pairs (thin shell around rcg_reads/listing).

A read of a group or pair that lives in SDRS is answered from SDRS in the exact legacy shape; every
other read (and every create, update and delete) goes through to the legacy endpoint unchanged.
Lists merge both sources. A project with no mapped group never touches SDRS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from shim.context import AUDIT
from shim.mappings import GroupMapping
from shim.translate.actions import TRANSLATED_ACTIONS, shown_while_pending
from shim.translate.legacy import LegacyError, canonical_project_id, id_key, is_legacy_id
from shim.translate.listing import (
    GROUP_FILTERS,
    PAIR_FILTERS,
    FilterRule,
    MappedItem,
    merge_page,
    parse_list_query,
    select_mapped,
    upstream_list_query,
)
from shim.translate.reads import legacy_group, legacy_pair
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.upstreams.sdrs_calls import SdrsCalls
from shim.web.incoming import sdrs_calls
from shim.web.shim_state import STATE, ShimState


def _mapped_groups(state: ShimState, project_id: str) -> dict[str, GroupMapping]:
    return state.mappings.groups_of_project(project_id) if is_legacy_id(project_id) else {}


async def show_group(request: web.Request) -> web.StreamResponse:
    """GET .../os-vendor-replication-consistency-groups/{rcg_id}; other methods pass through."""
    state = request.app[STATE]
    project_id, rcg_id = request.match_info["project_id"], request.match_info["rcg_id"]
    group_id = None
    if request.method == "GET" and is_legacy_id(project_id) and is_legacy_id(rcg_id):
        group_id = state.mappings.protection_group_for(project_id, rcg_id)
    if group_id is None:
        return await state.legacy.forward(request)
    project_id = canonical_project_id(project_id)
    request[AUDIT].update(project_id=project_id, rcg_id=rcg_id, protection_group_id=group_id, action="show-group")
    calls = sdrs_calls(request, state)
    group, pairs = await asyncio.gather(calls.group(project_id, group_id), calls.pairs(project_id, group_id))
    group = await as_clients_see_it(state, calls, project_id, group)
    body = legacy_group(rcg_id, group, pairs, state.mappings.statuses)
    return web.json_response({"replication_consistency_group": body})


async def list_groups(request: web.Request) -> web.StreamResponse:
    """GET .../os-vendor-replication-consistency-groups: legacy groups and mapped ones, merged."""
    return await merged_list(request, "replication_consistency_groups", "list-groups", GROUP_FILTERS, _group_items)


async def show_pair(request: web.Request) -> web.StreamResponse:
    """GET .../os-vendor-replications/{replication_id}: answered from SDRS for pairs of mapped groups."""
    state = request.app[STATE]
    project_id, pair_id = request.match_info["project_id"], request.match_info["replication_id"]
    mapped = _mapped_groups(state, project_id) if request.method == "GET" else {}
    if not mapped or not is_legacy_id(pair_id):
        return await state.legacy.forward(request)
    project_id = canonical_project_id(project_id)
    request[AUDIT].update(project_id=project_id, replication_id=pair_id, action="show-pair")
    calls = sdrs_calls(request, state)
    pair = await calls.pair(project_id, pair_id)
    if pair is None or id_key(pair.server_group_id) not in mapped:
        return await state.legacy.forward(request)  # not a pair of a migrated group
    group = await calls.group(project_id, pair.server_group_id)
    body = legacy_pair(pair, mapped[id_key(pair.server_group_id)].rcg_id, group, state.mappings.statuses)
    return web.json_response({"replication": body})


async def list_pairs(request: web.Request) -> web.StreamResponse:
    """GET .../os-vendor-replications: legacy pairs and pairs of mapped groups, merged."""
    return await merged_list(request, "replications", "list-pairs", PAIR_FILTERS, _pair_items)


ItemBuilder = Callable[
    [ShimState, SdrsCalls, str, dict[str, GroupMapping], list[ServerGroup], list[ReplicationPair]],
    Awaitable[list[MappedItem]],
]


async def merged_list(
    request: web.Request, key: str, action: str, rules: Mapping[str, FilterRule], build_items: ItemBuilder
) -> web.StreamResponse:
    """The legacy endpoint's list merged with the mapped items, filtered and paged (listing.py)."""
    state = request.app[STATE]
    project_id = request.match_info["project_id"]
    mapped = _mapped_groups(state, project_id) if request.method == "GET" else {}
    if not mapped:
        return await state.legacy.forward(request)
    project_id = canonical_project_id(project_id)
    request[AUDIT].update(project_id=project_id, action=action)
    query = parse_list_query(_first_values(request))
    calls = sdrs_calls(request, state)
    legacy_items, groups, pairs = await asyncio.gather(
        legacy_list(state, request, key), calls.groups(project_id), calls.pairs(project_id),
    )
    items = await build_items(state, calls, project_id, mapped, groups, pairs)
    page = merge_page(legacy_items, select_mapped(items, query, rules), query)
    return web.json_response({key: page})


async def _group_items(
    state: ShimState, calls: SdrsCalls, project_id: str, mapped: dict[str, GroupMapping],
    groups: list[ServerGroup], pairs: list[ReplicationPair],
) -> list[MappedItem]:
    return [
        MappedItem(legacy_group(mapped[id_key(group.id)].rcg_id,
                                await as_clients_see_it(state, calls, project_id, group),
                                members, state.mappings.statuses),
                   frozenset(volume for pair in members for volume in pair.volume_id_list))
        for group, members in _mapped_with_pairs(groups, pairs, mapped)
    ]


async def _pair_items(
    state: ShimState, calls: SdrsCalls, project_id: str, mapped: dict[str, GroupMapping],
    groups: list[ServerGroup], pairs: list[ReplicationPair],
) -> list[MappedItem]:
    return [
        MappedItem(legacy_pair(pair, mapped[id_key(group.id)].rcg_id, group, state.mappings.statuses),
                   frozenset(pair.volume_id_list))
        for group, members in _mapped_with_pairs(groups, pairs, mapped)
        for pair in members
    ]


async def as_clients_see_it(state: ShimState, calls: SdrsCalls, project_id: str, group: ServerGroup) -> ServerGroup:
    """The group, shown as running the action this shim started on it while that job is pending."""
    pending = await state.actions.pending_action(project_id, group.id)
    if pending is None:
        return group
    legacy_key, job_ids = pending
    translation = TRANSLATED_ACTIONS[legacy_key]
    for job_id in job_ids:
        group = shown_while_pending(group, translation, await calls.job(project_id, job_id))
    return group


def _mapped_with_pairs(
    groups: list[ServerGroup], pairs: list[ReplicationPair], mapped: dict[str, GroupMapping]
) -> list[tuple[ServerGroup, list[ReplicationPair]]]:
    """The mapped groups SDRS still has, each with its pairs (a mapped group SDRS lost is gone)."""
    return [
        (group, [pair for pair in pairs if id_key(pair.server_group_id) == id_key(group.id)])
        for group in groups
        if id_key(group.id) in mapped
    ]


def _first_values(request: web.Request) -> dict[str, str]:
    return {key: request.query[key] for key in request.query}


async def legacy_list(state: ShimState, request: web.Request, key: str) -> list[dict[str, Any]]:
    """The legacy endpoint's items for this list, filtered by it, unpaged ([] with no legacy endpoint)."""
    if state.legacy.base_url is None:
        return []
    status, document = await state.legacy.get_json(request, upstream_list_query(_first_values(request)))
    if status != 200:
        raise LegacyError(status if status in (400, 401, 403, 404) else 502,
                          f"The legacy EVS endpoint answered the list with HTTP {status}.")
    items = document.get(key) if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LegacyError(502, f"The legacy EVS endpoint's list has no {key!r} list.")
    return items
