"""The whole life of a group as Terraform drives it, through the shim, for a mapped group (SDRS does
the work) and for an unmapped one (the legacy endpoint does), side by side in one project.

The flows are terraform-provider-flexibleengine's, as golangsdk sends them (tests/terraform_flows.py:
exact OkCodes, Go types, StateChangeConf polling). After each, the request logs prove the rule: nothing
about the mapped group reached the legacy endpoint, nothing about the unmapped one reached SDRS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from conftest import DEFAULT_ENTRY, GROUP, OTHER_PROJECT, PROJECT, RCG, TOKEN, ShimFactory, start_server
from shim.legacy_sim.server import LegacySimulator
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.faults import Fault
from terraform_flows import DrsV2Client, GoError, NotFound, TerraformFlows, Timings, UnexpectedStateError

TIMINGS = Timings(timeout=15)


@dataclass
class World:
    sim: SdrsSimulator
    legacy: LegacySimulator
    flows: TerraformFlows
    client: DrsV2Client
    sdrs_pair_ids: list[str]
    sdrs_url: str = ""
    legacy_url: str = ""

    def dr_disks(self) -> list[str]:
        return [self.sim.state.pairs[(PROJECT, pair_id)].volume_ids[1] for pair_id in self.sdrs_pair_ids]

    def assert_legacy_never_heard_of_the_mapped_group(self) -> None:
        keys = [RCG.replace("-", ""), *(pair_id.replace("-", "") for pair_id in self.sdrs_pair_ids)]
        for request in self.legacy.requests:
            flat = request.path.replace("-", "").lower()
            assert not any(key in flat for key in keys), request.path

    def assert_sdrs_never_heard_of(self, *legacy_ids: str) -> None:
        keys = [identifier.replace("-", "") for identifier in legacy_ids]
        for _, path, _ in self.sim.requests:
            flat = path.replace("-", "").lower()
            assert not any(key in flat for key in keys), path


@pytest.fixture
async def world(make_shim: ShimFactory) -> AsyncIterator[World]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.15, sync_seconds=0.1))
    sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2, name="pg-migrated")
    sdrs_pair_ids = sim.pair_ids(PROJECT, GROUP)
    legacy = LegacySimulator()
    legacy.add_group(PROJECT, group_id=RCG, name="stale-copy", pair_count=2)  # the stale legacy copy
    sim_runner, sdrs_url = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url,
                           actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05,
                                    "wait_for_previous_seconds": 5})
    legacy.requests.clear()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, shim, PROJECT, TOKEN)
        yield World(sim, legacy, TerraformFlows(client, TIMINGS), client, sdrs_pair_ids, sdrs_url, legacy_url)
    await sim_runner.cleanup()
    await legacy_runner.cleanup()


# -- a mapped group: SDRS does the work -----------------------------------------------------------------


async def test_terraform_update_of_a_mapped_group_renames_it_in_sdrs_and_keeps_the_description(world):
    group = await world.flows.update_group(RCG, name="pg-renamed", description="managed by terraform")

    assert group is not None
    assert (group["name"], group["description"]) == ("pg-renamed", "managed by terraform")
    assert world.sim.group(PROJECT, GROUP).name == "pg-renamed"
    assert group["status"] == "available"
    assert sorted(group["replication_ids"]) == sorted(world.sdrs_pair_ids)
    # Stop, then (after the update) Sync: SDRS stopped and started the group again.
    assert [call[2] for call in world.sim.action_calls] == ["stop-server-group", "start-server-group"]
    world.assert_legacy_never_heard_of_the_mapped_group()
    assert world.legacy.requests == []


async def test_terraform_update_removing_a_pair_then_destroying_that_pair_resource(world):
    kept, removed = world.sdrs_pair_ids
    dr_disk_of_removed = world.dr_disks()[1]

    group = await world.flows.update_group(RCG, replication_ids=[kept])
    await world.flows.delete_replication(removed)  # DELETE (202, remembered), then GET until 404

    assert group is not None and group["replication_ids"] == [kept]
    assert world.sim.pair_ids(PROJECT, GROUP) == [kept]
    assert dr_disk_of_removed in world.sim.volumes  # delete_target_volume: false, no data deleted
    deletes = [call for call in world.sim.write_calls if call[0] == "DELETE"]
    assert deletes == [("DELETE", f"/v1/{PROJECT}/replications/{removed}",
                        {"replication": {"server_group_id": GROUP, "delete_target_volume": False}})]
    assert world.legacy.requests == []


async def test_terraform_destroy_of_a_mapped_group_and_its_pair_resources(world):
    dr_disks = world.dr_disks()
    await world.flows.delete_group(RCG)  # Stop, GET, PUT remove all, wait, DELETE, wait for 404
    for pair_id in world.sdrs_pair_ids:
        await world.flows.delete_replication(pair_id)

    with pytest.raises(KeyError):
        world.sim.group(PROJECT, GROUP)
    assert all(disk in world.sim.volumes for disk in dr_disks)
    assert await world.flows.read_group(RCG) is None  # 404 from SDRS, never the stale legacy copy
    assert world.legacy.requests == []


# -- refusals a provider surfaces, leaving a state a retry finishes -------------------------------------


@pytest.mark.parametrize(("change", "says"), [
    ({"add_replication_ids": ["6e7f8091-2b3c-4d5e-9f0a-1b2c3d4e5f60"]}, f"POST /v1/{PROJECT}/replications"),
    ({"replication_model": "replication"}, "only replication model is hypermetro"),
    ({"name": "a name with spaces"}, "1 to 64 letters, digits"),
    ({"name": "x" * 65}, "1 to 64 letters, digits"),
])
async def test_what_sdrs_cannot_do_is_a_legacy_400_that_says_what_to_do_instead(world, change, says):
    with pytest.raises(GoError) as refused:
        await world.client.update_group(RCG, **change)

    assert refused.value.status == 400
    assert says in refused.value.body.decode()
    assert world.sim.write_calls == [] and world.sim.action_calls == []
    assert world.legacy.requests == []


async def stopped(world: World) -> None:
    await world.client.stop(RCG)
    while world.sim.group(PROJECT, GROUP).status != "available":
        await asyncio.sleep(0.02)


async def test_terraform_destroy_of_a_failed_over_group_is_refused_as_the_legacy_endpoint_refuses_it(world):
    """The legacy update needs an available group: on a failovered one the PUT removing every pair is
    the legacy 400 and changes nothing (it never deletes the SDRS pairs)."""
    await world.client.failover(RCG)
    await world.flows.wait(world.flows.group_refresh(RCG), ["available", "failovering"], ["failovered"])
    writes_before = list(world.sim.write_calls)

    with pytest.raises(GoError) as refused:
        await world.flows.delete_group(RCG)  # Stop (nothing to do), GET, PUT removing every pair
    assert refused.value.status == 400
    assert "must be available to be updated, not failovered" in refused.value.body.decode()
    for change in ({"name": "renamed"}, {"description": "only the description"}):
        with pytest.raises(GoError) as refused:
            await world.client.update_group(RCG, **change)
        assert refused.value.status == 400 and "not failovered" in refused.value.body.decode()

    assert world.sim.write_calls == writes_before  # nothing was sent to SDRS
    assert world.sim.pair_ids(PROJECT, GROUP) == world.sdrs_pair_ids
    group = await world.client.get_group(RCG)
    assert (group["status"], group["description"], sorted(group["replication_ids"])) == \
        ("failovered", None, sorted(world.sdrs_pair_ids))
    assert world.legacy.requests == []


async def test_an_update_while_replication_runs_is_the_legacy_400_stop_it_first(world):
    with pytest.raises(GoError) as refused:  # no Stop first: the group replicates (SDRS protected)
        await world.client.update_group(RCG, remove_replication_ids=[world.sdrs_pair_ids[0]])
    assert refused.value.status == 400 and "Stop replication consistency group" in refused.value.body.decode()
    assert world.sim.write_calls == [] and world.sim.pair_ids(PROJECT, GROUP) == world.sdrs_pair_ids


async def test_deleting_a_pair_still_in_a_mapped_group_is_the_legacy_400_and_sends_nothing(world):
    await stopped(world)
    with pytest.raises(GoError) as refused:
        await world.client.delete_pair(world.sdrs_pair_ids[0])
    assert refused.value.status == 400 and "remove it from the group first" in refused.value.body.decode()
    assert [call for call in world.sim.write_calls if call[0] == "DELETE"] == []
    assert world.sim.pair_ids(PROJECT, GROUP) == world.sdrs_pair_ids
    assert world.legacy.requests == []


async def test_a_failed_pair_delete_surfaces_and_a_retried_destroy_finishes(world):
    await stopped(world)  # the destroy's own Stop then sends nothing: the next job is a pair delete
    world.sim.fail_next_job(PROJECT, GROUP, "SDRS.1607", "the DR disk is busy")

    with pytest.raises(UnexpectedStateError) as failed:
        await world.flows.delete_group(RCG)  # the wait for `available` meets `error`
    assert failed.value.state == "error"
    group = await world.client.get_group(RCG)
    assert group["failure_detail"] == "SDRS.1607"
    writes = len(world.sim.write_calls)
    with pytest.raises(GoError) as refused:  # an update of a group that reads `error`: the legacy 400
        await world.client.update_group(RCG, remove_replication_ids=world.sdrs_pair_ids)
    assert refused.value.status == 400 and "not error" in refused.value.body.decode()
    assert len(world.sim.write_calls) == writes

    await world.flows.delete_group(RCG)  # terraform destroy, again
    with pytest.raises(KeyError):
        world.sim.group(PROJECT, GROUP)
    assert world.legacy.requests == []


async def test_a_group_delete_while_pairs_remain_is_the_legacy_400_and_the_full_destroy_then_finishes(world):
    with pytest.raises(GoError) as refused:
        await world.client.delete_group(RCG)  # pairs remain: the legacy precondition, checked by the shim
    assert refused.value.status == 400 and "Remove the 2 replication pair(s)" in refused.value.body.decode()
    assert world.sim.write_calls == []  # not left to SDRS's own refusal: nothing was sent
    assert world.sim.group(PROJECT, GROUP).status in ("protected", "available")

    await world.flows.delete_group(RCG)
    with pytest.raises(KeyError):
        world.sim.group(PROJECT, GROUP)


async def test_a_delete_whose_connection_drops_is_not_resent_behind_the_shims_back(world):
    """aiohttp would resend a DELETE once by itself on a dropped kept-alive connection; an SDRS
    delete starts a job each time: the shim sends it once and waits out the unknown outcome."""
    await stopped(world)
    world.sim.inject(Fault(method="DELETE", reset=True))

    with pytest.raises(GoError) as unknown:
        await world.client.update_group(RCG, remove_replication_ids=[world.sdrs_pair_ids[0]])

    assert unknown.value.status == 503
    assert [call[0] for call in world.sim.write_calls if call[0] == "DELETE"] == ["DELETE"]
    with pytest.raises(GoError) as settling:
        await world.client.update_group(RCG, remove_replication_ids=[world.sdrs_pair_ids[0]])
    assert settling.value.status == 409 and "not known yet" in settling.value.body.decode()
    assert [call[0] for call in world.sim.write_calls if call[0] == "DELETE"] == ["DELETE"]


# -- an unmapped group in the same project: the legacy endpoint does the work --------------------------


def disks() -> list[str]:
    import uuid

    return [str(uuid.uuid4()), str(uuid.uuid4())]


async def test_terraform_lifecycle_of_an_unmapped_group_is_the_legacy_endpoints_alone(world):
    """Create two pairs and a group, update it (rename, remove a pair), destroy it and its pairs:
    all through the shim, beside a mapped group of the same project; SDRS hears of none of it."""
    first = await world.flows.create_replication(volume_ids=disks(), priority_station="eu-de-01", name="p1")
    second = await world.flows.create_replication(volume_ids=disks(), priority_station="eu-de-01", name="p2")
    assert first is not None and second is not None
    group = await world.flows.create_group(replication_ids=[first["id"], second["id"]],
                                           priority_station="eu-de-01", name="still-legacy")
    assert group is not None and group["replication_status"] in ("copying", "active")
    updated = await world.flows.update_group(group["id"], name="renamed-legacy", replication_ids=[first["id"]])
    assert updated is not None and (updated["name"], updated["replication_ids"]) == ("renamed-legacy", [first["id"]])
    await world.flows.delete_group(group["id"])
    for pair in (first, second):
        await world.flows.delete_replication(pair["id"])

    assert await world.flows.read_group(group["id"]) is None
    world.assert_sdrs_never_heard_of(group["id"], first["id"], second["id"])
    assert world.sim.write_calls == [] and world.sim.action_calls == []
    world.assert_legacy_never_heard_of_the_mapped_group()


async def test_golangsdk_polling_through_failover_and_reprotect_of_a_mapped_group(world):
    """failover -> poll until failovered -> reprotect -> poll until available/active."""
    await world.client.failover(RCG)
    await world.flows.wait(world.flows.group_refresh(RCG), ["available", "failovering"], ["failovered"])
    await world.client.reprotect(RCG)
    await world.flows.wait(world.flows.group_refresh(RCG), ["failovered"], ["available"])
    for _ in range(200):
        group = await world.client.get_group(RCG)
        if group["replication_status"] == "active":
            break
        assert group["replication_status"] == "copying", group  # until the pairs are in sync
        await asyncio.sleep(0.02)

    assert (group["status"], group["replication_status"]) == ("available", "active")
    assert [call[2] for call in world.sim.action_calls] == ["failover-server-group", "start-server-group"]
    assert world.legacy.requests == []


async def test_validate_names_the_mapping_entries_whose_group_was_deleted_through_the_shim(world, tmp_path):
    import subprocess
    import sys

    import yaml

    await world.flows.delete_group(RCG)
    config = tmp_path / "shim.yaml"  # the same mappings and state file as the shim under test
    config.write_text(yaml.safe_dump({"upstreams": {"sdrs": "http://127.0.0.1:9"}, "mappings": "./mappings0",
                                      "state": {"backend": "sqlite", "path": "./state0.sqlite3"}}))
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "shim", "validate", "--config", str(config)],
                                   capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert f"({RCG}) points at protection group {GROUP}, deleted through the shim" in done.stdout
    # How to retire it without bringing back the legacy copy: the store remembers, not the file.
    assert "may be removed; the group stays deleted" in done.stdout and "keep that store" in done.stdout

    report = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "shim", "report", "--config", str(config)],
                                     capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    (row,) = [line for line in report.stdout.splitlines() if f"  {RCG}  " in line]
    assert "(group deleted)" in row
    assert any(line.startswith("  protection group deleted through the shim at ")
               and line.endswith("remove the entry from the mapping file") for line in report.stdout.splitlines())


# -- what the shim deleted stays deleted ------------------------------------------------------------------

# Another project's entry: a mapping file from which the deleted group's entry was removed.
ELSEWHERE = {"project_id": OTHER_PROJECT, "replication_consistency_group_id": "2b4d6f80-1a3c-4e5f-8a9b-0c1d2e3f4a5b",
             "protection_group_id": "3c5e7a91-2b4d-4f6a-9b0c-1d2e3f4a5b6c"}


async def assert_deleted_everywhere(world: World, shim: str, removed_disks: list[str]) -> None:
    """Read, list, act on, update the deleted group; create a pair on a removed pair's disks: 404, absent,
    refused, and the legacy endpoint hears nothing about the group or those disks."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, shim, PROJECT, TOKEN)
        legacy_before = len(world.legacy.requests)
        with pytest.raises(NotFound):
            await client.get_group(RCG)
        for attempt in (client.stop(RCG), client.update_group(RCG, description="x"), client.delete_group(RCG)):
            with pytest.raises(GoError) as refused:
                await attempt
            assert refused.value.status == 404
        assert RCG not in [group["id"] for group in await client.list_groups()]
        assert [pair for pair in await client.list_pairs() if pair["replication_consistency_group_id"] == RCG] == []
        with pytest.raises(GoError) as refused:
            await client.create_pair(volume_ids=removed_disks, priority_station="eu-de-01")
        assert refused.value.status == 400 and "has moved to SDRS" in refused.value.body.decode()
    for request in world.legacy.requests[legacy_before:]:
        assert (request.method, request.path.split("?")[0]) in (
            ("GET", f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"),
            ("GET", f"/v2/{PROJECT}/os-vendor-replications")), request.path  # the lists only
    world.assert_legacy_never_heard_of_the_mapped_group()


async def test_a_pair_create_on_the_disks_of_a_pair_the_shim_removed_is_refused_never_relayed(world):
    kept, removed = world.sdrs_pair_ids
    disks = list(world.sim.state.pairs[(PROJECT, removed)].volume_ids)
    await world.flows.update_group(RCG, replication_ids=[kept])  # SDRS deletes the pair, keeps its disks

    for volume_ids in (disks, [disks[1], "9f0e1d2c-3b4a-4596-8877-665544332211"]):
        with pytest.raises(GoError) as refused:
            await world.client.create_pair(volume_ids=volume_ids, priority_station="eu-de-01")
        assert refused.value.status == 400 and "has moved to SDRS" in refused.value.body.decode()
    assert world.legacy.requests == []


@pytest.mark.parametrize("entry_now", ["removed", "mode legacy", "mode shadow"])
async def test_a_group_deleted_through_the_shim_stays_deleted_whatever_becomes_of_its_mapping_entry(
    world, make_shim, tmp_path, entry_now,
):
    disks = [disk for pair_id in world.sdrs_pair_ids for disk in world.sim.state.pairs[(PROJECT, pair_id)].volume_ids]
    await world.flows.delete_group(RCG)
    for pair_id in world.sdrs_pair_ids:
        await world.flows.delete_replication(pair_id)

    mapping = [ELSEWHERE] if entry_now == "removed" else [{**DEFAULT_ENTRY, "mode": entry_now.split()[1]}]
    # The shim restarted with the edited mapping file and the same state file.
    shim = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=mapping,
                           state={"backend": "sqlite", "path": str(tmp_path / "state0.sqlite3")})
    await assert_deleted_everywhere(world, shim, disks[:2])


