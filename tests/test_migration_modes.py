"""Modes per group (`legacy` | `shadow` | `sdrs`) and per project: who serves a mapped group, and a
fully migrated project whose legacy RCG API is switched off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from conftest import GO_HEADERS, GROUP, PROJECT, RCG, REPROTECT_BODY, ShimFactory, call, write_mappings
from migration_world import (
    GROUPS,
    PAIRS,
    PARKED_GROUP,
    PARKED_RCG,
    READ_HEADERS,
    SHADOW_GROUP,
    SHADOW_RCG,
    MigrationWorld,
    entry,
    migration_world,
)
from shim.mappings import load_mappings
from shim.validation import ConfigError

UNMAPPED_RCG = "9e4ca051-6f73-4182-8d94-b5c6d7e8f901"
STOP_BODY = b'{"os-stop-replication-consistency-group":null}\n'


# -- the mapping file --------------------------------------------------------------------------


def test_each_entry_gets_its_own_mode_else_its_projects_else_sdrs(tmp_path: Path):
    other_project = "1f2e3d4c5b6a79880123456789abcdef"
    directory = write_mappings(tmp_path, [
        entry(RCG, GROUP),
        entry(SHADOW_RCG, SHADOW_GROUP, "legacy"),
        entry(PARKED_RCG, PARKED_GROUP, project=other_project),
    ], projects=[{"project_id": other_project.upper(), "mode": "shadow"}])
    mappings = load_mappings(directory)

    modes = {entry.rcg_id: (entry.mode, entry.mode_source) for entry in mappings.groups.values()}
    assert modes == {RCG: ("sdrs", "default"), SHADOW_RCG: ("legacy", "entry"), PARKED_RCG: ("shadow", "project")}
    assert mappings.group(PROJECT, RCG) is not None  # SDRS serves only the sdrs entry
    assert mappings.group(PROJECT, SHADOW_RCG) is None and mappings.group(other_project, PARKED_RCG) is None
    assert mappings.entry(other_project, PARKED_RCG).mode == "shadow"


@pytest.mark.parametrize("document, where", [
    ({"consistency_groups": [{**entry(RCG, GROUP), "mode": "canary"}]}, "consistency_groups[0].mode"),
    ({"projects": [{"project_id": PROJECT, "mode": "shadow"}, {"project_id": PROJECT.upper(), "mode": "sdrs"}]},
     "projects[1].project_id: 0970dd7a1300f5672ff2c003c60ae115 already has its default mode in projects[0]"),
    ({"projects": [{"project_id": PROJECT, "mode": "sdrs"}],
      "consistency_groups": [entry(RCG, GROUP), entry(SHADOW_RCG, SHADOW_GROUP, "shadow")]},
     "consistency_groups[1].mode: shadow is not possible in project"),
    ({"projects": [{"project_id": "not-a-project", "mode": "sdrs"}]}, "projects[0].project_id"),
    ({"projects": [{"project_id": PROJECT}]}, "projects[0].mode: required key is missing"),
])
def test_a_bad_mode_or_project_default_names_the_file_entry_and_field(tmp_path: Path, document, where):
    (tmp_path / "consistency-groups.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as raised:
        load_mappings(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / 'consistency-groups.yaml'}: ")
    assert where in str(raised.value)


# -- legacy and shadow groups belong to the legacy endpoint ----------------------------------------


@pytest.fixture
async def world(make_shim: ShimFactory) -> AsyncIterator[MigrationWorld]:
    async for built in migration_world(make_shim):
        built.legacy.requests.clear()
        yield built


@pytest.mark.parametrize("rcg", [PARKED_RCG, SHADOW_RCG])
async def test_a_legacy_or_shadow_groups_calls_are_answered_by_the_legacy_endpoint_as_sent(world, rcg):
    group = await world.get(f"{GROUPS}/{rcg.upper()}")
    action = await call("POST", f"{world.shim}{GROUPS}/{rcg}/action", headers=GO_HEADERS, body=STOP_BODY)

    assert group.status == 200 and group.json()["replication_consistency_group"]["name"] == f"legacy-{rcg[:8]}"
    assert action.status == 200
    relayed = [(seen.method, seen.path, seen.body) for seen in world.legacy.requests
               if not seen.path.startswith(PAIRS)]  # the shadow comparison's own read of the pairs aside
    assert relayed == [("GET", f"{GROUPS}/{rcg.upper()}", b""), ("POST", f"{GROUPS}/{rcg}/action", STOP_BODY)]
    assert world.legacy.group(PROJECT, rcg).replication_status == "active-stopped"  # the legacy side acted
    assert world.sim.write_calls == [] and world.sim.action_calls == []


async def test_nothing_at_all_reaches_sdrs_for_a_legacy_mode_group(make_shim: ShimFactory):
    async for world in migration_world(make_shim, mapping=[entry(PARKED_RCG, PARKED_GROUP, "legacy")]):
        pair_id = world.legacy.group(PROJECT, PARKED_RCG).replication_ids[0]
        for path in (f"{GROUPS}/{PARKED_RCG}", GROUPS, PAIRS, f"{PAIRS}/{pair_id}",
                     f"{PAIRS}?replication_consistency_group_id={PARKED_RCG}"):
            assert (await world.get(path)).status == 200, path
        reply = await call("POST", f"{world.shim}{GROUPS}/{PARKED_RCG}/action", headers=GO_HEADERS, body=STOP_BODY)
        assert reply.status == 200
        assert world.sim.requests == []


async def test_lists_show_legacy_and_shadow_groups_as_the_legacy_endpoint_does(world):
    groups = {item["id"]: item for item in (await world.get(GROUPS)).json()["replication_consistency_groups"]}

    assert set(groups) == {RCG, SHADOW_RCG, PARKED_RCG}
    assert groups[RCG]["status"] == "failovered" and groups[RCG]["name"].startswith("pg-")  # from SDRS
    assert groups[SHADOW_RCG]["name"] == f"legacy-{SHADOW_RCG[:8]}"  # the legacy endpoint's own items
    assert groups[PARKED_RCG]["name"] == f"legacy-{PARKED_RCG[:8]}"


async def test_the_sdrs_entry_keeps_todays_behaviour(world):
    reply = await call("POST", f"{world.shim}{GROUPS}/{RCG}/action", headers=GO_HEADERS, body=REPROTECT_BODY)
    assert reply.status == 200
    assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    assert world.legacy.requests == []


# -- a fully migrated project ----------------------------------------------------------------------


@pytest.fixture
async def migrated(make_shim: ShimFactory) -> AsyncIterator[MigrationWorld]:
    async for built in migration_world(make_shim, mapping=[entry(RCG, GROUP)],
                                       projects=[{"project_id": PROJECT, "mode": "sdrs"}]):
        built.legacy.requests.clear()
        yield built


async def test_a_fully_migrated_projects_lists_come_from_sdrs_alone(migrated):
    groups = (await migrated.get(GROUPS)).json()["replication_consistency_groups"]
    pairs = (await migrated.get(PAIRS)).json()["replications"]

    assert [group["id"] for group in groups] == [RCG]
    assert sorted(pair["id"] for pair in pairs) == sorted(migrated.sim.pair_ids(PROJECT, GROUP))
    assert migrated.legacy.requests == []


@pytest.mark.parametrize("method, path, body", [
    ("GET", f"{GROUPS}/{SHADOW_RCG}", None),
    ("GET", f"{GROUPS}/{UNMAPPED_RCG}", None),
    ("PUT", f"{GROUPS}/{UNMAPPED_RCG}", b'{"replication_consistency_group": {"name": "x"}}'),
    ("DELETE", f"{GROUPS}/{UNMAPPED_RCG}", None),
    ("POST", f"{GROUPS}/{UNMAPPED_RCG}/action", STOP_BODY),
    ("GET", f"{PAIRS}/{UNMAPPED_RCG}", None),
    ("DELETE", f"{PAIRS}/{UNMAPPED_RCG}", None),
])
async def test_an_unmapped_id_in_a_fully_migrated_project_is_a_legacy_404(migrated, method, path, body):
    reply = await call(method, migrated.shim + path, headers=GO_HEADERS, body=body)

    assert reply.status == 404, reply.body
    name, inner = reply.fault()
    assert (name, inner["code"]) == ("itemNotFound", "EVS.5404")
    assert migrated.legacy.requests == []


async def test_a_create_in_a_fully_migrated_project_is_refused_and_names_sdrs(migrated):
    body = b'{"replication_consistency_group": {"name": "new", "replication_ids": []}}'
    reply = await call("POST", migrated.shim + GROUPS, headers=GO_HEADERS, body=body)

    assert reply.status == 400, reply.body  # golangsdk shows a 400's message (a 409's it hides)
    assert f"POST /v1/{PROJECT}/server-groups" in reply.fault()[1]["message"]
    assert migrated.legacy.requests == []


async def test_a_fully_migrated_projects_other_evs_calls_still_pass_through(migrated):
    reply = await call("GET", f"{migrated.shim}/v2/{PROJECT}/volumes", headers=READ_HEADERS)
    assert reply.status == 404  # the stand-in's answer for a path it does not serve: relayed
    assert [seen.path for seen in migrated.legacy.requests] == [f"/v2/{PROJECT}/volumes"]


async def test_an_empty_fully_migrated_project_lists_nothing_without_asking_anyone(make_shim: ShimFactory):
    elsewhere = entry(RCG, GROUP, project="1f2e3d4c5b6a79880123456789abcdef")
    migrated_project = [{"project_id": PROJECT, "mode": "sdrs"}]
    async for world in migration_world(make_shim, mapping=[elsewhere], projects=migrated_project):
        world.legacy.requests.clear()
        reply = await world.get(GROUPS)
        assert reply.status == 200 and reply.json() == {"replication_consistency_groups": []}
        assert world.legacy.requests == [] and world.sim.requests == []
