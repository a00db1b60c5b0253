"""Identity continuity (README, Discovery and Reads): after the documented mapping steps (`shim discover
--write`, then `mode: sdrs`), a group reads through the shim with the ids, names and descriptions it
had before, so the Terraform state written while the legacy endpoint served it sees no difference; its
update and destroy then complete in SDRS, and nothing naming its legacy pair ids reaches the legacy
endpoint.

The world, on loopback: the SDRS simulator holds the migrated protection group; the legacy stand-in
holds the group as it was before (same RCG id, its own pair ids, names and descriptions, the same disks).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from conftest import GROUP, PROJECT, RCG, TOKEN, ShimFactory, call, start_server, write_mappings
from shim.legacy_sim import LegacySimSettings
from shim.legacy_sim.server import LegacySimulator
from shim.mappings import load_mappings
from shim.migration.explain import explain
from shim.migration.report import render_table
from shim.simulator import SdrsSimulator, SimulatorSettings
from terraform_flows import DrsV2Client, GoError, NotFound, TerraformFlows, Timings

LEGACY_NAME = "web tier (prod)"  # not a valid SDRS name: spaces and parentheses
LEGACY_DESCRIPTION = "the web tier's disks"
PAIR_DESCRIPTIONS = ("first disk of the web tier", None)
OTHER_RCG = "5a0e6c1d-2b3f-4d5e-8f60-718293a4b5c6"  # an unrelated legacy group, unmapped
GROUPS = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
PAIRS = f"/v2/{PROJECT}/os-vendor-replications"
TIMINGS = Timings(timeout=15)

# What the provider compares on refresh (its schema's arguments), per resource.
GROUP_FIELDS = ("name", "description", "replication_model", "priority_station", "replication_ids")
PAIR_FIELDS = ("name", "description", "volume_ids", "replication_model", "priority_station")


@dataclass
class World:
    sim: SdrsSimulator
    legacy: LegacySimulator
    sdrs_url: str
    legacy_url: str
    legacy_pair_ids: list[str]
    sdrs_pair_ids: list[str]  # in the same order: the SDRS pair on each legacy pair's disks


@pytest.fixture
async def world() -> AsyncIterator[World]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.15, sync_seconds=0.1))
    sdrs_group = sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2, name="pg-web")
    legacy = LegacySimulator(LegacySimSettings(transition_seconds=0.05, copy_seconds=0.05))
    copy = legacy.add_group(PROJECT, group_id=RCG, name=LEGACY_NAME, description=LEGACY_DESCRIPTION, pair_count=2,
                            priority_station=sim.group(PROJECT, GROUP).production_availability_zone)
    sdrs_pairs = list(sdrs_group.pairs)
    for pair_id, sdrs_pair, description in zip(copy.replication_ids, sdrs_pairs, PAIR_DESCRIPTIONS, strict=True):
        legacy_pair = legacy.pair(PROJECT, pair_id)
        legacy_pair.volume_ids = sdrs_pair.volume_ids  # the same disks, production first
        legacy_pair.description = description
    legacy.add_group(PROJECT, group_id=OTHER_RCG, name="still-legacy", pair_count=1)
    sim_runner, sdrs_url = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    try:
        yield World(sim, legacy, sdrs_url, legacy_url, list(copy.replication_ids), [pair.id for pair in sdrs_pairs])
    finally:
        await sim_runner.cleanup()
        await legacy_runner.cleanup()


async def run_shim(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`shim ARGS` as a process (the event loop keeps serving the simulators meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def discovered(tmp_path: Path, world: World) -> list[dict[str, Any]]:
    """`shim discover --write` over both upstreams, then the runbook's switch: the entry's `mode: sdrs`."""
    write_mappings(tmp_path / "mappings", [])
    config = tmp_path / "shim.yaml"
    config.write_text(yaml.safe_dump({
        "mappings": "./mappings", "upstreams": {"sdrs": world.sdrs_url, "legacy": world.legacy_url},
        "state": {"backend": "memory"}}))
    status, _, err = await run_shim("discover", "--config", str(config), "--project", PROJECT, "--write",
                                    env={"OS_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"})
    assert status == 0, err
    mapping_file = tmp_path / "mappings" / "consistency-groups.yaml"
    text = mapping_file.read_text()
    assert "mode: shadow" in text
    mapping_file.write_text(text.replace("mode: shadow", "mode: sdrs"))
    entries = load_mappings(tmp_path / "mappings").groups
    assert [entry.rcg_id for entry in entries.values()] == [RCG], err
    return list(yaml.safe_load(mapping_file.read_text())["consistency_groups"])


def provider_view(resource: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The arguments as the provider's Read sets them (volume_ids split on "," and trimmed)."""
    view = {field: resource.get(field) for field in fields}
    if "volume_ids" in view:
        view["volume_ids"] = [part.strip() for part in str(view["volume_ids"]).split(",")]
    return view


