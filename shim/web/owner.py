"""The two ways a legacy call is served, as the request records them: from SDRS (`translated`, audited)
or by the legacy endpoint (`passthrough`). Every handler decides once, through these two functions,
and the metrics' `route` label and the audit line follow from that one decision."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shim.context import AUDIT, ROUTE, TRANSLATED
from shim.state.retired import Retired
from shim.translate.legacy import LegacyError, canonical_project_id
from shim.translate.ownership import REFUSED_STATUS
from shim.translate.paths import names_a_translated_url
from shim.translate.tables import GroupMapping, Mappings
from shim.web.shim_state import STATE


def serve_from_sdrs(request: web.Request, entry: GroupMapping | None, action: str, **audit: Any) -> None:
    """This call is about groups SDRS owns: it is translated (or refused) here, never relayed."""
    request[ROUTE] = TRANSLATED
    record = request[AUDIT]
    if entry is not None:
        record.update(project_id=entry.project_id, rcg_id=entry.rcg_id,
                      protection_group_id=entry.protection_group_id)
    record.update(action=action, **audit)


async def to_legacy(request: web.Request, *, body: bytes | None = None, item: str | None = None) -> web.StreamResponse:
    """The legacy endpoint owns this call: relay it unchanged (`body` when a handler already read it).
    With no legacy endpoint configured, a call about one group or pair (`item`) finds nothing: 404.
    In a fully migrated project the legacy RCG API is off: the shim answers for it (`in_migrated_project`)."""
    state = request.app[STATE]
    if state.mappings.project_modes and _in_migrated_project(request, state.mappings):
        return in_migrated_project(request, item)
    legacy = state.legacy
    if legacy.base_url is None and item is not None:
        raise LegacyError(404, f"{item} could not be found.")
    return await legacy.forward(request, body=body)


# The list key of each collection route, for the empty list of a fully migrated project.
_COLLECTION_KEYS = {"rcgs": "replication_consistency_groups", "pairs": "replications"}


def _in_migrated_project(request: web.Request, mappings: Mappings) -> bool:
    project_id = request.match_info.get("project_id")
    return (project_id is not None and mappings.fully_migrated(project_id)
            and names_a_translated_url(request.rel_url.raw_path))


def in_migrated_project(request: web.Request, item: str | None) -> web.StreamResponse:
    """A fully migrated project (default mode `sdrs`) has no legacy RCG endpoint any more: what SDRS
    does not hold does not exist (404, an empty list), and a create cannot go to the legacy side (400,
    `REFUSED_STATUS`: the message, which names the SDRS calls, reaches golangsdk's user)."""
    project_id = canonical_project_id(request.match_info["project_id"])
    serve_from_sdrs(request, None, "fully-migrated-project", project_id=project_id)
    if item is not None:
        raise LegacyError(404, f"{item} could not be found.")
    key = _COLLECTION_KEYS.get(request.match_info.route.name or "")
    if key is not None and request.method in ("GET", "HEAD"):
        return web.json_response({key: []})
    if key is not None and request.method == "POST":
        raise LegacyError(REFUSED_STATUS, f"Project {project_id} has moved to SDRS: its replication consistency "
                                          f"groups and pairs are created in SDRS (POST /v1/{project_id}/server-groups, "
                                          f"POST /v1/{project_id}/replications), not through the legacy API.")
    raise LegacyError(404, f"The resource {request.path[:200]} could not be found.")


def deleted_group(request: web.Request, deleted: Retired) -> LegacyError:
    """A group this shim deleted (its protection group): 404 for every call, as a deleted legacy group;
    its stale legacy copy is never read again."""
    serve_from_sdrs(request, deleted.entry, f"{request.method.lower()}-deleted-group")
    return LegacyError(404, f"Replication consistency group {deleted.rcg_id} could not be found (it was deleted "
                            f"through the migration proxy: SDRS job {deleted.job_id or 'unknown'}).")
