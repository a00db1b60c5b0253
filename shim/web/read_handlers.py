"""aiohttp handlers for the legacy group and pair URLs other than actions: the thin shell around
shim/translate/ownership.py (who owns the call), reads.py and listing.py.

A call about a group SDRS owns (a mapped group, or one of its pairs) is served from SDRS in the exact
legacy shape, or refused when it would change the group's stale legacy copy; every call about an
unmapped group goes to the legacy endpoint unchanged. Lists merge both sources, the legacy copies of
mapped groups and pairs hidden. A project with no mapped group never touches SDRS.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from shim.state.retired import ProjectRetired
from shim.state.store import StoreUnavailable
from shim.translate.legacy import LegacyError, canonical_project_id, id_key
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
from shim.translate.ownership import (
    SdrsHoldings,
    holdings_document,
    holdings_from_document,
    mapped_group,
    named_pair_ids,
    named_volume_ids,
    project_mappings,
    refuse_write_on_sdrs_group,
    require_legacy_ids,
    sdrs_cannot_answer,
)
from shim.translate.reads import legacy_group, legacy_pair
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.translate.tables import GroupMapping
from shim.translate.writes import DELETE_GROUP, DELETE_PAIR, UPDATE, Reading, reading_while_pending
from shim.upstreams.sdrs_calls import SdrsCalls
from shim.web.incoming import read_capped_body, sdrs_calls
from shim.web.owner import deleted_group, serve_from_sdrs, to_legacy
from shim.web.shim_state import STATE, ShimState
from shim.web.write_handlers import delete_group, delete_pair, update_group

READS = (hdrs.METH_GET, hdrs.METH_HEAD)
GROUP_METHODS = "GET, HEAD, PUT, DELETE"
# Create and update bodies are read whole (to see which pairs or disks they name) up to this size.
INSPECTED_BODY_BYTES = 1024 * 1024

SDRS_CREATE_PAIR = ("POST /v1/{project}/replications with {{\"replication\": {{\"server_group_id\": \"{group}\", "
                    "\"volume_id\": ..., \"name\": ...}}}}")


# -- groups -------------------------------------------------------------------------------------


async def group_collection(request: web.Request) -> web.StreamResponse:
    """.../os-vendor-replication-consistency-groups: the merged list; a create naming a mapped pair is
    refused; everything else is the legacy endpoint's."""
    if request.method in READS:
        return await merged_list(request, "replication_consistency_groups", "list-groups", GROUP_FILTERS,
                                 _group_items)
    if request.method == hdrs.METH_POST:
        return await _write_naming_pairs(request, "create a replication consistency group")
    return await to_legacy(request)


async def group_item(request: web.Request) -> web.StreamResponse:
    """.../os-vendor-replication-consistency-groups/{rcg_id}."""
    state = request.app[STATE]
    project_id, rcg_id = request.match_info["project_id"], request.match_info["rcg_id"]
    entry = mapped_group(state.mappings, project_id, rcg_id)
    if entry is None:
        deleted = state.retired.group(project_id, rcg_id)
        if deleted is not None:  # deleted through the shim: gone, whatever became of its mapping entry
            raise deleted_group(request, deleted)
        if request.method == hdrs.METH_PUT:
            return await _write_naming_pairs(request, f"update replication consistency group {rcg_id}",
                                              item=f"Replication consistency group {rcg_id}")
        return await to_legacy(request, item=f"Replication consistency group {rcg_id}")
    if request.method in READS:
        serve_from_sdrs(request, entry, "show-group")
        return await show_group(request, state, entry)
    if request.method == hdrs.METH_PUT:
        serve_from_sdrs(request, entry, UPDATE)
        return await update_group(request, state, entry)
    if request.method == hdrs.METH_DELETE:
        serve_from_sdrs(request, entry, DELETE_GROUP)
        return await delete_group(request, state, entry)
    serve_from_sdrs(request, entry, f"{request.method.lower()}-group")
    raise LegacyError(405, f"Method {request.method} is not allowed on a replication consistency group.",
                      headers=(("Allow", GROUP_METHODS),))