async def test_terraform_state_written_before_the_mapping_survives_it_and_update_and_destroy_complete(
        tmp_path, world, make_shim: ShimFactory):
    # Before: the group is unmapped (the shim maps only another one); Terraform's state is what it read.
    before = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url,
                             mapping=[{"project_id": PROJECT, "replication_consistency_group_id": OTHER_RCG,
                                       "protection_group_id": "6b1f7d2e-3c40-4e5f-9a61-8293a4b5c6d7",
                                       "mode": "legacy"}])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        flows = TerraformFlows(DrsV2Client(session, before, PROJECT, TOKEN), TIMINGS)
        group_state = provider_view(await flows.client.get_group(RCG), GROUP_FIELDS)
        pair_states = {pair_id: provider_view(await flows.client.get_pair(pair_id), PAIR_FIELDS)
                       for pair_id in group_state["replication_ids"]}
    assert group_state["name"] == LEGACY_NAME and sorted(pair_states) == sorted(world.legacy_pair_ids)

    # The documented mapping steps, then a shim serving the group from SDRS.
    mapping = await discovered(tmp_path, world)
    shared_store = {"backend": "sqlite", "path": str(tmp_path / "shared-state.sqlite3")}
    shim = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=mapping, state=shared_store,
                           actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05,
                                    "wait_for_previous_seconds": 5})
    world.legacy.requests.clear()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        flows = TerraformFlows(DrsV2Client(session, shim, PROJECT, TOKEN), TIMINGS)

        # terraform plan: the refresh reads find no difference.
        assert provider_view(await flows.client.get_group(RCG), GROUP_FIELDS) == group_state
        for pair_id, state in pair_states.items():
            assert provider_view(await flows.client.get_pair(pair_id), PAIR_FIELDS) == state
        assert world.sim.write_calls == [] and world.sim.action_calls == []

        # An update removing a pair by its legacy id, and a description change; then that pair's destroy.
        kept, removed = world.legacy_pair_ids
        updated = await flows.update_group(RCG, description="managed by terraform", replication_ids=[kept])
        assert updated is not None
        assert (updated["name"], updated["description"], updated["replication_ids"]) == (
            LEGACY_NAME, "managed by terraform", [kept])
        removed_sdrs = world.sdrs_pair_ids[world.legacy_pair_ids.index(removed)]
        assert [call[:2] for call in world.sim.write_calls if call[0] == "DELETE"] == [
            ("DELETE", f"/v1/{PROJECT}/replications/{removed_sdrs}")]
        await flows.delete_replication(removed)  # DELETE by the legacy id, then its 404 poll

        # A rename through the shim renames in SDRS and reads back.
        renamed = await flows.update_group(RCG, name="web-tier")
        assert renamed is not None and renamed["name"] == "web-tier"
        assert world.sim.group(PROJECT, GROUP).name == "web-tier"

        # terraform destroy: the group, then the remaining pair resource (by its legacy id).
        await flows.delete_group(RCG)
        await flows.delete_replication(kept)
        assert await flows.read_group(RCG) is None
        with pytest.raises(KeyError):
            world.sim.group(PROJECT, GROUP)

    assert world.legacy.requests == []  # nothing about the mapped group reached its stale copy
    legacy_ids = {pair_id.replace("-", "") for pair_id in world.legacy_pair_ids}
    assert not [path for _, path, _ in world.sim.requests if any(key in path.replace("-", "") for key in legacy_ids)]

    # The retired entry leaves the mapping file (its correspondence with it): the group and the pairs
    # Terraform knew by their legacy ids stay gone; the stale copy is never read again, nor listed.
    retired = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, state=shared_store,
                              mapping=[{"project_id": PROJECT, "replication_consistency_group_id": OTHER_RCG,
                                        "protection_group_id": "6b1f7d2e-3c40-4e5f-9a61-8293a4b5c6d7",
                                        "mode": "legacy"}])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, retired, PROJECT, TOKEN)
        for pair_id in world.legacy_pair_ids:
            with pytest.raises(NotFound):
                await client.get_pair(pair_id)
            await client.delete_pair(pair_id)  # a removed pair's destroy ends: 202
        with pytest.raises(NotFound):
            await client.get_group(RCG)
        listed = [pair["id"] for pair in await client.list_pairs()]
        assert not set(listed) & set(world.legacy_pair_ids)
        assert RCG not in [group["id"] for group in await client.list_groups()]
    assert not [seen.path for seen in world.legacy.requests
                if any(key in seen.path.replace("-", "") for key in legacy_ids | {RCG.replace("-", "")})]


