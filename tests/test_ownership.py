"""One source of truth per group: every call about a mapped group is SDRS's, every call about an
unmapped group the legacy endpoint's, during a phased migration.

The world: the SDRS simulator holds the migrated group (two pairs); the legacy stand-in (shim.legacy_sim)
holds the *stale copy* of that same group (same RCG id, its own pairs on the same disks) and a group
that has not moved. The mapping file spells the ids in upper case without dashes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import GO_HEADERS, GROUP, PROJECT, RCG, TOKEN, Reply, ShimFactory, call, start_server
from golang_types import assert_go_decodes_group, assert_go_decodes_pair
from shim.legacy_sim.server import LegacySimulator
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.faults import Fault

GROUPS = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
PAIRS = f"/v2/{PROJECT}/os-vendor-replications"
READ_HEADERS = {"Accept": "application/json", "User-Agent": "golangsdk/2.0.0", "X-Auth-Token": TOKEN}
LOST_RCG = "0b2c4d6e-8f10-4a12-9c14-e16f18a20b22"
LOST_GROUP = "1c3d5e7f-9a11-4b13-8d15-f17a19b21c23"


def shouting(uuid: str) -> str:
    """The spelling a hand-written mapping file might use: upper case, no dashes."""
    return uuid.replace("-", "").upper()


@dataclass
class World:
    shim: str
    sim: SdrsSimulator
    legacy: LegacySimulator
    sdrs_pair_ids: list[str]
    stale_pair_ids: list[str]
    unmigrated_rcg: str
    unmigrated_pair_ids: list[str]
    sdrs_url: str = ""
    legacy_url: str = ""
    mapping: list[dict[str, str]] | None = None

    def legacy_paths(self) -> list[str]:
        return [request.path for request in self.legacy.requests]

    def assert_legacy_untouched_by(self, *ids: str) -> None:
        """No request about these ids reached the legacy endpoint (any spelling)."""
        keys = {identifier.replace("-", "").lower() for identifier in ids}
        for path in self.legacy_paths():
            flat = path.replace("-", "").lower()
            assert not any(key in flat for key in keys), path


@pytest.fixture
async def world(make_shim: ShimFactory) -> AsyncIterator[World]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2))
    sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2, name="pg-migrated")
    sdrs_pairs = [sim.state.pairs[(PROJECT, pair_id)] for pair_id in sim.pair_ids(PROJECT, GROUP)]
    legacy = LegacySimulator()
    # The stale legacy copy: the same RCG id, its own pair ids, the same disks.
    stale = legacy.add_group(PROJECT, group_id=RCG, name="stale-copy", pair_count=2)
    stale_pairs = [legacy.pair(PROJECT, pair_id) for pair_id in stale.replication_ids]
    for stale_pair, sdrs_pair in zip(stale_pairs, sdrs_pairs, strict=True):
        stale_pair.volume_ids = sdrs_pair.volume_ids
    legacy.add_group(PROJECT, group_id=LOST_RCG, name="stale-copy-of-a-lost-group", pair_count=1)
    unmigrated = legacy.add_group(PROJECT, name="not-migrated", pair_count=2, replication_status="active-stopped")
    sim_runner, sdrs_url = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    mapping = [
        {"project_id": PROJECT.upper(), "replication_consistency_group_id": shouting(RCG),
         "protection_group_id": shouting(GROUP)},
        # mapped, but SDRS no longer has it: neither its SDRS nor its legacy version may show
        {"project_id": PROJECT, "replication_consistency_group_id": LOST_RCG, "protection_group_id": LOST_GROUP},
    ]
    shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url, mapping=mapping)
    legacy.requests.clear()
    yield World(shim, sim, legacy, [pair.id for pair in sdrs_pairs], [pair.id for pair in stale_pairs],
                unmigrated.id, list(unmigrated.replication_ids), sdrs_url, legacy_url, mapping)
    await sim_runner.cleanup()
    await legacy_runner.cleanup()


async def get(world: World, path: str) -> Reply:
    reply = await call("GET", world.shim + path, headers=READ_HEADERS)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")  # golangsdk's list calls need it
    return reply


def ids(reply: Reply, key: str) -> list[str]:
    return [item["id"] for item in reply.json()[key]]


# -- lists ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?name=stale-copy", "?status=available", "?sort_key=name&sort_dir=asc",
                                   "?limit=1000&offset=0", "?name=pg-migrated"])
async def test_the_group_list_never_shows_a_legacy_copy_of_a_mapped_group(world, query):
    reply = await get(world, GROUPS + query)
    groups = reply.json()["replication_consistency_groups"]
    for group in groups:
        assert_go_decodes_group(group, complete=False)

    assert [group["name"] for group in groups if group["id"] == RCG] in ([], ["pg-migrated"])  # SDRS's, once
    assert "stale-copy" not in [group["name"] for group in groups]
    assert LOST_RCG not in ids(reply, "replication_consistency_groups")
    if query in ("", "?status=available", "?sort_key=name&sort_dir=asc", "?limit=1000&offset=0"):
        assert sorted(ids(reply, "replication_consistency_groups")) == sorted([RCG, world.unmigrated_rcg])


async def test_a_group_list_by_a_disk_of_a_mapped_group_shows_only_the_sdrs_version(world):
    disk = world.sim.state.pairs[(PROJECT, world.sdrs_pair_ids[0])].volume_ids[0]
    reply = await get(world, f"{GROUPS}?volume_id={disk.upper()}")
    assert ids(reply, "replication_consistency_groups") == [RCG]
    assert reply.json()["replication_consistency_groups"][0]["name"] == "pg-migrated"


@pytest.mark.parametrize("query", ["", "?status=available", "?name=pg"])
async def test_the_pair_list_never_shows_a_legacy_copy_of_a_mapped_groups_pair(world, query):
    reply = await get(world, PAIRS + query)
    pairs = reply.json()["replications"]
    for pair in pairs:
        assert_go_decodes_pair(pair, complete=False)
    listed = set(ids(reply, "replications"))

    assert not listed & set(world.stale_pair_ids)
    assert all(pair["replication_consistency_group_id"] not in (LOST_RCG,) for pair in pairs)
    if query != "?name=pg":
        assert set(world.sdrs_pair_ids) <= listed
        assert set(world.unmigrated_pair_ids) <= listed


@pytest.mark.parametrize("spelling", [RCG, RCG.upper(), shouting(RCG), RCG.replace("-", "")])
async def test_a_pair_list_filtered_by_a_mapped_group_is_exactly_its_replication_ids(world, spelling):
    group = (await get(world, f"{GROUPS}/{RCG}")).json()["replication_consistency_group"]
    reply = await get(world, f"{PAIRS}?replication_consistency_group_id={spelling}")

    assert sorted(ids(reply, "replications")) == sorted(group["replication_ids"]) == sorted(world.sdrs_pair_ids)
    assert {pair["replication_consistency_group_id"] for pair in reply.json()["replications"]} == {RCG}
    assert world.legacy.requests == []  # a list about one mapped group: SDRS alone


# -- reads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [RCG, RCG.upper(), shouting(RCG)])
async def test_a_mapped_group_reads_from_sdrs_in_its_canonical_form_whatever_the_spelling(world, spelling):
    reply = await get(world, f"{GROUPS}/{spelling}")
    group = reply.json()["replication_consistency_group"]
    assert_go_decodes_group(group)
    assert group["id"] == RCG and group["name"] == "pg-migrated"
    assert world.legacy.requests == []


@pytest.mark.parametrize("how", ["as-listed", "upper", "no-dashes"])
async def test_pair_reads_accept_the_same_spellings_as_group_reads(world, how):
    pair_id = world.sdrs_pair_ids[0]
    spelling = {"as-listed": pair_id, "upper": pair_id.upper(), "no-dashes": pair_id.replace("-", "")}[how]
    reply = await get(world, f"{PAIRS}/{spelling}")
    pair = reply.json()["replication"]
    assert_go_decodes_pair(pair)
    assert pair["id"] == pair_id and pair["replication_consistency_group_id"] == RCG
    assert world.legacy.requests == []


async def test_head_of_a_mapped_group_is_answered_without_the_legacy_copy(world):
    reply = await call("HEAD", f"{world.shim}{GROUPS}/{RCG}", headers=READ_HEADERS)
    assert reply.status == 200 and reply.body == b""
    assert world.legacy.requests == []


async def test_an_unmapped_group_and_its_pairs_are_read_from_the_legacy_endpoint(world):
    group = (await get(world, f"{GROUPS}/{world.unmigrated_rcg}")).json()["replication_consistency_group"]
    pair = (await get(world, f"{PAIRS}/{world.unmigrated_pair_ids[0]}")).json()["replication"]
    assert group["name"] == "not-migrated" and pair["replication_consistency_group_id"] == world.unmigrated_rcg
    assert world.legacy_paths() == [f"{GROUPS}/{world.unmigrated_rcg}", f"{PAIRS}/{world.unmigrated_pair_ids[0]}"]
    assert all(f"/{pair_id}" not in path for path, *_ in world.sim.requests for pair_id in world.unmigrated_pair_ids)


# -- writes on a mapped group never reach its stale legacy copy --------------------------------------


def golang_body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


async def test_a_mapped_groups_update_delete_and_pair_delete_go_to_sdrs_never_to_its_stale_copy(world):
    stop = await call("POST", f"{world.shim}{GROUPS}/{RCG}/action", headers=GO_HEADERS,
                      body=b'{"os-stop-replication-consistency-group":null}\n')
    assert stop.status == 200
    while world.sim.group(PROJECT, GROUP).status != "available":
        await asyncio.sleep(0.02)
    put = await call("PUT", f"{world.shim}{GROUPS}/{shouting(RCG)}", headers=GO_HEADERS,
                     body=golang_body({"replication_consistency_group": {
                         "name": "renamed", "remove_replication_ids": [world.sdrs_pair_ids[0]]}}))
    delete_pair = await call("DELETE", f"{world.shim}{PAIRS}/{world.sdrs_pair_ids[0]}", headers=READ_HEADERS)
    delete = await call("DELETE", f"{world.shim}{GROUPS}/{RCG}", headers=READ_HEADERS)

    assert put.status == 202 and put.json()["replication_consistency_group"]["name"] == "renamed"
    assert world.sim.group(PROJECT, GROUP).name == "renamed"
    assert delete_pair.status == 202  # removed by the update: its delete is done
    # One pair remains: the legacy precondition refuses the group delete before anything is sent.
    assert delete.status == 400 and "Remove the 1 replication pair(s)" in delete.fault()[1]["message"]
    assert [(method, path) for method, path, _ in world.sim.write_calls] == [
        ("POST", f"/v1/{PROJECT}/server-groups/{GROUP}/action"),
        ("PUT", f"/v1/{PROJECT}/server-groups/{GROUP}"),
        ("DELETE", f"/v1/{PROJECT}/replications/{world.sdrs_pair_ids[0]}"),
    ]
    world.assert_legacy_untouched_by(RCG, *world.sdrs_pair_ids, *world.stale_pair_ids)
    assert world.legacy.requests == []


async def test_creates_and_updates_naming_a_mapped_groups_pair_or_disk_are_refused(world):
    disk = world.sim.state.pairs[(PROJECT, world.sdrs_pair_ids[0])].volume_ids[0]
    create_group = await call("POST", world.shim + GROUPS, headers=GO_HEADERS, body=golang_body(
        {"replication_consistency_group": {"replication_ids": [world.sdrs_pair_ids[0].upper()],
                                           "priority_station": "eu-de-01", "replication_model": "hypermetro"}}))
    add_to_unmigrated = await call("PUT", f"{world.shim}{GROUPS}/{world.unmigrated_rcg}", headers=GO_HEADERS,
                                   body=golang_body({"replication_consistency_group": {
                                       "add_replication_ids": [world.sdrs_pair_ids[1]]}}))
    create_pair = await call("POST", world.shim + PAIRS, headers=GO_HEADERS, body=golang_body(
        {"replication": {"volume_ids": [disk, "9f0e1d2c-3b4a-4596-8877-665544332211"], "priority_station": "eu-de-01",
                         "replication_model": "hypermetro"}}))

    for reply in (create_group, add_to_unmigrated, create_pair):
        assert reply.status == 400, reply.body  # golangsdk shows a 400's message, not a 409's
        assert "has moved to SDRS" in reply.fault()[1]["message"]
    assert world.legacy.requests == []


async def test_creates_and_updates_about_unmigrated_groups_are_relayed_as_sent(world):
    body = golang_body({"replication_consistency_group": {"name": "renamed-legacy"}})
    reply = await call("PUT", f"{world.shim}{GROUPS}/{world.unmigrated_rcg}", headers=GO_HEADERS, body=body)

    assert reply.status == 202, reply.body
    assert reply.json()["replication_consistency_group"]["name"] == "renamed-legacy"
    (seen,) = world.legacy.requests
    assert (seen.method, seen.path, seen.body) == ("PUT", f"{GROUPS}/{world.unmigrated_rcg}", body)
    assert world.sim.write_calls == [] and world.sim.action_calls == []


# -- errors that do not lie ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", json.dumps({"error_code": "APIGW.0101", "error_msg": "no such API"}).encode()])
async def test_a_gateway_404_on_the_group_read_is_a_configuration_fault_not_gone(world, body):
    world.sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{GROUP}", status=404, body=body, times=None))
    reply = await call("GET", f"{world.shim}{GROUPS}/{RCG}", headers=READ_HEADERS)
    assert reply.status == 502, reply.body  # a 404 would make Terraform drop the group from its state
    assert "check upstreams.sdrs" in reply.fault()[1]["message"]
    assert world.legacy.requests == []


async def test_sdrs_saying_the_group_does_not_exist_is_404(world):
    world.sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{GROUP}", status=400,
                           body={"error": {"code": "SDRS.1013", "message": "Protection group not found"}}))
    reply = await call("GET", f"{world.shim}{GROUPS}/{RCG}", headers=READ_HEADERS)
    assert reply.status == 404


async def test_timestamps_with_a_utc_offset_are_converted_before_the_offset_is_dropped(world):
    real = world.sim.group(PROJECT, GROUP)
    body = {"server_group": {"id": GROUP, "name": real.name, "status": "protected", "priority_station": "source",
                             "source_availability_zone": "eu-de-01", "target_availability_zone": "eu-de-02",
                             "created_at": "2019-05-23T12:51:58.256+02:00", "updated_at": "2019-05-23 03:51:58.256Z"}}
    world.sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{GROUP}", status=200, body=body))
    reply = await get(world, f"{GROUPS}/{RCG}")
    group_read = reply.json()["replication_consistency_group"]
    assert group_read["created_at"] == "2019-05-23T10:51:58.256000"
    assert group_read["updated_at"] == "2019-05-23T03:51:58.256000"


# -- an SDRS outage does not break what the legacy endpoint serves -------------------------------------


@pytest.mark.parametrize("outage", [
    Fault(status=503, times=None, body={"error": {"code": "SDRS.0008", "message": "Service unavailable"}}),
    Fault(reset=True, times=None),
])
async def test_legacy_only_calls_keep_working_while_sdrs_is_down(world, outage):
    """Pair GET/DELETE/create of unmapped pairs and a description-only update of an unmapped group, in a
    project that maps a group: SDRS is read only when the call may be about a mapped group, and when
    it cannot answer, what the shim knows decides (here: the mapped pairs of its last list)."""
    mapped_pair = world.sdrs_pair_ids[0]
    assert (await get(world, f"{PAIRS}/{mapped_pair}")).json()["replication"]["id"] == mapped_pair  # seen once
    standalone = world.legacy.add_pair(PROJECT)  # in no group: the legacy endpoint deletes it
    world.legacy.requests.clear()
    world.sim.inject(outage)

    read = await call("GET", f"{world.shim}{PAIRS}/{world.unmigrated_pair_ids[0]}", headers=READ_HEADERS)
    describe = await call("PUT", f"{world.shim}{GROUPS}/{world.unmigrated_rcg}", headers=GO_HEADERS,
                          body=golang_body({"replication_consistency_group": {"description": "legacy only"}}))
    create = await call("POST", world.shim + PAIRS, headers=GO_HEADERS, body=golang_body({"replication": {
        "volume_ids": ["0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"],
        "priority_station": "eu-de-01", "replication_model": "hypermetro"}}))
    delete = await call("DELETE", f"{world.shim}{PAIRS}/{standalone.id}", headers=READ_HEADERS)

    assert read.status == 200 and read.json()["replication"]["id"] == world.unmigrated_pair_ids[0]
    assert describe.status == 202, describe.body
    assert create.status == 202, create.body
    assert delete.status == 202, delete.body
    assert len(world.legacy.requests) == 4
    # What the shim knows ties these to the mapped group: SDRS must answer, never the stale side.
    disk = world.sim.state.pairs[(PROJECT, mapped_pair)].volume_ids[0]
    mapped_read = await call("GET", f"{world.shim}{PAIRS}/{mapped_pair}", headers=READ_HEADERS)
    mapped_create = await call("POST", world.shim + PAIRS, headers=GO_HEADERS, body=golang_body({"replication": {
        "volume_ids": [disk, "2c3d4e5f-6a7b-4c8d-8e9f-1a2b3c4d5e6f"], "priority_station": "eu-de-01",
        "replication_model": "hypermetro"}}))
    assert mapped_read.status == 503, mapped_read.body
    assert mapped_create.status == 400 and "has moved to SDRS" in mapped_create.fault()[1]["message"]
    assert len(world.legacy.requests) == 4
    world.assert_legacy_untouched_by(RCG, *world.sdrs_pair_ids)


async def test_a_shim_started_while_sdrs_is_down_knows_the_mapped_pairs_from_the_store(world, make_shim, tmp_path):
    """What one shim saw of the mapped pairs is kept in the shared store: a shim (re)started during the
    outage answers 503 for a mapped pair rather than relaying it (the legacy endpoint's 404 would tell
    Terraform the pair is gone), and still relays the legacy endpoint's pairs."""
    mapped_pair = world.sdrs_pair_ids[0]
    await get(world, f"{PAIRS}/{mapped_pair}")  # the first shim reads the project's pairs once
    world.sim.inject(Fault(reset=True, times=None))
    restarted = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=world.mapping,
                                state={"backend": "sqlite", "path": str(tmp_path / "state0.sqlite3")})
    world.legacy.requests.clear()

    mapped_read = await call("GET", f"{restarted}{PAIRS}/{mapped_pair}", headers=READ_HEADERS)
    legacy_read = await call("GET", f"{restarted}{PAIRS}/{world.unmigrated_pair_ids[0]}", headers=READ_HEADERS)

    assert mapped_read.status == 503, mapped_read.body
    assert legacy_read.status == 200 and legacy_read.json()["replication"]["id"] == world.unmigrated_pair_ids[0]
    assert world.legacy_paths() == [f"{PAIRS}/{world.unmigrated_pair_ids[0]}"]