async def show_group(request: web.Request, state: ShimState, entry: GroupMapping) -> web.StreamResponse:
    calls = sdrs_calls(request, state)
    project_id, group_id = entry.project_id, entry.protection_group_id
    group, pairs = await asyncio.gather(calls.group(project_id, group_id), calls.pairs(project_id, group_id))
    body = await group_as_clients_see_it(state, calls, entry, group, pairs)
    return web.json_response({"replication_consistency_group": body})


async def group_as_clients_see_it(
    state: ShimState, calls: SdrsCalls, entry: GroupMapping, group: ServerGroup, pairs: list[ReplicationPair],
) -> dict[str, Any]:
    """The legacy object for a mapped group: work this shim started on it shown as running, the
    description the shim keeps for it, the ids and names old clients knew (translate/identity.py)."""
    written, renamed, reading = await asyncio.gather(
        state.notes.description(entry), state.notes.renamed(entry), reading_of(state, calls, entry.project_id, group))
    return legacy_group(entry.rcg_id, reading.group, pairs, state.mappings.statuses, status=reading.status,
                        failure_detail=reading.failure_detail, written_description=written,
                        identity=entry.identity, renamed=renamed)


# -- pairs --------------------------------------------------------------------------------------


async def pair_collection(request: web.Request) -> web.StreamResponse:
    """.../os-vendor-replications: the merged list (a list filtered by a mapped group: SDRS alone);
    a create naming a disk of a mapped group's pair is refused."""
    if request.method in READS:
        return await merged_list(request, "replications", "list-pairs", PAIR_FILTERS, _pair_items)
    if request.method == hdrs.METH_POST:
        return await _write_naming_volumes(request)
    return await to_legacy(request)


async def pair_item(request: web.Request) -> web.StreamResponse:
    """.../os-vendor-replications/{replication_id}: SDRS's when the pair belongs to a mapped group,
    named by its SDRS id or by the legacy id discovery recorded for it."""
    state = request.app[STATE]
    project_id, pair_id = request.match_info["project_id"], request.match_info["replication_id"]
    require_legacy_ids(project_id, pair_id, "replication pair id")
    item = f"Replication pair {pair_id}"
    recorded = state.mappings.legacy_pair(project_id, pair_id)  # a mapped group's legacy pair: SDRS's, always
    if recorded is not None and request.method not in (*READS, hdrs.METH_DELETE):
        serve_from_sdrs(request, recorded[0], f"{request.method.lower()}-pair", replication_id=recorded[1].sdrs_id)
        raise LegacyError(405, f"Method {request.method} is not allowed on a replication pair.",
                          headers=(("Allow", "GET, HEAD, DELETE"),))
    if request.method not in (*READS, hdrs.METH_DELETE):
        return await to_legacy(request, item=item)
    mapped = project_mappings(state.mappings, project_id)
    sdrs_id = recorded[1].sdrs_id if recorded is not None else pair_id
    removed = state.retired.pair(project_id, sdrs_id)
    if not mapped:  # no SDRS read: what this shim removed is known in memory
        return _removed_pair(request, removed.to_document()) if removed is not None \
            else await to_legacy(request, item=item)
    project_id = canonical_project_id(project_id)
    calls = sdrs_calls(request, state)
    try:
        # The project's pair list, not a read of this id: an unmapped group's pair id never reaches SDRS.
        sdrs_pairs = await calls.pairs(project_id)
    except LegacyError as err:
        if not sdrs_cannot_answer(err):
            raise
        if removed is not None:
            return _removed_pair(request, removed.to_document())
        known = await known_holdings(state, project_id) if recorded is None else None
        if recorded is not None or (known is not None and id_key(pair_id) in known.pair_ids):
            raise  # a mapped group's pair: only SDRS can answer for it
        return await to_legacy(request, item=item)  # nothing known ties it to a mapped group: the legacy side's
    await learn_holdings(state, project_id, _holdings(mapped, sdrs_pairs))
    pair = next((pair for pair in sdrs_pairs if id_key(pair.id) == id_key(sdrs_id)), None)
    entry = mapped.get(id_key(pair.server_group_id)) if pair is not None else None
    if pair is None or entry is None or request.method == hdrs.METH_DELETE:
        noted = (removed.to_document() if removed is not None
                 else await state.notes.removed_pair_if_known(project_id, sdrs_id))
        if noted is not None:  # this shim deleted it from a mapped group: SDRS's, and gone (or going)
            return _removed_pair(request, noted)
        if (pair is None or entry is None) and recorded is not None:  # SDRS no longer holds it: gone
            serve_from_sdrs(request, recorded[0], f"{request.method.lower()}-pair", replication_id=sdrs_id)
            raise LegacyError(404, f"{item} could not be found: SDRS no longer holds its pair {sdrs_id}.")
        if pair is None or entry is None:
            return await to_legacy(request, item=item)  # not a pair of a migrated group
        serve_from_sdrs(request, entry, DELETE_PAIR, replication_id=pair.id)
        return await delete_pair(request, state, entry, pair)
    serve_from_sdrs(request, entry, "show-pair", replication_id=pair.id)
    group = await calls.group(project_id, pair.server_group_id)
    body = legacy_pair(pair, entry.rcg_id, group, state.mappings.statuses, entry.identity)
    return web.json_response({"replication": body})