async def test_discover_records_the_correspondence_and_explain_and_report_show_it(tmp_path, world, make_shim):
    mapping = await discovered(tmp_path, world)

    (entry,) = mapping
    legacy = entry["legacy"]
    assert (legacy["name"], legacy["description"]) == (LEGACY_NAME, LEGACY_DESCRIPTION)
    by_id = {pair["id"]: pair for pair in legacy["pairs"]}
    for legacy_id, sdrs_id, description in zip(world.legacy_pair_ids, world.sdrs_pair_ids, PAIR_DESCRIPTIONS,
                                               strict=True):
        assert by_id[legacy_id]["sdrs_id"] == sdrs_id
        assert by_id[legacy_id]["description"] == description
        assert by_id[legacy_id]["volume_id"] == world.sim.state.pairs[(PROJECT, sdrs_id)].volume_ids[0]
        assert by_id[legacy_id]["name"] == world.legacy.pair(PROJECT, legacy_id).name

    mappings = load_mappings(tmp_path / "mappings")
    pair_text = explain(mappings, "GET", f"{PAIRS}/{world.legacy_pair_ids[0]}").render()
    assert "Owner:   SDRS (translated by the shim)" in pair_text
    assert (f"legacy pair {world.legacy_pair_ids[0]} of replication consistency group {RCG} is SDRS pair "
            f"{world.sdrs_pair_ids[0]}") in pair_text
    group_text = explain(mappings, "GET", f"{GROUPS}/{RCG}").render()
    assert f"reads as {LEGACY_NAME!r}" in group_text and f"{world.legacy_pair_ids[0]} = SDRS {world.sdrs_pair_ids[0]}" \
        in group_text

    shim = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=mapping)
    report = (await call("GET", f"{shim}/migration")).json()
    (group,) = report["groups"]
    assert group["identity"]["name"] == LEGACY_NAME
    assert {(pair["legacy_id"], pair["sdrs_id"]) for pair in group["identity"]["pairs"]} == set(
        zip(world.legacy_pair_ids, world.sdrs_pair_ids, strict=True))
    table = render_table(report)
    assert f"  reads as legacy name {LEGACY_NAME}, description {LEGACY_DESCRIPTION}; pairs (legacy id = SDRS id):" \
        in table.splitlines()
    assert f"    {world.legacy_pair_ids[0]} = {world.sdrs_pair_ids[0]} (disk " in table


