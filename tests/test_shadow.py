"""Shadow mode: the legacy endpoint answers a shadow group's calls exactly as passthrough would, and the
shim compares, off the client's path, what SDRS would have answered (reads) or done (actions).

The world (tests/migration_world.py): the SDRS simulator holds the protection groups, the legacy
stand-in their faithful legacy copies; SHADOW_RCG is in mode shadow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import GO_HEADERS, GROUP, PROJECT, RCG, TOKEN, ShimFactory, call, start_server, write_mappings
from migration_world import (
    GROUPS,
    PAIRS,
    READ_HEADERS,
    SHADOW_GROUP,
    SHADOW_RCG,
    MigrationWorld,
    captured_logs,
    entry,
    log_records,
    metric,
    migration_world,
)
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.simulator.faults import Fault
from shim.web.app import build_app
from shim.web.shim_state import STATE

SHADOW_ONLY = [entry(SHADOW_RCG, SHADOW_GROUP, "shadow")]


@pytest.fixture
async def world(make_shim: ShimFactory) -> AsyncIterator[MigrationWorld]:
    async for built in migration_world(make_shim):
        yield built


@pytest.fixture
async def shadow_only(make_shim: ShimFactory) -> AsyncIterator[MigrationWorld]:
    """A project whose only mapped group is in shadow: every call of it is relayed."""
    async for built in migration_world(make_shim, mapping=SHADOW_ONLY):
        yield built


def compared(group: dict[str, Any]) -> int:
    return sum(group["shadow"]["comparisons"].values())


def shadow_pair(world: MigrationWorld) -> str:
    return world.legacy.group(PROJECT, SHADOW_RCG).replication_ids[0]


def read_path(world: MigrationWorld, kind: str) -> str:
    return {
        "group": f"{GROUPS}/{SHADOW_RCG}",
        "groups": GROUPS,
        "pair": f"{PAIRS}/{shadow_pair(world)}",
        "pairs": PAIRS,
        "pairs of the group": f"{PAIRS}?replication_consistency_group_id={SHADOW_RCG}",
    }[kind]


async def same_as_plain_passthrough(world: MigrationWorld, path: str) -> None:
    """The shim's answer is the legacy endpoint's own: status, type and body byte for byte."""
    through_shim = await world.get(path)
    direct = await call("GET", world.legacy_url + path, headers=READ_HEADERS)
    assert through_shim.status == direct.status == 200, through_shim.body
    assert through_shim.headers["Content-Type"] == direct.headers["Content-Type"]
    assert through_shim.body == direct.body


# -- reads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, trigger", [("group", "GET group"), ("groups", "GET groups"), ("pair", "GET pair"),
                                           ("pairs", "GET pairs"), ("pairs of the group", "GET pairs")])
@pytest.mark.parametrize("layout", ["beside an sdrs group", "shadow only"])
async def test_every_read_that_shows_an_agreeing_group_is_answered_by_legacy_and_compares_as_a_match(
    make_shim: ShimFactory, layout, kind, trigger
):
    mapping = SHADOW_ONLY if layout == "shadow only" else None
    async for world in migration_world(make_shim, mapping=mapping):
        path = read_path(world, kind)
        if layout == "shadow only":
            await same_as_plain_passthrough(world, path)  # relayed; with an sdrs group, lists are merged
        else:
            assert (await world.get(path)).status == 200
        found = await world.wait_for(SHADOW_RCG, lambda group: compared(group) >= 1)

        assert found["shadow"]["comparisons"] == {"match": 1, "mismatch": 0, "error": 0}
        assert found["shadow"]["mismatched_fields"] == {}
        assert found["shadow"]["last"][0]["trigger"] == trigger
        assert await metric(world.shim, "shim_shadow_comparisons_total", result="match") == 1
        assert await metric(world.shim, "shim_shadow_fields_total", field="production_volumes", result="match") == 1


def seed_status(world: MigrationWorld) -> None:
    world.legacy.group(PROJECT, SHADOW_RCG).status = "failovered"


def seed_missing_pair(world: MigrationWorld) -> None:
    """The legacy copy has a third pair that SDRS does not protect."""
    extra = world.legacy.add_pair(PROJECT, group_id=SHADOW_RCG, replication_status="active", progress=100)
    world.legacy.group(PROJECT, SHADOW_RCG).replication_ids.append(extra.id)


def seed_production_site(world: MigrationWorld) -> None:
    world.legacy.group(PROJECT, SHADOW_RCG).priority_station = "eu-de-02"


@pytest.mark.parametrize("seed, field, legacy_value, sdrs_value", [
    (seed_status, "status", "failovered", "available"),
    (seed_missing_pair, "pair_count", 3, 2),
    (seed_production_site, "priority_station", "eu-de-02", "eu-de-01"),
])
async def test_a_seeded_disagreement_is_reported_with_both_values(world, seed, field, legacy_value, sdrs_value):
    seed(world)
    with captured_logs() as logs:
        reply = await world.get(f"{GROUPS}/{SHADOW_RCG}")
        found = await world.wait_for(SHADOW_RCG, lambda group: compared(group) >= 1)

    assert reply.status == 200 and reply.json()["replication_consistency_group"]["id"] == SHADOW_RCG
    last = found["shadow"]["last"][0]
    assert last["result"] == "mismatch"
    assert last["differences"][field] == {"legacy": legacy_value, "sdrs": sdrs_value}
    assert found["shadow"]["mismatched_fields"][field] == 1
    (line,) = [record for record in log_records(logs) if record["logger"] == "shim.shadow"]
    assert line["message"] == "shadow comparison: mismatch" and line["level"] == "warning"
    assert line["differences"][field] == {"legacy": legacy_value, "sdrs": sdrs_value}
    assert (line["rcg_id"], line["protection_group_id"]) == (SHADOW_RCG, SHADOW_GROUP)
    assert TOKEN not in logs.getvalue()
    assert await metric(world.shim, "shim_shadow_fields_total", field=field, result="mismatch") == 1
    assert await metric(world.shim, "shim_shadow_comparisons_total", result="mismatch") == 1


async def test_a_missing_pair_shows_as_the_production_volume_sdrs_lacks(world):
    seed_missing_pair(world)
    extra = world.legacy.pair(PROJECT, world.legacy.group(PROJECT, SHADOW_RCG).replication_ids[-1])
    await world.get(f"{PAIRS}?replication_consistency_group_id={SHADOW_RCG}")
    found = await world.wait_for(SHADOW_RCG, lambda group: compared(group) >= 1)

    volumes = found["shadow"]["last"][0]["differences"]["production_volumes"]
    assert set(volumes["legacy"]) - set(volumes["sdrs"]) == {extra.volume_ids[0]}
    assert len(volumes["sdrs"]) == 2


@pytest.mark.parametrize("outage", [Fault(reset=True, times=None), Fault(status=503, times=None,
                                    body={"error": {"code": "SDRS.0008", "message": "try again"}})])
async def test_an_sdrs_outage_during_shadow_changes_no_client_answer(shadow_only, outage):
    shadow_only.sim.inject(outage)
    for kind in ("group", "groups", "pair", "pairs", "pairs of the group"):
        await same_as_plain_passthrough(shadow_only, read_path(shadow_only, kind))
    found = await shadow_only.wait_for(SHADOW_RCG, lambda group: compared(group) >= 5)

    assert found["shadow"]["comparisons"] == {"match": 0, "mismatch": 0, "error": 5}
    assert "SDRS" in found["shadow"]["last"][0]["error"]
    assert shadow_only.sim.requests  # SDRS was asked (and failed), after each answer


async def test_nothing_but_gets_reach_sdrs_for_a_shadow_group(world):
    for kind in ("group", "groups", "pair", "pairs"):
        await world.get(read_path(world, kind))
    for action in ("stop", "sync", "failover", "reverse", "reprotect"):
        body = b'{"os-%s-replication-consistency-group": null}' % action.encode()
        await call("POST", f"{world.shim}{GROUPS}/{SHADOW_RCG}/action", headers=GO_HEADERS, body=body)
    await world.wait_for(SHADOW_RCG, lambda group: sum(group["shadow"]["dry_runs"].values()) >= 5)

    assert world.sim.write_calls == [] and world.sim.action_calls == []
    assert {method for method, _, _ in world.sim.requests} == {"GET"}


async def test_one_comparison_per_group_per_interval(make_shim: ShimFactory):
    async for world in migration_world(make_shim, shadow={"interval_seconds": 3600}):
        for _ in range(3):
            assert (await world.get(f"{GROUPS}/{SHADOW_RCG}")).status == 200
        await world.wait_for(SHADOW_RCG, lambda group: compared(group) >= 1)
        await world.get(GROUPS)

        assert compared(await world.group_report(SHADOW_RCG)) == 1
        assert await metric(world.shim, "shim_shadow_skipped_total", reason="rate_limited") == 3


async def test_an_answer_over_the_cap_is_relayed_whole_and_not_compared(make_shim: ShimFactory):
    async for world in migration_world(make_shim, mapping=SHADOW_ONLY, shadow={"max_answer_bytes": 1024}):
        direct = await call("GET", world.legacy_url + GROUPS, headers=READ_HEADERS)
        assert len(direct.body) > 1024
        await same_as_plain_passthrough(world, GROUPS)
        await same_as_plain_passthrough(world, f"{GROUPS}/{SHADOW_RCG}")  # small: compared
        await world.wait_for(SHADOW_RCG, lambda group: compared(group) >= 1)

        assert await metric(world.shim, "shim_shadow_skipped_total", reason="too_large") == 1
        assert compared(await world.group_report(SHADOW_RCG)) == 1


async def test_work_beyond_the_concurrency_bound_is_dropped_and_counted(make_shim: ShimFactory):
    async for world in migration_world(make_shim, mapping=SHADOW_ONLY, shadow={"max_concurrent": 1,
                                                                                 "interval_seconds": 0}):
        world.sim.inject(Fault(path_suffix=f"/server-groups/{SHADOW_GROUP}", hang=True, times=None))
        await same_as_plain_passthrough(world, f"{GROUPS}/{SHADOW_RCG}")  # its comparison hangs on SDRS
        await same_as_plain_passthrough(world, f"{GROUPS}/{SHADOW_RCG}")  # no room: dropped

        assert await metric(world.shim, "shim_shadow_skipped_total", reason="busy") == 1


async def test_shadow_work_still_running_is_cancelled_and_awaited_at_shutdown(tmp_path: Path, make_shim: ShimFactory):
    async for world in migration_world(make_shim, mapping=SHADOW_ONLY):
        world.sim.inject(Fault(path_suffix=f"/server-groups/{SHADOW_GROUP}", hang=True, times=None))
        settings = settings_from_mapping(
            {"upstreams": {"sdrs": world.sdrs_url, "legacy": world.legacy_url}, "state": {"backend": "memory"},
             "mappings": str(write_mappings(tmp_path / "own", SHADOW_ONLY))}, source="test", base_dir=tmp_path)
        app = build_app(settings, load_mappings(settings.mappings))
        runner, url = await start_server(app)
        with captured_logs() as logs:
            reply = await call("GET", f"{url}{GROUPS}/{SHADOW_RCG}", headers=READ_HEADERS)
            assert reply.status == 200
            for _ in range(500):  # until the comparison hangs on its SDRS read
                if any(path.endswith(f"/server-groups/{SHADOW_GROUP}") for _, path, _ in world.sim.requests):
                    break
                await asyncio.sleep(0.01)
            assert app[STATE].shadow.running == 1
            await runner.cleanup()

        assert app[STATE].shadow.running == 0
        assert "shadow work failed" not in logs.getvalue()


# -- actions: a dry run against live SDRS state ----------------------------------------------------


async def dry_run_of(world: MigrationWorld, body: bytes) -> tuple[int, dict[str, Any]]:
    before = sum((await world.group_report(SHADOW_RCG))["shadow"]["dry_runs"].values())
    reply = await call("POST", f"{world.shim}{GROUPS}/{SHADOW_RCG}/action", headers=GO_HEADERS, body=body)
    found = await world.wait_for(SHADOW_RCG, lambda group: sum(group["shadow"]["dry_runs"].values()) > before)
    return reply.status, found["shadow"]["last_dry_run"]


async def test_a_shadow_action_is_served_by_legacy_and_records_the_sdrs_calls_it_would_have_sent(world):
    status, dry_run = await dry_run_of(world, b'{"os-stop-replication-consistency-group":null}\n')

    assert status == 200
    assert world.legacy.group(PROJECT, SHADOW_RCG).replication_status == "active-stopped"  # legacy did it
    assert dry_run["action"] == "os-stop-replication-consistency-group"
    assert (dry_run["legacy_status"], dry_run["would_answer"], dry_run["outcome"]) == (200, 200, "agree")
    assert (dry_run["precondition"], dry_run["sdrs_status"]) == ("satisfied", "protected")
    assert dry_run["planned_calls"] == [{"method": "POST", "path": f"/v1/{PROJECT}/server-groups/{SHADOW_GROUP}/action",
                                         "body": {"stop-server-group": {}}}]
    assert world.sim.write_calls == []


async def test_a_dry_run_states_an_unsatisfied_precondition_and_the_400_sdrs_mode_would_give(world):
    status, dry_run = await dry_run_of(world, b'{"os-reprotect-replication-consistency-group":null}\n')

    assert status == 400  # the legacy copy is available, not failovered: the legacy endpoint refuses too
    assert (dry_run["would_answer"], dry_run["outcome"], dry_run["precondition"]) == (400, "agree", "not satisfied")
    assert "status must be failovered" in dry_run["message"] and dry_run["planned_calls"] == []


async def test_a_dry_run_that_disagrees_with_the_legacy_answer_is_reported(world):
    sdrs_group = {"server_group": {"id": SHADOW_GROUP, "name": "pg-shadow", "status": "failed-over",
                                   "priority_station": "target", "source_availability_zone": "eu-de-01",
                                   "target_availability_zone": "eu-de-02"}}
    world.sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{SHADOW_GROUP}", status=200, body=sdrs_group,
                           times=None))
    status, dry_run = await dry_run_of(world, b'{"os-failover-replication-consistency-group":null}\n')

    assert status == 200
    assert (dry_run["would_answer"], dry_run["outcome"], dry_run["sdrs_status"]) == (400, "disagree", "failed-over")
    assert await metric(world.shim, "shim_shadow_dry_runs_total", result="disagree") == 1
    assert world.sim.write_calls == []


async def test_a_body_sdrs_mode_would_refuse_is_judged_without_reading_sdrs(world):
    status, dry_run = await dry_run_of(world, b'{"os-unknown-action": null}')

    assert status == 400
    assert (dry_run["would_answer"], dry_run["precondition"], dry_run["outcome"]) == (400, "not checked", "agree")
    assert world.sim.requests == []


async def test_shadow_work_for_another_group_never_touches_an_sdrs_groups_answer(world):
    reply = await call("POST", f"{world.shim}{GROUPS}/{RCG}/action", headers=GO_HEADERS,
                       body=b'{"os-reprotect-replication-consistency-group":null}\n')
    assert reply.status == 200
    assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    assert (await world.group_report(RCG))["shadow"]["dry_runs"] == {"agree": 0, "disagree": 0, "error": 0}