def _removed_pair(request: web.Request, removed: dict[str, Any]) -> web.StreamResponse:
    """A pair this shim removed from a mapped group: its DELETE is done (202), its GET 404, as a
    removed legacy pair's delete ends; never a question for the legacy endpoint's stale copy."""
    entry = _group_of_removed_pair(request.match_info["project_id"], removed)
    serve_from_sdrs(request, entry, f"{request.method.lower()}-removed-pair", replication_id=removed.get("pair_id"))
    if request.method == hdrs.METH_DELETE:
        return web.Response(status=202)
    raise LegacyError(404, f"Replication pair {removed.get('pair_id')} could not be found (it was deleted with "
                           f"replication consistency group {removed.get('rcg_id')}'s update).")


def _group_of_removed_pair(project_id: str, removed: dict[str, Any]) -> GroupMapping:
    """The mapped group a pair this shim removed belonged to (from its note)."""
    return GroupMapping(project_id, str(removed.get("rcg_id")), str(removed.get("protection_group_id")))


# -- legacy writes that could touch a mapped group -------------------------------------------------


async def _write_naming_pairs(request: web.Request, what: str, item: str | None = None) -> web.StreamResponse:
    """A group create or update of an unmapped group: refused when it names a pair of a mapped group
    (one SDRS has, or one this shim removed from a mapped group: SDRS's still, and gone)."""
    state = request.app[STATE]

    async def named(document: Any, holdings: SdrsHoldings, mapped: bool) -> list[GroupMapping]:
        found = []
        for pair_id in named_pair_ids(document):
            if id_key(pair_id) in holdings.pair_ids:
                found.append(holdings.pair_ids[id_key(pair_id)])
            elif mapped and (removed := await state.notes.removed_pair_if_known(
                    request.match_info["project_id"], pair_id)) is not None:
                found.append(_group_of_removed_pair(request.match_info["project_id"], removed))  # an older note
        return found

    return await _inspected_write(request, what, item, named_pair_ids, named, SDRS_CREATE_PAIR)


async def _write_naming_volumes(request: web.Request) -> web.StreamResponse:
    """A pair create: refused when it names a disk of a mapped group's pair, or of a pair this shim
    removed from one (its disks stay SDRS's: a legacy pair on them would revive the stale copy's)."""

    async def named(document: Any, holdings: SdrsHoldings, mapped: bool) -> list[GroupMapping]:
        return [holdings.volume_ids[id_key(volume)] for volume in named_volume_ids(document)
                if id_key(volume) in holdings.volume_ids]

    return await _inspected_write(request, "create a replication pair", None, named_volume_ids, named,
                                  SDRS_CREATE_PAIR)


