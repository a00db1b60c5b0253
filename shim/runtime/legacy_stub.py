"""A tiny stand-in for the legacy EVS v2 endpoint, for `shim demo` and tests.

This is a demo stand-in, not an EVS emulator: it holds two fixed replication consistency groups
(a stale copy of the demo's migrated group, and one that has not moved to SDRS),
answers list/get in the exact legacy shape, accepts the legacy action keys with 200 and an empty
body, and changes nothing. Everything else is a legacy-shaped 404.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shim.translate.legacy import RCG_COLLECTION

# Listed here, not imported from the shim: this side stands for EVS, not for the shim.
ACTION_KEYS = frozenset(
    {
        "os-stop-replication-consistency-group",
        "os-sync-replication-consistency-group",
        "os-reverse-replication-consistency-group",
        "os-failover-replication-consistency-group",
        "os-reprotect-replication-consistency-group",
        "os-extend-replication-volumes",
    }
)
# The group the shipped mappings/consistency-groups.yaml maps, so the demo's curl lines line up.
DEMO_GROUP: dict[str, Any] = {
    "id": "bd35d31b-7ab9-47fc-84c6-3d326c6fa6cb",
    "name": "demo-rcg",
    "description": "legacy EVS stand-in group (demo)",
    "status": "available",
    "priority_station": "eu-de-01",
    "replication_model": "hypermetro",
    "replication_status": "active",
    "replication_ids": ["3f0b5a2e-6c1d-4e8a-9b7f-2d4c6e8a0b1c"],
    "created_at": "2017-09-28T05:08:32.839953",
    "updated_at": None,
    "failure_detail": None,
    "fault_level": "0",  # a string in the legacy API: a number breaks the Go client
}


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(document).encode(), content_type="application/json")


def _not_found(what: str) -> web.Response:
    return _json({"itemNotFound": {"message": f"{what} could not be found.", "code": "EVS.5404"}}, 404)


# A group that has not moved to SDRS: the shim lists it beside the migrated one.
UNMIGRATED_GROUP: dict[str, Any] = {
    **DEMO_GROUP,
    "id": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    "name": "legacy-rcg",
    "description": "a group still served by the legacy endpoint (demo)",
    "replication_ids": ["6e7f8091-2b3c-4d5e-9f0a-1b2c3d4e5f60"],
    "created_at": "2017-08-01T10:00:00.000000",
}
GROUPS = {group["id"]: group for group in (DEMO_GROUP, UNMIGRATED_GROUP)}


def _group_or_404(request: web.Request) -> web.Response | None:
    rcg_id = request.match_info["rcg_id"]
    if rcg_id.lower() not in GROUPS:
        return _not_found(f"Replication consistency group {rcg_id}")
    return None


async def list_groups(request: web.Request) -> web.Response:
    return _json({"replication_consistency_groups": list(GROUPS.values())})


async def get_group(request: web.Request) -> web.Response:
    missing = _group_or_404(request)
    return missing or _json({"replication_consistency_group": GROUPS[request.match_info["rcg_id"].lower()]})


async def group_action(request: web.Request) -> web.Response:
    missing = _group_or_404(request)
    if missing is not None:
        return missing
    try:
        document = json.loads(await request.read())
    except ValueError:
        document = None
    if not isinstance(document, dict) or len(document) != 1 or next(iter(document)) not in ACTION_KEYS:
        return _json({"badRequest": {"message": "Invalid action request body.", "code": "EVS.5400"}}, 400)
    return web.Response(status=200, body=b"")  # legacy actions answer 200 with an empty body


async def not_found(request: web.Request) -> web.Response:
    return _not_found(f"Resource {request.path}")


def legacy_stub_app() -> web.Application:
    """The stand-in as an aiohttp Application (any project id is accepted)."""
    app = web.Application()
    base = "/v2/{project_id}/" + RCG_COLLECTION
    app.router.add_get(base, list_groups)
    app.router.add_get(base + "/{rcg_id}", get_group)
    app.router.add_post(base + "/{rcg_id}/action", group_action)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