@pytest.mark.parametrize(("legacy", "problem"), [
    ({"description": None, "pairs": []}, "consistency_groups[0].legacy.name: required key is missing"),
    ({"name": "a", "description": None, "pairs": [{"id": RCG, "name": None, "description": None}]},
     "consistency_groups[0].legacy.pairs[0].sdrs_id: required key is missing"),
    ({"name": "a", "description": None, "pairs": [{"id": RCG, "sdrs_id": "not-an-id", "name": None,
                                                    "description": None}]},
     "consistency_groups[0].legacy.pairs[0].sdrs_id: Value error, must be a UUID"),
    ({"name": "a", "description": None, "pairs": [
        {"id": RCG, "sdrs_id": GROUP, "name": None, "description": None},
        {"id": RCG.upper(), "sdrs_id": OTHER_RCG, "name": None, "description": None}]},
     f"consistency_groups[0].legacy.pairs[1].id: {RCG} is already in pairs[0]"),
    ({"name": "x" * 256, "description": None}, "consistency_groups[0].legacy.name: Value error, a legacy name"),
])
def test_a_bad_legacy_block_is_refused_naming_file_entry_and_field(tmp_path, legacy, problem):
    from shim.validation import ConfigError

    write_mappings(tmp_path, [{"project_id": PROJECT, "replication_consistency_group_id": RCG,
                               "protection_group_id": GROUP, "legacy": legacy}])
    with pytest.raises(ConfigError) as refused:
        load_mappings(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / 'consistency-groups.yaml'}: ")
    assert problem in str(refused.value)


def test_a_legacy_pair_id_recorded_for_two_groups_of_a_project_is_refused(tmp_path):
    from shim.validation import ConfigError

    pair = {"id": "11111111-2222-4333-8444-555555555555", "sdrs_id": GROUP, "name": None, "description": None}
    write_mappings(tmp_path, [
        {"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP,
         "legacy": {"name": None, "description": None, "pairs": [pair]}},
        {"project_id": PROJECT, "replication_consistency_group_id": OTHER_RCG, "protection_group_id": OTHER_RCG,
         "legacy": {"name": None, "description": None, "pairs": [{**pair, "sdrs_id": RCG}]}}])
    with pytest.raises(ConfigError) as refused:
        load_mappings(tmp_path)
    assert ("consistency_groups[1].legacy.pairs[0].id: 11111111-2222-4333-8444-555555555555 is already in "
            "consistency_groups[0].legacy.pairs[0].id") in str(refused.value)


async def sdrs_shim(tmp_path: Path, world: World, make_shim: ShimFactory) -> str:
    """A shim serving the group from SDRS after the mapping steps; the upstreams' logs start empty."""
    shim = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url, mapping=await discovered(tmp_path, world),
                           actions={"wait_for_previous_seconds": 5})
    world.legacy.requests.clear()
    world.sim.requests.clear()
    return shim


async def test_a_legacy_name_sdrs_would_refuse_reads_back_and_sending_it_back_is_no_change(tmp_path, world, make_shim):
    shim = await sdrs_shim(tmp_path, world, make_shim)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, shim, PROJECT, TOKEN)
        assert (await client.get_group(RCG))["name"] == LEGACY_NAME
        await client.stop(RCG)  # the legacy update needs a paused group (Terraform stops it first)
        for _ in range(200):
            if (await client.get_group(RCG))["replication_status"] not in ("active", "copying"):
                break
            await asyncio.sleep(0.02)
        writes_before = len(world.sim.write_calls)

        accepted = await client.update_group(RCG, name=LEGACY_NAME, description="still the web tier")
        assert accepted["name"] == LEGACY_NAME
        assert len(world.sim.write_calls) == writes_before  # no rename sent: it is the name the group reads as
        group = await client.get_group(RCG)
        assert (group["name"], group["description"]) == (LEGACY_NAME, "still the web tier")

        with pytest.raises(GoError) as refused:  # a new name SDRS cannot hold is still refused
            await client.update_group(RCG, name="another tier")
        assert refused.value.status == 400 and "1 to 64 letters" in refused.value.body.decode()
        assert (await client.get_group(RCG))["name"] == LEGACY_NAME
    assert world.legacy.requests == []