async def test_another_shim_sharing_the_store_learns_of_the_deletion_without_a_store_read_per_call(
    world, make_shim, tmp_path,
):
    """Shim B shares the state file but no longer maps the group (its entry is gone): once shim A deleted
    the group, B answers 404 within its store-watch interval, from memory."""
    shim_b = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=[ELSEWHERE],
                             state={"backend": "sqlite", "path": str(tmp_path / "state0.sqlite3")})
    await deletion_learnt_by(world, shim_b, world.flows)


async def test_shims_sharing_redis_learn_of_each_others_deletions(world, make_shim, redis_server):
    state = {"backend": "redis", "url": redis_server.url}
    shim_a = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, state=state,
                             actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05,
                                      "wait_for_previous_seconds": 5})
    shim_b = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=[ELSEWHERE], state=state)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await deletion_learnt_by(world, shim_b, TerraformFlows(DrsV2Client(session, shim_a, PROJECT, TOKEN), TIMINGS))
        other = world.legacy.add_group(PROJECT, name="not-migrated")

        await redis_server.stop()  # from memory: no store round trip per call
        client_b = DrsV2Client(session, shim_b, PROJECT, TOKEN)
        with pytest.raises(NotFound):
            await client_b.get_group(RCG)
        assert (await client_b.get_group(other.id))["name"] == "not-migrated"