async def _inspected_write(
    request: web.Request, what: str, item: str | None, names: Callable[[Any], list[str]],
    sdrs_groups_named: Callable[[Any, SdrsHoldings, bool], Awaitable[list[GroupMapping]]], sdrs_call: str,
) -> web.StreamResponse:
    """Relayed as sent unless the body names a pair or disk SDRS owns (or owned). SDRS is read only when
    the body names any; when SDRS cannot answer, what this shim knows decides (the pairs and disks it
    last saw in mapped groups, the ones it removed), and a body nothing known ties to a mapped group
    is the legacy endpoint's."""
    state = request.app[STATE]
    mapped = project_mappings(state.mappings, request.match_info["project_id"])
    retired = state.retired.of_project(request.match_info["project_id"])
    if (not mapped and retired is None) or not request.headers.get("X-Auth-Token"):
        return await to_legacy(request, item=item)  # nothing to protect, or the legacy side refuses it
    body = await read_capped_body(request, INSPECTED_BODY_BYTES, state.settings.timeouts.request_body_idle)
    try:
        document = json.loads(body)
    except ValueError:
        return await to_legacy(request, body=body, item=item)  # the legacy endpoint says what is wrong
    if not names(document):
        return await to_legacy(request, body=body, item=item)  # names no pair or disk: nothing to look up
    project_id = canonical_project_id(request.match_info["project_id"])
    holdings = NO_HOLDINGS
    if mapped:
        try:
            holdings = await sdrs_holdings(state, sdrs_calls(request, state), project_id, mapped)
        except LegacyError as err:
            if not sdrs_cannot_answer(err):
                raise
            holdings = await known_holdings(state, project_id) or SdrsHoldings.of(mapped, ())
    named = await sdrs_groups_named(document, with_retired(holdings, retired), bool(mapped))
    if named:
        serve_from_sdrs(request, named[0], "refused-legacy-write")
        raise refuse_write_on_sdrs_group(named[0], what, sdrs_call)
    return await to_legacy(request, body=body, item=item)


NO_HOLDINGS = SdrsHoldings(frozenset(), {}, {})


def _holdings(mapped: Mapping[str, GroupMapping], pairs: list[ReplicationPair]) -> SdrsHoldings:
    return SdrsHoldings.of(mapped, ((pair.id, pair.server_group_id, pair.volume_id_list) for pair in pairs))


async def sdrs_holdings(
    state: ShimState, calls: SdrsCalls, project_id: str, mapped: Mapping[str, GroupMapping],
) -> SdrsHoldings:
    """What SDRS holds of the project's mapped groups now (and remembered, for an SDRS outage)."""
    holdings = _holdings(mapped, await calls.pairs(project_id))
    await learn_holdings(state, project_id, holdings)
    return holdings


def holdings_key(project_id: str) -> str:
    return f"holdings:{id_key(project_id)}"


async def learn_holdings(state: ShimState, project_id: str, holdings: SdrsHoldings) -> None:
    """Remember what SDRS holds of the project's mapped groups: in memory, and, when it changed, in the
    state store (best effort: a store that does not answer costs this call nothing)."""
    if state.holdings.learn(project_id, holdings):
        try:
            await state.actions.store.put(holdings_key(project_id), holdings_document(holdings))
        except StoreUnavailable:
            pass


async def known_holdings(state: ShimState, project_id: str) -> SdrsHoldings | None:
    """While SDRS cannot answer: what this shim last saw of the project's mapped pairs, else what a shim
    sharing the store saw (one store read, on this outage path only)."""
    known = state.holdings.of_project(project_id)
    if known is not None:
        return known
    try:
        return holdings_from_document(project_id, await state.actions.store.get(holdings_key(project_id)))
    except StoreUnavailable:
        return None


def with_retired(holdings: SdrsHoldings, retired: ProjectRetired | None) -> SdrsHoldings:
    """The holdings with what this shim took from the legacy world: the groups it deleted, the pairs it
    removed and their disks (their legacy copies stay hidden, and no legacy write may name them)."""
    if retired is None:
        return holdings
    return SdrsHoldings(
        holdings.rcg_ids | frozenset(retired.groups),
        {**{key: fact.entry for key, fact in retired.pairs.items()}, **holdings.pair_ids},
        {**{key: fact.entry for key, fact in retired.disks.items()}, **holdings.volume_ids},
    )


# -- lists --------------------------------------------------------------------------------------


ItemBuilder = Callable[
    [ShimState, SdrsCalls, str, Mapping[str, GroupMapping], list[ServerGroup], list[ReplicationPair]],
    Awaitable[list[MappedItem]],
]