async def test_a_pair_created_in_sdrs_after_the_mapping_keeps_its_sdrs_id_and_lists_hide_the_stale_copy(
        tmp_path, world, make_shim):
    shim = await sdrs_shim(tmp_path, world, make_shim)
    disk = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
    world.sim.add_volume(disk)
    world.sim.state.submit_pair_create(PROJECT, GROUP, disk, "pair-new", None)
    (new,) = [pair for pair in world.sim.group(PROJECT, GROUP).pairs if pair.id not in world.sdrs_pair_ids]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, shim, PROJECT, TOKEN)
        group = await client.get_group(RCG)
        assert sorted(group["replication_ids"]) == sorted([*world.legacy_pair_ids, new.id])
        fresh = await client.get_pair(new.id)
        assert (fresh["id"], fresh["name"], fresh["replication_consistency_group_id"]) == (new.id, "pair-new", RCG)
        old = await client.get_pair(world.legacy_pair_ids[0].upper())  # any spelling
        assert (old["id"], old["description"]) == (world.legacy_pair_ids[0], PAIR_DESCRIPTIONS[0])

        listed = await client.list_pairs()
        ids = [pair["id"] for pair in listed]
        assert sorted(pair_id for pair_id in ids if pair_id != world.legacy.group(PROJECT, OTHER_RCG)
                      .replication_ids[0]) == sorted([*world.legacy_pair_ids, new.id])  # once each, from SDRS
        groups = {group["id"]: group for group in await client.list_groups()}
        assert groups[RCG]["name"] == LEGACY_NAME and groups[RCG]["replication_ids"] == group["replication_ids"]

    world.legacy.requests.clear()
    for method in ("GET", "DELETE", "PUT"):
        reply = await call(method, f"{shim}{PAIRS}/{world.legacy_pair_ids[1]}", headers={"X-Auth-Token": TOKEN})
        # A pair still in its group is not deleted (the legacy precondition), named by its legacy id.
        assert reply.status == {"GET": 200, "DELETE": 400, "PUT": 405}[method], reply.body
        assert method != "DELETE" or world.legacy_pair_ids[1] in reply.body.decode()
    assert world.legacy.requests == []


async def test_the_extend_action_names_a_pair_by_its_legacy_id(tmp_path, world, make_shim):
    shim = await sdrs_shim(tmp_path, world, make_shim)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        client = DrsV2Client(session, shim, PROJECT, TOKEN)
        await client.extend(RCG, world.legacy_pair_ids[1], 20)

    assert [(method, path) for method, path, _ in world.sim.write_calls] == [
        ("POST", f"/v1/{PROJECT}/replications/{world.sdrs_pair_ids[1]}/action")]
    assert world.legacy.requests == []


async def test_a_recorded_pair_sdrs_no_longer_holds_is_gone_never_the_stale_copy(tmp_path, world, make_shim):
    shim = await sdrs_shim(tmp_path, world, make_shim)
    lost = world.sim.group(PROJECT, GROUP).pairs.pop()  # deleted in SDRS behind the shim's back
    del world.sim.state.pairs[(PROJECT, lost.id)]
    legacy_id = world.legacy_pair_ids[world.sdrs_pair_ids.index(lost.id)]

    for method in ("GET", "DELETE"):
        reply = await call(method, f"{shim}{PAIRS}/{legacy_id}", headers={"X-Auth-Token": TOKEN})
        assert reply.status == 404 and reply.fault()[0] == "itemNotFound", reply.body
    assert world.legacy.requests == []
    assert world.legacy.pair(PROJECT, legacy_id) is not None  # its stale copy is untouched
