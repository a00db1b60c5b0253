"""aiohttp shell of the legacy EVS v2 stand-in: routing, auth, request recording, error rendering.

All behaviour lives in state.py (status machine), api.py (wire shapes) and listing.py (lists); this
module only moves bytes. Middleware order, outermost first: record the request, stamp the request
ids, then render EVS errors, answer unknown routes with a legacy 404 and require a token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from aiohttp import web
from multidict import CIMultiDict

from shim.legacy_sim import api, listing
from shim.legacy_sim.errors import EvsError
from shim.legacy_sim.settings import LegacySimSettings
from shim.legacy_sim.state import Clock, Group, LegacyState, Pair

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

GROUPS = "/v2/{project_id}/os-vendor-replication-consistency-groups"
PAIRS = "/v2/{project_id}/os-vendor-replications"


class RecordedRequest(NamedTuple):
    method: str
    path: str  # raw path with the query string, as sent
    headers: CIMultiDict[str]
    body: bytes


class LegacySimulator:
    """In-memory legacy EVS v2 replication API (pairs and consistency groups) behind an aiohttp app.

    sim = LegacySimulator(LegacySimSettings(transition_seconds=0.05))
    group = sim.add_group(project_id, pair_count=2)  # live state: group.status, group.replication_ids
    app = sim.app()
    """

    def __init__(
        self,
        settings: LegacySimSettings | None = None,
        now: Clock = time.monotonic,
        *,
        wall_epoch: float | None = None,
    ) -> None:
        self.settings = settings if settings is not None else LegacySimSettings()
        self.now = now
        # Timestamps shown to clients are wall_epoch + now(): real UTC for a real clock, and
        # deterministic when a test injects both.
        self.wall_epoch = time.time() - now() if wall_epoch is None else wall_epoch
        self.state = LegacyState(self.settings, now, self._wall)
        self.requests: list[RecordedRequest] = []

    def _wall(self, t: float) -> datetime:
        return datetime.fromtimestamp(self.wall_epoch + t, tz=UTC).replace(tzinfo=None)

    # -- seeding and test controls ----------------------------------------------------------------

    def add_pair(self, project_id: str, **options: Any) -> Pair:
        """A replication pair (see LegacyState.add_pair for the options); the object is live state."""
        return self.state.add_pair(project_id, **options)

    def add_group(
        self,
        project_id: str,
        *,
        pair_count: int = 1,
        status: str = "available",
        replication_status: str = "active",
        **options: Any,
    ) -> Group:
        """A group with `pair_count` new pairs (or `pair_ids=[...]`); the object is live state."""
        return self.state.add_group(
            project_id, pair_count=pair_count, status=status, replication_status=replication_status, **options
        )

    def group(self, project_id: str, group_id: str) -> Group:
        """The group as of now (changes that ended are applied); KeyError when unknown."""
        try:
            return self.state.group(project_id, group_id)
        except EvsError as err:
            raise KeyError(f"no replication consistency group {group_id} in project {project_id}") from err

    def pair(self, project_id: str, pair_id: str) -> Pair:
        try:
            return self.state.pair(project_id, pair_id)
        except EvsError as err:
            raise KeyError(f"no replication pair {pair_id} in project {project_id}") from err

    def fail_next(self, project_id: str, resource_id: str, failure_detail: str | None = None) -> None:
        """The next timed change of that group or pair (update, delete, sync, reprotect, failover,
        switchover) ends in its error status with `failure_detail`."""
        self.state.fail_next(project_id, resource_id, failure_detail)

    def fail_next_create(
        self, project_id: str, kind: Literal["pair", "group"], failure_detail: str | None = None
    ) -> None:
        """The next pair (or group) created in the project ends `error` with `failure_detail`."""
        self.state.fail_next_create(project_id, kind, failure_detail)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, _stamp_request_ids, self._guard])
        app.router.add_get(GROUPS, self._list_groups)
        app.router.add_post(GROUPS, self._create_group)
        app.router.add_get(GROUPS + "/{group_id}", self._show_group)
        app.router.add_put(GROUPS + "/{group_id}", self._update_group)
        app.router.add_delete(GROUPS + "/{group_id}", self._delete_group)
        app.router.add_post(GROUPS + "/{group_id}/action", self._group_action)
        app.router.add_get(PAIRS, self._list_pairs)
        app.router.add_post(PAIRS, self._create_pair)
        app.router.add_get(PAIRS + "/{pair_id}", self._show_pair)
        app.router.add_delete(PAIRS + "/{pair_id}", self._delete_pair)
        return app

    # -- middlewares ------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(RecordedRequest(request.method, request.raw_path, CIMultiDict(request.headers), body))
        return await handler(request)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            token = request.headers.get("X-Auth-Token", "")
            if not token or (self.settings.tokens is not None and token not in self.settings.tokens):
                raise EvsError(401, "Authentication required.")
            if request.match_info.http_exception is not None:  # unknown path, or method not routed
                raise EvsError(404, f"The resource {request.path} could not be found.")
            return await handler(request)
        except EvsError as err:
            return _json(err.status, err.body())

    # -- groups -----------------------------------------------------------------------------------

    async def _list_groups(self, request: web.Request) -> web.Response:
        query = listing.parse_list_query(request.query, listing.GROUP_FILTERS)
        items = [
            listing.Listed(
                api.render_group(group),
                frozenset(volume for pair in self.state.members(group) for volume in pair.volume_ids),
                group.updated_at or group.created_at,
            )
            for group in self.state.list_groups(_project(request))
        ]
        return _json(200, {"replication_consistency_groups": listing.page(items, query)})

    async def _create_group(self, request: web.Request) -> web.Response:
        group = self.state.create_group(_project(request), api.parse_group_create(await request.read()))
        return _json(202, {"replication_consistency_group": api.render_accepted_group(group)})

    async def _show_group(self, request: web.Request) -> web.Response:
        group = self.state.group(_project(request), request.match_info["group_id"])
        return _json(200, {"replication_consistency_group": api.render_group(group)})

    async def _update_group(self, request: web.Request) -> web.Response:
        update = api.parse_group_update(await request.read())
        group = self.state.update_group(_project(request), request.match_info["group_id"], update)
        return _json(202, {"replication_consistency_group": api.render_accepted_group(group)})

    async def _delete_group(self, request: web.Request) -> web.Response:
        self.state.delete_group(_project(request), request.match_info["group_id"])
        return web.Response(status=202)

    async def _group_action(self, request: web.Request) -> web.Response:
        project_id, group_id = _project(request), request.match_info["group_id"]
        self.state.group(project_id, group_id)  # an unknown group is 404 whatever the body
        action, extensions = api.parse_action(await request.read())
        self.state.act(project_id, group_id, action, extensions)
        return web.Response(status=200)  # the docs: response body "None"

    # -- pairs ------------------------------------------------------------------------------------

    async def _list_pairs(self, request: web.Request) -> web.Response:
        query = listing.parse_list_query(request.query, listing.PAIR_FILTERS)
        items = [
            listing.Listed(api.render_pair(pair), frozenset(pair.volume_ids), pair.updated_at or pair.created_at)
            for pair in self.state.list_pairs(_project(request))
        ]
        return _json(200, {"replications": listing.page(items, query)})

    async def _create_pair(self, request: web.Request) -> web.Response:
        pair = self.state.create_pair(_project(request), api.parse_pair_create(await request.read()))
        return _json(202, {"replication": api.render_created_pair(pair)})

    async def _show_pair(self, request: web.Request) -> web.Response:
        pair = self.state.pair(_project(request), request.match_info["pair_id"])
        return _json(200, {"replication": api.render_pair(pair)})

    async def _delete_pair(self, request: web.Request) -> web.Response:
        self.state.delete_pair(_project(request), request.match_info["pair_id"])
        return web.Response(status=202)


@web.middleware
async def _stamp_request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    request_id = f"req-{uuid.uuid4()}"
    response.headers["X-Request-Id"] = request_id
    response.headers["X-Openstack-Request-Id"] = request_id
    return response


def _project(request: web.Request) -> str:
    return request.match_info["project_id"]


def _json(status: int, document: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(document).encode(), content_type="application/json")


def seed(sim: LegacySimulator, project_id: str, groups: Sequence[dict[str, Any]]) -> list[Group]:
    """Groups as legacy documents (the get shape) made live, with their pairs; for fixed demo data."""
    return [
        sim.add_group(
            project_id, group_id=document["id"], name=document["name"], description=document["description"],
            status=document["status"], replication_status=document["replication_status"],
            priority_station=document["priority_station"], pair_ids=document["replication_ids"],
            failure_detail=document["failure_detail"],
            created_at=datetime.fromisoformat(document["created_at"]),
            updated_at=datetime.fromisoformat(document["updated_at"]) if document["updated_at"] else None,
        )  # fmt: skip
        for document in groups
    ]
