"""The legacy EVS v2 stand-in over real loopback HTTP: the Terraform provider's flows as golangsdk runs
them, the status machine, preconditions, lists, field types and the wire."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Reply, call, start_server
from golang_types import PAIR_CREATED_FIELDS, RCG_ACCEPTED_FIELDS, assert_go_decodes_group, assert_go_decodes_pair
from shim.legacy_sim import LegacySimSettings, LegacySimulator
from shim.legacy_sim import api as legacy_api
from shim.legacy_sim.errors import EvsError
from shim.legacy_sim.state import ACTIONS, Extension, GroupRequest, GroupUpdate, LegacyState
from shim.runtime.legacy_stub import DEMO_GROUP, DEMO_PROJECT, UNMIGRATED_GROUP, legacy_stub
from terraform_flows import (
    DecodeError,
    DrsV2Client,
    GoError,
    MissingInput,
    TerraformFlows,
    Timings,
    UnexpectedStateError,
    WaitTimeoutError,
    go_json,
    wait_for_state,
)

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
OTHER_PROJECT = "1f2e3d4c5b6a79880123456789abcdef"
TOKEN = "legacy-token"
AZ, DR_AZ = "eu-de-01", "eu-de-02"
UNKNOWN = "6a1f0d39-5b8f-4a86-9f52-2b0a9d5f0c11"
DISK_A, DISK_B = "18aa67ea-c7cb-4826-800d-50e67f0de75b", "375d23be-3658-498f-8b50-d3b950a890ec"
DISK_C, DISK_D = "0fc12f4e-381d-4f4a-acb0-9890c1683afe", "0aee8399-4aeb-4d84-8d77-9d8a9d3dbe1a"
LEGACY_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")
REQUEST_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TRANSITION_S, COPY_S = 2.0, 10.0
START_T = 1000.0
WALL_AT_START = datetime(2017, 9, 28, 5, 8, 32, 839953, tzinfo=UTC)
FAST = LegacySimSettings(transition_seconds=0.03, copy_seconds=0.06, tokens={TOKEN})
STOP = {"os-stop-replication-consistency-group": None}
SYNC = {"os-sync-replication-consistency-group": None}
FAILOVER = {"os-failover-replication-consistency-group": None}
REVERSE = {"os-reverse-replication-consistency-group": None}
REPROTECT = {"os-reprotect-replication-consistency-group": None}


class FakeClock:
    def __init__(self) -> None:
        self.t = START_T

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Legacy:
    """A running stand-in and raw calls to it (token included unless told otherwise)."""

    sim: LegacySimulator
    url: str

    def path(self, *parts: str, project: str = PROJECT) -> str:
        return "/".join([self.url, "v2", project, *parts])

    async def call(self, method: str, *parts: str, body: Any = None, token: str | None = TOKEN,
                   project: str = PROJECT, raw: bytes | None = None, query: str = "") -> Reply:
        headers = {"X-Auth-Token": token} if token is not None else {}
        if body is not None:
            raw = go_json(body)
        if raw is not None:
            headers["Content-Type"] = "application/json"
        return await call(method, self.path(*parts, project=project) + query, body=raw, headers=headers)

    async def group(self, group_id: str) -> dict[str, Any]:
        reply = await self.call("GET", "os-vendor-replication-consistency-groups", group_id)
        assert reply.status == 200, reply
        return reply.json()["replication_consistency_group"]

    async def pair(self, pair_id: str) -> dict[str, Any]:
        reply = await self.call("GET", "os-vendor-replications", pair_id)
        assert reply.status == 200, reply
        return reply.json()["replication"]

    async def act(self, group_id: str, body: Any) -> Reply:
        return await self.call("POST", "os-vendor-replication-consistency-groups", group_id, "action", body=body)


@asynccontextmanager
async def serving(sim: LegacySimulator) -> AsyncIterator[Legacy]:
    runner, url = await start_server(sim.app())
    try:
        yield Legacy(sim, url)
    finally:
        await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def legacy(clock: FakeClock) -> AsyncIterator[Legacy]:
    """A stand-in on a clock the test moves."""
    settings_ = LegacySimSettings(transition_seconds=TRANSITION_S, copy_seconds=COPY_S, tokens={TOKEN})
    sim = LegacySimulator(settings_, now=clock, wall_epoch=WALL_AT_START.timestamp() - START_T)
    async with serving(sim) as running:
        yield running


@pytest.fixture
async def live() -> AsyncIterator[Legacy]:
    """A stand-in on the real clock with short transitions, for the polling flows."""
    async with serving(LegacySimulator(FAST)) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def terraform(session: aiohttp.ClientSession, legacy_: Legacy, project: str = PROJECT) -> TerraformFlows:
    return TerraformFlows(DrsV2Client(session, legacy_.url, project, TOKEN), Timings(timeout=10))


def free_pair(legacy_: Legacy, volumes: tuple[str, str] | None = None, **options: Any) -> str:
    return legacy_.sim.add_pair(PROJECT, volume_ids=volumes, **options).id


async def wait_for_replication(flows: TerraformFlows, group_id: str, target: str) -> dict[str, Any]:
    async def refresh() -> tuple[Any, str]:
        group = await flows.client.get_group(group_id)
        return group, group["replication_status"]

    return await wait_for_state(refresh, pending=["copying"], target=[target], timings=flows.timings)


# -- the Terraform provider's flows, as golangsdk sends them -------------------------------------


async def test_terraform_creates_a_pair_and_waits_until_it_is_available(
    live: Legacy, session: aiohttp.ClientSession
) -> None:
    flows = terraform(session, live)
    pair = await flows.create_replication(volume_ids=[DISK_A, DISK_B], priority_station=AZ, name="web-data")
    assert pair is not None
    assert (pair["status"], pair["replication_status"], pair["progress"]) == ("available", "inactive", None)
    assert pair["replication_consistency_group_id"] is None and pair["priority_station"] == AZ
    assert pair["volume_ids"] == f"{DISK_A},{DISK_B}" and pair["name"] == "web-data"
    create, *polls = live.sim.requests
    assert (create.method, create.body) == ("POST", go_json({"replication": {
        "name": "web-data", "priority_station": AZ, "replication_model": "hypermetro",
        "volume_ids": [DISK_A, DISK_B]}}))  # fmt: skip
    assert create.headers["User-Agent"] == "golangsdk/2.0.0" and create.headers["X-Auth-Token"] == TOKEN
    assert polls and all(poll.method == "GET" for poll in polls)


async def test_terraform_creates_a_group_waits_syncs_and_replication_becomes_active(
    live: Legacy, session: aiohttp.ClientSession
) -> None:
    flows = terraform(session, live)
    pair_ids = [free_pair(live), free_pair(live)]
    group = await flows.create_group(replication_ids=pair_ids, priority_station=AZ, name="rcg", description="d")
    assert group is not None and group["status"] == "available"
    assert group["replication_ids"] == pair_ids and group["replication_status"] in ("copying", "active")
    assert [json.loads(r.body) for r in live.sim.requests if r.method == "POST"][-1] == SYNC
    synced = await wait_for_replication(flows, group["id"], "active")
    assert synced["replication_status"] == "active"
    for pair_id in pair_ids:
        pair = await flows.client.get_pair(pair_id)
        assert (pair["replication_consistency_group_id"], pair["progress"]) == (group["id"], "100")


async def test_terraform_update_stops_changes_pairs_waits_and_syncs(
    live: Legacy, session: aiohttp.ClientSession
) -> None:
    group = live.sim.add_group(PROJECT, name="before", pair_count=2, replication_status="active")
    kept, removed = group.replication_ids
    added = free_pair(live)
    flows = terraform(session, live)
    updated = await flows.update_group(group.id, name="after", description="new", replication_ids=[kept, added])
    assert updated is not None
    assert (updated["name"], updated["description"], updated["status"]) == ("after", "new", "available")
    assert updated["replication_ids"] == [kept, added]
    assert (await live.pair(removed))["replication_consistency_group_id"] is None
    assert (await live.pair(added))["replication_consistency_group_id"] == group.id
    writes = [(r.method, json.loads(r.body)) for r in live.sim.requests if r.method != "GET"]
    assert writes == [
        ("POST", STOP),
        ("PUT", {"replication_consistency_group": {"add_replication_ids": [added], "description": "new",
                                                   "name": "after", "remove_replication_ids": [removed]}}),
        ("POST", SYNC),
    ]  # fmt: skip
    assert (await wait_for_replication(flows, group.id, "active"))["replication_ids"] == [kept, added]


async def test_terraform_destroys_a_group_then_its_pairs(live: Legacy, session: aiohttp.ClientSession) -> None:
    group = live.sim.add_group(PROJECT, pair_count=2, replication_status="active")
    pair_ids = list(group.replication_ids)
    flows = terraform(session, live)
    await flows.delete_group(group.id)
    assert await flows.read_group(group.id) is None
    writes = [(r.method, r.body and json.loads(r.body)) for r in live.sim.requests if r.method != "GET"]
    assert writes == [
        ("POST", STOP),
        ("PUT", {"replication_consistency_group": {"remove_replication_ids": pair_ids}}),
        ("DELETE", b""),
    ]
    for pair_id in pair_ids:
        assert (await flows.client.get_pair(pair_id))["replication_consistency_group_id"] is None
        await flows.delete_replication(pair_id)
        assert await flows.read_replication(pair_id) is None
    assert await flows.client.list_pairs() == [] and await flows.client.list_groups() == []


async def test_terraform_flows_on_the_demo_stub_unmigrated_group(session: aiohttp.ClientSession) -> None:
    stub = legacy_stub(LegacySimSettings(transition_seconds=0.03, copy_seconds=0.06))
    async with serving(stub) as running:
        flows = terraform(session, running, DEMO_PROJECT)
        assert await flows.read_group(DEMO_GROUP["id"]) == DEMO_GROUP
        await flows.delete_group(UNMIGRATED_GROUP["id"])
        await flows.delete_replication(UNMIGRATED_GROUP["replication_ids"][0])
        assert [group["id"] for group in await flows.client.list_groups()] == [DEMO_GROUP["id"]]
        assert [pair["id"] for pair in await flows.client.list_pairs()] == DEMO_GROUP["replication_ids"]


async def test_a_failed_create_is_an_unexpected_state_for_the_provider(
    live: Legacy, session: aiohttp.ClientSession
) -> None:
    live.sim.fail_next_create(PROJECT, "group", "37100017")
    pair_id = free_pair(live)
    flows = terraform(session, live)
    with pytest.raises(UnexpectedStateError) as failed:
        await flows.create_group(replication_ids=[pair_id], priority_station=AZ)
    assert failed.value.state == "error"
    [group] = await flows.client.list_groups()
    assert (group["failure_detail"], group["replication_ids"]) == ("37100017", [])
    assert (await flows.client.get_pair(pair_id))["replication_consistency_group_id"] is None
    assert not [r for r in live.sim.requests if r.path.endswith("/action")]  # no Sync after a failure


async def test_a_status_that_never_changes_times_the_wait_out(live: Legacy, session: aiohttp.ClientSession) -> None:
    group = live.sim.add_group(PROJECT, status="creating")
    flows = TerraformFlows(DrsV2Client(session, live.url, PROJECT, TOKEN), Timings(timeout=0.2))
    with pytest.raises(WaitTimeoutError) as timed_out:
        await flows.wait(flows.group_refresh(group.id), ["creating"], ["available"])
    assert timed_out.value.last_state == "creating"


async def test_the_replay_client_enforces_golangsdk_ok_codes_and_decoding(session: aiohttp.ClientSession) -> None:
    """Against an endpoint that answers with the wrong codes and shapes, every call fails as in Go."""

    async def wrong(request: web.Request) -> web.Response:
        if request.method == "GET" and request.path.endswith("/os-vendor-replications"):
            return web.Response(status=200, text='{"replications": []}', content_type="text/plain")
        if request.method == "GET":
            return web.json_response({"replication_consistency_group": {}}, status=202)
        if request.path.endswith("/action"):
            return web.Response(status=202)
        if request.method == "DELETE":
            return web.Response(status=201)
        if request.method == "PUT":
            return web.Response(status=202)  # no body: Go's EOF
        return web.json_response({}, status=202 if "groups" in request.path else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", wrong)
    runner, url = await start_server(app)
    try:
        client = DrsV2Client(session, url, PROJECT, TOKEN)
        with pytest.raises(GoError, match=r"\[202\].*but got 200"):
            await client.create_pair(volume_ids=[DISK_A, DISK_B], priority_station=AZ)
        with pytest.raises(DecodeError, match="no 'replication_consistency_group'"):
            await client.create_group(replication_ids=[UNKNOWN], priority_station=AZ)
        with pytest.raises(DecodeError, match="EOF"):
            await client.update_group(UNKNOWN, name="x")
        with pytest.raises(GoError, match="but got 202"):
            await client.sync(UNKNOWN)
        with pytest.raises(GoError, match="but got 201"):
            await client.delete_group(UNKNOWN)
        with pytest.raises(GoError, match="but got 202"):
            await client.get_group(UNKNOWN)
        with pytest.raises(DecodeError, match="Content-Type"):
            await client.list_pairs()
        with pytest.raises(MissingInput, match="ReplicationIDs"):
            await client.create_group(replication_ids=None, priority_station=AZ)
    finally:
        await runner.cleanup()


# -- the status machine (clock moved by the test) ------------------------------------------------


async def test_pair_create_then_delete_follow_the_clock(legacy: Legacy, clock: FakeClock) -> None:
    created = await legacy.call("POST", "os-vendor-replications", body={"replication": {
        "volume_ids": [DISK_A, DISK_B], "priority_station": AZ, "replication_model": "hypermetro"}})  # fmt: skip
    assert created.status == 202
    pair = created.json()["replication"]
    assert (pair["status"], pair["updated_at"], pair["volume_ids"]) == ("creating", None, f"{DISK_A}, {DISK_B}")
    assert pair["created_at"] == "2017-09-28T05:08:32.839953"
    clock.advance(TRANSITION_S - 0.01)
    assert (await legacy.pair(pair["id"]))["status"] == "creating"
    clock.advance(0.01)
    shown = await legacy.pair(pair["id"])
    assert (shown["status"], shown["updated_at"]) == ("available", "2017-09-28T05:08:34.839953")
    assert (await legacy.call("DELETE", "os-vendor-replications", pair["id"])).status == 202
    assert (await legacy.pair(pair["id"]))["status"] == "deleting"
    clock.advance(TRANSITION_S)
    gone = await legacy.call("GET", "os-vendor-replications", pair["id"])
    assert gone.status == 404 and gone.fault() == ("itemNotFound", gone.json()["itemNotFound"])
    assert gone.json()["itemNotFound"]["code"] == "EVS.5404"


async def test_sync_copies_with_rising_progress_then_replication_is_active(legacy: Legacy, clock: FakeClock) -> None:
    group = legacy.sim.add_group(PROJECT, pair_count=2, replication_status="inactive")
    assert (await legacy.pair(group.replication_ids[0]))["progress"] is None
    assert (await legacy.act(group.id, SYNC)).status == 200
    seen = []
    for _ in range(3):
        shown, pair = await legacy.group(group.id), await legacy.pair(group.replication_ids[0])
        seen.append((shown["status"], shown["replication_status"], pair["replication_status"], pair["progress"]))
        clock.advance(COPY_S / 2)
    assert seen == [
        ("available", "copying", "copying", "0"),
        ("available", "copying", "copying", "50"),
        ("available", "active", "active", "100"),
    ]


async def test_stop_pauses_consistent_replicas_and_leaves_a_cut_copy_inactive(
    legacy: Legacy, clock: FakeClock
) -> None:
    synced = legacy.sim.add_group(PROJECT, replication_status="active")
    assert (await legacy.act(synced.id, STOP)).status == 200
    assert (await legacy.group(synced.id))["replication_status"] == "active-stopped"
    assert (await legacy.act(synced.id, STOP)).status == 200  # no precondition: a second stop is fine
    assert (await legacy.act(synced.id, SYNC)).status == 200
    clock.advance(COPY_S / 4)
    assert (await legacy.act(synced.id, STOP)).status == 200
    clock.advance(COPY_S)  # the cancelled copy never completes
    assert (await legacy.group(synced.id))["replication_status"] == "inactive"
    assert (await legacy.pair(synced.replication_ids[0]))["progress"] == "25"


async def test_failover_then_reprotect(legacy: Legacy, clock: FakeClock) -> None:
    group = legacy.sim.add_group(PROJECT, pair_count=2, replication_status="active", priority_station=AZ)
    assert (await legacy.act(group.id, FAILOVER)).status == 200
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["priority_station"]) == ("failovering", AZ)
    clock.advance(TRANSITION_S)
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["replication_status"], shown["priority_station"]) == (
        "failovered", "active-stopped", DR_AZ)
    assert {(await legacy.pair(pair_id))["priority_station"] for pair_id in group.replication_ids} == {DR_AZ}
    assert (await legacy.act(group.id, REPROTECT)).status == 200
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["replication_status"], shown["priority_station"]) == (
        "available", "copying", DR_AZ)
    clock.advance(COPY_S)
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["replication_status"], shown["priority_station"]) == ("available", "active", DR_AZ)


async def test_reverse_switches_the_primary_az(legacy: Legacy, clock: FakeClock) -> None:
    group = legacy.sim.add_group(PROJECT, replication_status="active", priority_station=AZ)
    assert (await legacy.act(group.id, REVERSE)).status == 200
    assert (await legacy.group(group.id))["status"] == "reversing"
    clock.advance(TRANSITION_S)
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["replication_status"], shown["priority_station"]) == ("available", "active", DR_AZ)
    assert (await legacy.pair(group.replication_ids[0]))["priority_station"] == DR_AZ
    assert (await legacy.act(group.id, REVERSE)).status == 200
    clock.advance(TRANSITION_S)
    assert (await legacy.group(group.id))["priority_station"] == AZ


@pytest.mark.parametrize("shape", ["documented", "golangsdk-flat"])
async def test_extend_grows_the_disks_before_it_answers(legacy: Legacy, shape: str) -> None:
    group = legacy.sim.add_group(PROJECT, pair_count=2, volume_size=10)
    first, second = group.replication_ids
    body: dict[str, Any] = (
        {"replications": [{"id": first, "new_size": 20}, {"id": second, "new_size": 30}]}
        if shape == "documented" else {"id": first, "new_size": 20}
    )  # fmt: skip
    reply = await legacy.act(group.id, {"os-extend-replication-volumes": body})
    assert (reply.status, reply.body) == (200, b"")
    pairs = [await legacy.pair(pair_id) for pair_id in group.replication_ids]
    sizes = [json.loads(pair["record_metadata"])["volume_size"] for pair in pairs]
    assert sizes == ([20, 30] if shape == "documented" else [20, 10])
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["replication_status"]) == ("available", "active")


@pytest.mark.parametrize(
    ("seed", "action", "status", "replication_status"),
    [
        ({"replication_status": "active"}, FAILOVER, "error_failovering", "error"),
        ({"replication_status": "active"}, REVERSE, "error_reversing", "error"),
        ({"replication_status": "inactive"}, SYNC, "available", "error"),
        ({"status": "failovered", "replication_status": "active-stopped"}, REPROTECT, "failovered", "error"),
    ],
)
async def test_a_failed_action_leaves_its_error_status_and_failure_detail(
    legacy: Legacy, clock: FakeClock, seed: dict[str, str], action: dict[str, None], status: str,
    replication_status: str,
) -> None:  # fmt: skip
    group = legacy.sim.add_group(PROJECT, **seed)
    legacy.sim.fail_next(PROJECT, group.id, "37000216")
    assert (await legacy.act(group.id, action)).status == 200
    clock.advance(max(TRANSITION_S, COPY_S))
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["replication_status"], shown["failure_detail"]) == (
        status, replication_status, "37000216")
    assert_go_decodes_group(shown)


async def test_failed_update_and_deletes_show_their_error_statuses(legacy: Legacy, clock: FakeClock) -> None:
    group = legacy.sim.add_group(PROJECT, replication_status="active-stopped")
    legacy.sim.fail_next(PROJECT, group.id)
    body = {"replication_consistency_group": {"remove_replication_ids": group.replication_ids}}
    assert (await legacy.call("PUT", "os-vendor-replication-consistency-groups", group.id, body=body)).status == 202
    clock.advance(TRANSITION_S)
    shown = await legacy.group(group.id)
    assert (shown["status"], shown["failure_detail"], shown["replication_ids"]) == (
        "error", "37000212", group.replication_ids)
    empty = legacy.sim.add_group(PROJECT, pair_count=0)
    legacy.sim.fail_next(PROJECT, empty.id)
    assert (await legacy.call("DELETE", "os-vendor-replication-consistency-groups", empty.id)).status == 202
    pair_id = free_pair(legacy)
    legacy.sim.fail_next(PROJECT, pair_id, "37100043")
    assert (await legacy.call("DELETE", "os-vendor-replications", pair_id)).status == 202
    clock.advance(TRANSITION_S)
    assert (await legacy.group(empty.id))["status"] == "error_deleting"
    pair = await legacy.pair(pair_id)
    assert (pair["status"], pair["failure_detail"]) == ("error_deleting", "37100043")


@pytest.mark.parametrize(
    ("volumes", "failure_detail"),
    [((DISK_A, DISK_C), "37100053"), ((DISK_C, DISK_B), "37100054"), ((DISK_C, DISK_D), None)],
)
async def test_a_disk_already_in_a_pair_fails_the_create_asynchronously(
    legacy: Legacy, clock: FakeClock, volumes: tuple[str, str], failure_detail: str | None
) -> None:
    free_pair(legacy, (DISK_A, DISK_B))
    body = {"replication": {"volume_ids": list(volumes), "priority_station": AZ, "replication_model": "hypermetro"}}
    created = await legacy.call("POST", "os-vendor-replications", body=body)
    assert created.status == 202
    clock.advance(TRANSITION_S)
    pair = await legacy.pair(created.json()["replication"]["id"])
    assert (pair["status"], pair["failure_detail"]) == ("error" if failure_detail else "available", failure_detail)


# -- preconditions: 400 (nothing changes) and 404 ------------------------------------------------

GROUPS, PAIRS = "os-vendor-replication-consistency-groups", "os-vendor-replications"


def _pair_body(**fields: Any) -> dict[str, Any]:
    return {"replication": {"volume_ids": [DISK_C, DISK_D], "priority_station": AZ,
                            "replication_model": "hypermetro", **fields}}  # fmt: skip


def _group_body(**fields: Any) -> dict[str, Any]:
    return {"replication_consistency_group": {"priority_station": AZ, "replication_model": "hypermetro", **fields}}


def _update(**fields: Any) -> dict[str, Any]:
    return {"replication_consistency_group": fields}


@dataclass
class World:
    """Seeded for the precondition table: every kind of group and pair a precondition looks at."""

    active: str  # available, replicating, with pairs active_pairs
    stopped: str  # available, replication paused, with one pair
    failovered: str
    empty: str  # available, no pairs
    empty_failovered: str
    broken: str  # replicating, a pair's link is broken (fault_level 5)
    in_error: str  # replication_status error
    free: str  # an available pair in no group
    creating: str  # a pair being created
    other_az: str  # an available pair whose production disk is in another AZ
    active_pairs: list[str]
    stopped_pair: str


def seed_world(sim: LegacySimulator) -> World:
    active = sim.add_group(PROJECT, pair_count=2, replication_status="active")
    stopped = sim.add_group(PROJECT, replication_status="active-stopped")
    broken = sim.add_group(PROJECT, replication_status="active")
    sim.pair(PROJECT, broken.replication_ids[0]).fault_level = "5"
    return World(
        active=active.id, stopped=stopped.id,
        failovered=sim.add_group(PROJECT, status="failovered", replication_status="active-stopped").id,
        empty=sim.add_group(PROJECT, pair_count=0).id,
        empty_failovered=sim.add_group(PROJECT, pair_count=0, status="failovered").id,
        broken=broken.id, in_error=sim.add_group(PROJECT, replication_status="error").id,
        free=sim.add_pair(PROJECT).id, creating=sim.add_pair(PROJECT, status="creating").id,
        other_az=sim.add_pair(PROJECT, priority_station="eu-west-0a").id,
        active_pairs=list(active.replication_ids), stopped_pair=stopped.replication_ids[0],
    )  # fmt: skip


BAD_REQUESTS = [
    # (what, method, path parts with {world fields}, body, expected status)
    ("create group: no pairs", "POST", [GROUPS], _group_body(replication_ids=[]), 400),
    ("create group: unknown pair", "POST", [GROUPS], _group_body(replication_ids=[UNKNOWN]), 404),
    ("create group: pair not available", "POST", [GROUPS], _group_body(replication_ids=["{creating}"]), 400),
    ("create group: pair in a group", "POST", [GROUPS], _group_body(replication_ids=["{stopped_pair}"]), 400),
    ("create group: pair in another AZ", "POST", [GROUPS], _group_body(replication_ids=["{other_az}"]), 400),
    ("create group: no priority_station", "POST", [GROUPS],
     {"replication_consistency_group": {"replication_ids": ["{free}"], "replication_model": "hypermetro"}}, 400),
    ("create group: other model", "POST", [GROUPS],
     _group_body(replication_ids=["{free}"], replication_model="x"), 400),
    ("create group: no wrapper", "POST", [GROUPS], {"replication_ids": ["{free}"]}, 400),
    ("update: replicating", "PUT", [GROUPS, "{active}"], _update(name="n"), 400),
    ("update: failovered", "PUT", [GROUPS, "{failovered}"], _update(name="n"), 400),
    ("update: add a pair of another group", "PUT", [GROUPS, "{stopped}"],
     _update(add_replication_ids=["{active_pairs[0]}"]), 400),
    ("update: add an unavailable pair", "PUT", [GROUPS, "{stopped}"], _update(add_replication_ids=["{creating}"]), 400),
    ("update: remove a stranger", "PUT", [GROUPS, "{stopped}"], _update(remove_replication_ids=["{free}"]), 400),
    ("update: add and remove one pair", "PUT", [GROUPS, "{stopped}"],
     _update(add_replication_ids=["{stopped_pair}"], remove_replication_ids=["{stopped_pair}"]), 400),
    ("update: unknown pair", "PUT", [GROUPS, "{stopped}"], _update(add_replication_ids=[UNKNOWN]), 404),
    ("update: unknown group", "PUT", [GROUPS, UNKNOWN], _update(name="n"), 404),
    ("delete group: has pairs", "DELETE", [GROUPS, "{stopped}"], None, 400),
    ("delete group: failovered", "DELETE", [GROUPS, "{empty_failovered}"], None, 400),
    ("delete group: unknown", "DELETE", [GROUPS, UNKNOWN], None, 404),
    ("delete pair: in a group", "DELETE", [PAIRS, "{stopped_pair}"], None, 400),
    ("delete pair: creating", "DELETE", [PAIRS, "{creating}"], None, 400),
    ("delete pair: unknown", "DELETE", [PAIRS, UNKNOWN], None, 404),
    ("reprotect: not failovered", "POST", [GROUPS, "{active}", "action"], REPROTECT, 400),
    ("reverse: replication paused", "POST", [GROUPS, "{stopped}", "action"], REVERSE, 400),
    ("reverse: failovered", "POST", [GROUPS, "{failovered}", "action"], REVERSE, 400),
    ("sync: failovered", "POST", [GROUPS, "{failovered}", "action"], SYNC, 400),
    ("failover: link broken", "POST", [GROUPS, "{broken}", "action"], FAILOVER, 400),
    ("failover: failovered", "POST", [GROUPS, "{failovered}", "action"], FAILOVER, 400),
    ("sync: no pairs", "POST", [GROUPS, "{empty}", "action"], SYNC, 400),
    ("extend: replication error", "POST", [GROUPS, "{in_error}", "action"],
     {"os-extend-replication-volumes": {"id": "{free}", "new_size": 20}}, 400),
    ("extend: pair not in the group", "POST", [GROUPS, "{active}", "action"],
     {"os-extend-replication-volumes": {"id": "{stopped_pair}", "new_size": 20}}, 400),
    ("extend: not larger", "POST", [GROUPS, "{active}", "action"],
     {"os-extend-replication-volumes": {"replications": [{"id": "{active_pairs[0]}", "new_size": 20},
                                                         {"id": "{active_pairs[1]}", "new_size": 10}]}}, 400),
    ("extend: no size", "POST", [GROUPS, "{active}", "action"],
     {"os-extend-replication-volumes": {"id": "{active_pairs[0]}"}}, 400),
    ("unknown action", "POST", [GROUPS, "{active}", "action"], {"os-resize": None}, 400),
    ("two actions", "POST", [GROUPS, "{active}", "action"], {**STOP, **SYNC}, 400),
    ("action on an unknown group", "POST", [GROUPS, UNKNOWN, "action"], STOP, 404),
    ("create pair: one disk", "POST", [PAIRS], _pair_body(volume_ids=[DISK_C]), 400),
    ("create pair: one disk twice", "POST", [PAIRS], _pair_body(volume_ids=[DISK_C, DISK_C.upper()]), 400),
    ("create pair: unknown AZ", "POST", [PAIRS], _pair_body(priority_station="mars-1"), 400),
    ("create pair: other model", "POST", [PAIRS], _pair_body(replication_model="async"), 400),
    ("create pair: long name", "POST", [PAIRS], _pair_body(name="é" * 128), 400),
    ("create pair: volume_ids a string", "POST", [PAIRS], _pair_body(volume_ids=f"{DISK_C},{DISK_D}"), 400),
    ("get unknown group", "GET", [GROUPS, UNKNOWN], None, 404),
    ("get unknown pair", "GET", [PAIRS, UNKNOWN], None, 404),
]


def _fill(value: Any, world: World) -> Any:
    if isinstance(value, str):
        return value.format_map(vars(world)) if "{" in value else value
    if isinstance(value, list):
        return [_fill(item, world) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, world) for key, item in value.items()}
    return value


def _snapshot(sim: LegacySimulator) -> Any:
    return [
        [legacy_api.render_group(group) for group in sim.state.list_groups(PROJECT)],
        [legacy_api.render_pair(pair) for pair in sim.state.list_pairs(PROJECT)],
    ]


@pytest.mark.parametrize(("what", "method", "parts", "body", "status"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_refused_requests_answer_the_legacy_error_and_change_nothing(
    legacy: Legacy, what: str, method: str, parts: list[str], body: Any, status: int
) -> None:
    world = seed_world(legacy.sim)
    before = _snapshot(legacy.sim)
    reply = await legacy.call(method, *_fill(parts, world), body=_fill(body, world))
    assert reply.status == status, reply.body
    name, fault = reply.fault()
    assert (name, fault["code"]) == (("badRequest", "EVS.5400") if status == 400 else ("itemNotFound", "EVS.5404"))
    assert _snapshot(legacy.sim) == before


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"replication": []}'])
async def test_malformed_bodies_are_400(legacy: Legacy, raw: bytes) -> None:
    group = legacy.sim.add_group(PROJECT)
    for parts in ([PAIRS], [GROUPS], [GROUPS, group.id], [GROUPS, group.id, "action"]):
        reply = await legacy.call("PUT" if len(parts) == 2 else "POST", *parts, raw=raw)
        assert reply.status == 400 and reply.fault()[0] == "badRequest", (parts, reply.body)


async def test_actions_are_refused_while_a_change_runs(legacy: Legacy, clock: FakeClock) -> None:
    group = legacy.sim.add_group(PROJECT, replication_status="active-stopped")
    assert (await legacy.call("PUT", GROUPS, group.id, body=_update(name="n"))).status == 202
    for action in ACTIONS:
        body = {action: {"id": group.replication_ids[0], "new_size": 99} if "extend" in action else None}
        reply = await legacy.act(group.id, body)
        assert reply.status == 400 and "updating" in reply.json()["badRequest"]["message"], action
    clock.advance(TRANSITION_S)
    assert (await legacy.act(group.id, SYNC)).status == 200


async def test_a_pair_joining_a_group_cannot_join_another(legacy: Legacy) -> None:
    pair_id = free_pair(legacy)
    first = await legacy.call("POST", GROUPS, body=_group_body(replication_ids=[pair_id]))
    assert first.status == 202
    second = await legacy.call("POST", GROUPS, body=_group_body(replication_ids=[pair_id]))
    assert second.status == 400 and first.json()["replication_consistency_group"]["id"] in second.body.decode()
    assert (await legacy.call("DELETE", PAIRS, pair_id)).status == 400


# -- lists: filters, sorting, paging, validation -------------------------------------------------


async def _list(legacy_: Legacy, collection: str, query: str = "") -> list[dict[str, Any]]:
    reply = await legacy_.call("GET", collection, query=query)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.json()["replication_consistency_groups" if collection == GROUPS else "replications"]


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def test_group_list_filters(legacy: Legacy, clock: FakeClock) -> None:
    old = legacy.sim.add_group(PROJECT, name="alpha", replication_status="active")
    clock.advance(60)
    failed_over = legacy.sim.add_group(PROJECT, name="beta", status="failovered", priority_station=DR_AZ)
    legacy.sim.add_group(OTHER_PROJECT, name="alpha")
    disk = legacy.sim.pair(PROJECT, failed_over.replication_ids[0]).volume_ids[1]
    assert _ids(await _list(legacy, GROUPS)) == [failed_over.id, old.id]
    assert _ids(await _list(legacy, GROUPS, "?name=alpha")) == [old.id]
    assert _ids(await _list(legacy, GROUPS, "?status=failovered")) == [failed_over.id]
    assert _ids(await _list(legacy, GROUPS, f"?priority_station={AZ}")) == [old.id]
    assert _ids(await _list(legacy, GROUPS, f"?volume_id={disk}")) == [failed_over.id]
    assert _ids(await _list(legacy, GROUPS, "?changes-since=2017-09-28T05:09:00")) == [failed_over.id]
    assert _ids(await _list(legacy, GROUPS, "?changes-since=2017-09-28T05:09:00Z&name=alpha")) == []
    assert _ids(await _list(legacy, GROUPS, "?name=&unknown=1")) == [failed_over.id, old.id]  # ignored
    assert await _list(legacy, GROUPS, "?name=nobody") == []


async def test_pair_list_filters(legacy: Legacy) -> None:
    group = legacy.sim.add_group(PROJECT, pair_count=2)
    loose = legacy.sim.add_pair(PROJECT, volume_ids=(DISK_A, DISK_B), name="loose")
    assert set(_ids(await _list(legacy, PAIRS))) == {*group.replication_ids, loose.id}
    in_group = await _list(legacy, PAIRS, f"?replication_consistency_group_id={group.id}")
    assert sorted(_ids(in_group)) == sorted(group.replication_ids)
    assert _ids(await _list(legacy, PAIRS, f"?volume_ids={DISK_A}%2C{DISK_B}")) == [loose.id]
    assert _ids(await _list(legacy, PAIRS, f"?volume_ids={DISK_B},%20{DISK_A}")) == [loose.id]  # any order
    assert _ids(await _list(legacy, PAIRS, f"?volume_ids={DISK_A}")) == []  # both disks, not one
    assert _ids(await _list(legacy, PAIRS, f"?volume_id={DISK_B}")) == [loose.id]
    assert _ids(await _list(legacy, PAIRS, "?name=loose&status=available")) == [loose.id]
    assert _ids(await _list(legacy, PAIRS, "?status=creating")) == []


async def test_sorting_and_paging(legacy: Legacy, clock: FakeClock) -> None:
    ids = []
    for name in ("c", "a", "b", "d"):
        ids.append(legacy.sim.add_group(PROJECT, name=name, pair_count=0).id)
        clock.advance(1)
    newest_first = ids[::-1]
    assert _ids(await _list(legacy, GROUPS)) == newest_first
    assert _ids(await _list(legacy, GROUPS, "?sort_key=name&sort_dir=ASC")) == [ids[1], ids[2], ids[0], ids[3]]
    assert _ids(await _list(legacy, GROUPS, "?limit=2")) == newest_first[:2]
    assert _ids(await _list(legacy, GROUPS, f"?marker={newest_first[1]}&limit=1")) == [newest_first[2]]
    assert _ids(await _list(legacy, GROUPS, "?offset=1&limit=2")) == newest_first[1:3]
    assert _ids(await _list(legacy, GROUPS, f"?marker={newest_first[0]}&offset=1")) == newest_first[2:]
    # The marker need not pass the filters: paging continues after it.
    assert _ids(await _list(legacy, GROUPS, f"?marker={newest_first[0]}&name=a")) == [ids[1]]


@pytest.mark.parametrize(
    ("query", "code"),
    [("?limit=0", "EVS.1023"), ("?limit=1001", "EVS.1023"), ("?limit=x", "EVS.5400"),
     ("?offset=-1", "EVS.5400"), ("?offset=1.5", "EVS.5400"), ("?marker=not-a-uuid", "EVS.1024"),
     (f"?marker={UNKNOWN}", "EVS.1024"), ("?sort_key=volume_size", "EVS.1039"), ("?sort_dir=up", "EVS.1040"),
     ("?changes-since=yesterday", "EVS.5400")],
)  # fmt: skip
async def test_list_validation_errors(legacy: Legacy, query: str, code: str) -> None:
    legacy.sim.add_group(PROJECT)
    for collection in (GROUPS, PAIRS):
        reply = await legacy.call("GET", collection, query=query)
        assert reply.status == 400 and reply.fault() == ("badRequest", {**reply.json()["badRequest"], "code": code})


async def test_golangsdk_list_options_reach_the_filters(live: Legacy, session: aiohttp.ClientSession) -> None:
    group = live.sim.add_group(PROJECT, name="g", pair_count=2)
    pair = live.sim.pair(PROJECT, group.replication_ids[1])
    client = DrsV2Client(session, live.url, PROJECT, TOKEN)
    assert _ids(await client.list_pairs(volume_ids=",".join(pair.volume_ids), limit=5)) == [pair.id]
    assert live.sim.requests[-1].path.endswith(f"?limit=5&volume_ids={pair.volume_ids[0]}%2C{pair.volume_ids[1]}")
    assert _ids(await client.list_groups(name="g", volume_id=pair.volume_ids[0], sort_dir="asc")) == [group.id]


# -- field types and the wire --------------------------------------------------------------------


async def test_answers_have_the_documented_fields_and_go_types(legacy: Legacy) -> None:
    pair_id = free_pair(legacy)
    created = await legacy.call("POST", PAIRS, body=_pair_body(name="p", description="d"))
    assert created.status == 202 and list(created.json()) == ["replication"]
    assert list(created.json()["replication"]) == list(PAIR_CREATED_FIELDS)
    group_reply = await legacy.call("POST", GROUPS, body=_group_body(replication_ids=[pair_id], name="g"))
    accepted = group_reply.json()["replication_consistency_group"]
    assert group_reply.status == 202 and list(group_reply.json()) == ["replication_consistency_group"]
    assert list(accepted) == list(RCG_ACCEPTED_FIELDS)
    assert accepted["status"] == "creating" and accepted["updated_at"] is None
    shown = await legacy.group(accepted["id"])
    assert_go_decodes_group(shown)
    assert shown["replication_ids"] == [pair_id] and isinstance(shown["replication_ids"], list)
    pair = await legacy.pair(pair_id)
    assert_go_decodes_pair(pair)
    assert json.loads(pair["record_metadata"]) == {"volume_size": 10, "volume_type": "SATA", "multiattach": False}
    for stamp in (shown["created_at"], pair["created_at"], created.json()["replication"]["created_at"]):
        assert LEGACY_TIME.fullmatch(stamp), stamp
    stopped = legacy.sim.add_group(PROJECT, replication_status="active-stopped")
    updated = await legacy.call("PUT", GROUPS, stopped.id, body=_update(description="x"))
    assert updated.status == 202 and list(updated.json()["replication_consistency_group"]) == list(RCG_ACCEPTED_FIELDS)
    accepted = updated.json()["replication_consistency_group"]
    assert (accepted["status"], accepted["description"]) == ("updating", "x") and accepted["updated_at"]
    for document in (await _list(legacy, GROUPS)):
        assert_go_decodes_group(document)
    for document in (await _list(legacy, PAIRS)):
        assert_go_decodes_pair(document)


async def test_fault_level_of_a_group_is_the_worst_of_its_pairs(legacy: Legacy) -> None:
    group = legacy.sim.add_group(PROJECT, pair_count=2)
    legacy.sim.pair(PROJECT, group.replication_ids[1]).fault_level = "2"
    assert (await legacy.group(group.id))["fault_level"] == "2"


async def test_success_codes_bodies_and_headers(legacy: Legacy) -> None:
    group = legacy.sim.add_group(PROJECT, replication_status="active-stopped", pair_count=0)
    pair_id = free_pair(legacy)
    answers = {
        "action": await legacy.act(group.id, STOP),
        "delete group": await legacy.call("DELETE", GROUPS, group.id),
        "delete pair": await legacy.call("DELETE", PAIRS, pair_id),
        "get": await legacy.call("GET", PAIRS, pair_id),
        "list": await legacy.call("GET", GROUPS),
        "refused": await legacy.call("GET", PAIRS, UNKNOWN),
    }
    assert {name: answer.status for name, answer in answers.items()} == {
        "action": 200, "delete group": 202, "delete pair": 202, "get": 200, "list": 200, "refused": 404}
    for name in ("action", "delete group", "delete pair"):
        assert answers[name].body == b"", name
    for name, answer in answers.items():
        assert REQUEST_ID.fullmatch(answer.headers["X-Request-Id"]), name
        assert answer.headers["X-Openstack-Request-Id"] == answer.headers["X-Request-Id"], name
        if answer.body:
            assert answer.headers["Content-Type"] == "application/json", name


@pytest.mark.parametrize("token", [None, "", "someone-else"])
async def test_a_token_is_required(legacy: Legacy, token: str | None) -> None:
    group = legacy.sim.add_group(PROJECT, replication_status="active")
    for method, parts, body in [("GET", [GROUPS], None), ("POST", [GROUPS, group.id, "action"], STOP),
                                ("GET", ["volumes"], None)]:  # fmt: skip
        reply = await legacy.call(method, *parts, body=body, token=token)
        assert reply.status == 401 and reply.fault() == ("unauthorized", {**reply.json()["unauthorized"],
                                                                          "code": "EVS.5401"})
    assert (await legacy.group(group.id))["replication_status"] == "active"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", f"/v2/{PROJECT}/volumes"), ("PUT", f"/v2/{PROJECT}/{PAIRS}/{UNKNOWN}"),
     ("POST", f"/v2/{PROJECT}/{PAIRS}/{UNKNOWN}/action"), ("GET", f"/v2/{PROJECT}/{GROUPS}/{UNKNOWN}/action"),
     ("GET", f"/v2/{PROJECT}/{GROUPS}/"), ("GET", "/"), ("PATCH", f"/v2/{PROJECT}/{GROUPS}")],
)  # fmt: skip
async def test_every_other_path_is_a_legacy_404(legacy: Legacy, method: str, path: str) -> None:
    reply = await call(method, legacy.url + path, headers={"X-Auth-Token": TOKEN})
    assert reply.status == 404 and reply.fault()[0] == "itemNotFound"
    assert reply.fault()[1]["code"] == "EVS.5404"


async def test_requests_are_recorded_as_sent(legacy: Legacy) -> None:
    group = legacy.sim.add_group(PROJECT)
    await legacy.call("GET", GROUPS, query="?name=a%2Cb&limit=1")
    await legacy.act(group.id, STOP)
    listed, acted = legacy.sim.requests
    assert (listed.method, listed.path, listed.body) == ("GET", f"/v2/{PROJECT}/{GROUPS}?name=a%2Cb&limit=1", b"")
    assert listed.headers["X-Auth-Token"] == TOKEN
    assert (acted.method, acted.path) == ("POST", f"/v2/{PROJECT}/{GROUPS}/{group.id}/action")
    assert acted.body == b'{"os-stop-replication-consistency-group":null}\n'
    assert acted.headers["Content-Type"] == "application/json"


async def test_ids_match_whatever_their_case_and_projects_are_apart(legacy: Legacy) -> None:
    group = legacy.sim.add_group(PROJECT)
    assert (await legacy.group(group.id.upper()))["id"] == group.id
    assert (await legacy.call("GET", GROUPS, group.id, project=OTHER_PROJECT)).status == 404
    assert _ids(await _list(legacy, GROUPS)) == [group.id]
    elsewhere = await legacy.call("GET", GROUPS, project=OTHER_PROJECT)
    assert elsewhere.json() == {"replication_consistency_groups": []}


def test_seeded_ids_are_stable_and_seeding_checks_its_input() -> None:
    first, second = LegacySimulator(), LegacySimulator()
    ids = [sim.add_group(PROJECT, pair_count=2).replication_ids for sim in (first, second)]
    assert ids[0] == ids[1] and len(set(ids[0])) == 2
    with pytest.raises(ValueError, match="status"):
        first.add_group(PROJECT, status="ready")
    with pytest.raises(ValueError, match="az_pairs"):
        first.add_pair(PROJECT, priority_station="mars-1")
    with pytest.raises(ValueError, match="exactly one pair"):
        LegacySimSettings(az_pairs=(("a", "b"), ("b", "c")))
    with pytest.raises(KeyError):
        first.fail_next(PROJECT, UNKNOWN)


# -- the state machine under any sequence of calls ------------------------------------------------

CALL = st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([0.5, 2.0, 10.0])),
    st.tuples(st.just("act"), st.sampled_from(ACTIONS)),
    st.tuples(st.just("update"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("create"), st.integers(0, 3)),
    st.tuples(st.sampled_from(["delete group", "delete pair"]), st.integers(0, 3)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(CALL, max_size=25))
def test_membership_stays_consistent_whatever_the_calls(calls: list[tuple[Any, ...]]) -> None:
    """Every pair is in one group at most, a member's group id is its group's, and every rendering
    decodes in Go, whatever is called in whatever order."""
    clock = FakeClock()
    state = LegacyState(LegacySimSettings(transition_seconds=TRANSITION_S, copy_seconds=COPY_S), clock,
                        lambda t: datetime(2017, 1, 1) + timedelta(seconds=t))  # fmt: skip
    group_id = state.add_group(PROJECT, pair_count=2).id
    pair_ids = [*state.groups[(PROJECT, group_id)].replication_ids, state.add_pair(PROJECT).id,
                state.add_pair(PROJECT).id]  # fmt: skip
    groups = [group_id]
    for name, *args in calls:
        try:
            if name == "wait":
                clock.advance(args[0])
            elif name == "act":
                extension = [Extension(pair_ids[0], 99)]
                state.act(PROJECT, groups[-1], args[0], extension)
            elif name == "update":
                update = GroupUpdate(add_ids=(pair_ids[args[0]],), remove_ids=(pair_ids[args[1]],))
                state.update_group(PROJECT, groups[-1], update)
            elif name == "create":
                request = GroupRequest((pair_ids[args[0]],), "eu-de-01")
                groups.append(state.create_group(PROJECT, request).id)
            elif name == "delete group":
                state.delete_group(PROJECT, groups[args[0] % len(groups)])
            else:
                state.delete_pair(PROJECT, pair_ids[args[0]])
        except EvsError as err:
            assert err.status in (400, 404)
        _check_membership(state)
    clock.advance(COPY_S + TRANSITION_S)
    _check_membership(state)
    assert all(group.change is None for group in state.list_groups(PROJECT))


def _check_membership(state: LegacyState) -> None:
    groups = state.list_groups(PROJECT)
    members = [pair_id for group in groups for pair_id in group.replication_ids]
    assert len(members) == len(set(members))
    for group in groups:
        assert_go_decodes_group(legacy_api.render_group(group))
        for pair in state.members(group):
            assert pair.group_id in (None, group.id)
            assert pair.group_id == group.id or group.status in ("creating", "error")
    for pair in state.list_pairs(PROJECT):
        assert_go_decodes_pair(legacy_api.render_pair(pair))
        if pair.group_id is not None:
            assert pair.id in state.groups[(PROJECT, pair.group_id)].replication_ids