async def merged_list(
    request: web.Request, key: str, action: str, rules: Mapping[str, FilterRule], build_items: ItemBuilder
) -> web.StreamResponse:
    """The legacy endpoint's list (its copies of mapped groups and pairs hidden) merged with SDRS's
    items for the mapped groups, filtered and paged (listing.py)."""
    state = request.app[STATE]
    mapped = project_mappings(state.mappings, request.match_info["project_id"])
    retired = state.retired.of_project(request.match_info["project_id"])
    if not mapped and retired is None:
        return await to_legacy(request)
    project_id = canonical_project_id(request.match_info["project_id"])
    query = parse_list_query(_first_values(request))
    wanted = _wanted_group(query.filters, key, mapped)
    if wanted is not None:
        mapped = {id_key(wanted.protection_group_id): wanted}  # about one mapped group: SDRS alone
    serve_from_sdrs(request, wanted, action, project_id=project_id)
    items: list[MappedItem] = []
    holdings = NO_HOLDINGS
    if mapped:  # else only what this shim deleted: the legacy list without those copies, SDRS not asked
        calls = sdrs_calls(request, state)
        groups, pairs = await asyncio.gather(calls.groups(project_id), calls.pairs(project_id))
        holdings = _holdings(mapped, pairs)
        if wanted is None:
            await learn_holdings(state, project_id, holdings)
        items = await build_items(state, calls, project_id, mapped, groups, pairs)
    holdings = with_retired(holdings, retired)
    legacy_items: list[dict[str, Any]] = []
    if wanted is None and not holdings.filter_names_a_mapped_disk(query.filters):
        hidden = holdings.is_legacy_copy_of_group if key == "replication_consistency_groups" \
            else holdings.is_legacy_copy_of_pair
        legacy_items = [item for item in await legacy_list(state, request, key) if not hidden(item)]
    page = merge_page(legacy_items, select_mapped(items, query, rules), query)
    return web.json_response({key: page})


def _wanted_group(filters: Mapping[str, str], key: str, mapped: Mapping[str, GroupMapping]) -> GroupMapping | None:
    """The mapped group a pair list is filtered by, if any: such a list is about that group alone."""
    rcg_id = filters.get("replication_consistency_group_id", "") if key == "replications" else ""
    return next((entry for entry in mapped.values() if id_key(entry.rcg_id) == id_key(rcg_id)), None) \
        if rcg_id else None


async def _group_items(
    state: ShimState, calls: SdrsCalls, project_id: str, mapped: Mapping[str, GroupMapping],
    groups: list[ServerGroup], pairs: list[ReplicationPair],
) -> list[MappedItem]:
    items = []
    for group, members in _mapped_with_pairs(groups, pairs, mapped):
        legacy = await group_as_clients_see_it(state, calls, mapped[id_key(group.id)], group, members)
        items.append(MappedItem(legacy, frozenset(volume for pair in members for volume in pair.volume_id_list)))
    return items


async def _pair_items(
    state: ShimState, calls: SdrsCalls, project_id: str, mapped: Mapping[str, GroupMapping],
    groups: list[ServerGroup], pairs: list[ReplicationPair],
) -> list[MappedItem]:
    return [
        MappedItem(legacy_pair(pair, mapped[id_key(group.id)].rcg_id, group, state.mappings.statuses,
                               mapped[id_key(group.id)].identity),
                   frozenset(pair.volume_id_list))
        for group, members in _mapped_with_pairs(groups, pairs, mapped)
        for pair in members
    ]


async def reading_of(state: ShimState, calls: SdrsCalls, project_id: str, group: ServerGroup) -> Reading:
    """How the group reads while work this shim started on it is pending (translate/writes.py)."""
    pending = await state.actions.pending_action(project_id, group.id)
    if pending is None:
        return Reading(group)
    work, job_ids = pending
    jobs = [await calls.job(project_id, job_id) for job_id in job_ids]
    return reading_while_pending(group, work, jobs)


def _mapped_with_pairs(
    groups: list[ServerGroup], pairs: list[ReplicationPair], mapped: Mapping[str, GroupMapping]
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
    """The legacy endpoint's items for this list, filtered by it, unpaged ([] with no legacy endpoint, or in
    a fully migrated project)."""
    if state.legacy.base_url is None or state.mappings.fully_migrated(request.match_info["project_id"]):
        return []
    status, document = await state.legacy.get_json(request, upstream_list_query(_first_values(request)))
    if status != 200:
        raise LegacyError(status if status in (400, 401, 403, 404) else 502,
                          f"The legacy EVS endpoint answered the list with HTTP {status}.")
    items = document.get(key) if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LegacyError(502, f"The legacy EVS endpoint's list has no {key!r} list.")
    return items