async def deletion_learnt_by(world: World, shim_b: str, flows_a: TerraformFlows) -> None:
    disks = list(world.sim.state.pairs[(PROJECT, world.sdrs_pair_ids[0])].volume_ids)
    await flows_a.delete_group(RCG)

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, shim_b, PROJECT, TOKEN)
        for _ in range(100):  # the store is watched every 2 s
            try:
                await client.get_group(RCG)
            except NotFound:
                break
            await asyncio.sleep(0.1)
    world.legacy.requests.clear()  # B relayed reads of the stale copy until it learnt
    await assert_deleted_everywhere(world, shim_b, disks)


async def test_one_pair_removed_by_concurrent_and_retried_updates_is_deleted_in_sdrs_once(world):
    """Issue 19's "same pair deleted twice": every check that a pair is already being removed runs
    under the group's lease (the pair's own DELETE sends nothing to SDRS). Concurrent updates removing
    one pair, its concurrent DELETEs, and a retry of each 0.2 s later: one SDRS pair DELETE."""
    await stopped(world)
    pair = world.sdrs_pair_ids[0]

    async def attempt(call: Any) -> int:
        try:
            await call
        except GoError as err:
            return err.status
        return 202

    first = await asyncio.gather(*[attempt(world.client.update_group(RCG, remove_replication_ids=[pair]))
                                   for _ in range(6)],
                                 *[attempt(world.client.delete_pair(pair)) for _ in range(3)])
    await asyncio.sleep(0.2)
    retried = await asyncio.gather(attempt(world.client.update_group(RCG, remove_replication_ids=[pair])),
                                   attempt(world.client.delete_pair(pair)))

    deletes = [call for call in world.sim.write_calls if call[0] == "DELETE" and call[1].endswith(pair)]
    assert len(deletes) == 1, (first, retried, deletes)
    assert 202 in first[:6]
