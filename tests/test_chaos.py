"""The chaos campaign's CI mode (benchmarks/chaos.py, issue 19): real `shim serve` processes (one with
`--workers 2`) sharing a real redis-server, in front of the SDRS simulator and the legacy stand-in, under
concurrent clients while a seeded injector kills, stops and restarts shims, restarts Redis and makes SDRS
slow, reset, 5xx, 429 and fail jobs. Fixed seed; the checker must find no violation.

The faults the current code does not survive are not in the default set (see benchmarks/CHAOS.md):
clock skew (issue 19, being fixed), a pair DELETE whose outcome the shim cannot know (reset after SDRS
acted, or too slow), and mode flips by mapping file + SIGHUP (issue 19's fleet switch).

First, the checker itself: it must see a duplicate and a wrong owner when there is one.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import chaos  # noqa: E402

from shim.legacy_sim import LegacySimSettings  # noqa: E402
from shim.simulator import SimulatorSettings  # noqa: E402

CI_SEED = 1919


def small_world() -> chaos.World:
    config = chaos.ChaosConfig(sdrs_groups=1, legacy_mapped_groups=1, unmapped_groups=1)
    sdrs = chaos.ChaosSdrs(SimulatorSettings(job_init_seconds=60, job_run_seconds=60))
    legacy = chaos.ChaosLegacy(LegacySimSettings())
    groups = chaos.seed_groups(config, sdrs, legacy)
    return chaos.World(config, sdrs, legacy, groups, [])


def post(world: chaos.World, group: chaos.GroupSpec, request_id: str, t: float, job: bool) -> chaos.Logged:
    job_id = world.sdrs.state.submit_group_action(chaos.PROJECT, group.pg or "", "start-server-group").job_id \
        if job else None
    entry = chaos.Logged("sdrs", t, "POST", f"/v1/{chaos.PROJECT}/server-groups/{group.pg}/action", "", request_id,
                         status=200 if job else 400, t_end=t + 0.01, job_id=job_id, action="start-server-group")
    world.sdrs.log.append(entry)
    return entry


def checker(world: chaos.World) -> chaos.Checker:
    return chaos.Checker(world, {group.rcg: group.mode for group in world.groups})


def test_the_checker_counts_a_second_post_while_the_first_job_is_init():
    world = small_world()
    sdrs_group = next(group for group in world.groups if group.mode == "sdrs")
    now = world.sdrs.now()
    post(world, sdrs_group, "first", now, job=True)  # its job is INIT for a minute
    post(world, sdrs_group, "second", now + 1, job=False)  # SDRS refused it: still a duplicate POST

    (found,) = checker(world).duplicates()

    assert (found["earlier"], found["later"], found["previous_job_state"]) == ("first", "second", "INIT")


def test_the_checker_leaves_one_update_s_pair_deletes_and_writes_after_the_job_alone():
    world = small_world()
    sdrs_group = next(group for group in world.groups if group.mode == "sdrs")
    t = world.sdrs.now()
    for pair in sdrs_group.sdrs_pairs[:2]:  # one update removing two pairs: one action
        world.sdrs.log.append(chaos.Logged("sdrs", t, "DELETE", f"/v1/{chaos.PROJECT}/replications/{pair}", "",
                                           "update-1", status=200, t_end=t + 0.01))
    post(world, sdrs_group, "later", t + 1, job=False)  # the deletes had no job: over when answered

    assert checker(world).duplicates() == []


def test_the_checker_counts_calls_that_reach_the_side_not_owning_the_group():
    world = small_world()
    by_mode = {group.mode: group for group in world.groups}
    t = world.sdrs.now()
    world.legacy.log.append(chaos.Logged("legacy", t, "GET", f"{chaos.GROUPS_PATH}/{by_mode['sdrs'].rcg}", "", "a"))
    world.sdrs.log.append(chaos.Logged("sdrs", t, "GET", f"/v1/{chaos.PROJECT}/server-groups/{by_mode['legacy'].pg}",
                                       "", "b"))
    world.legacy.log.append(chaos.Logged("legacy", t, "GET", f"{chaos.GROUPS_PATH}/{by_mode['legacy'].rcg}", "", "c"))
    world.legacy.log.append(chaos.Logged("legacy", t, "GET", f"{chaos.GROUPS_PATH}/{by_mode['unmapped'].rcg}", "",
                                         "d"))

    found = checker(world).wrong_owner()

    assert sorted(entry["request_id"] for entry in found) == ["a", "b"]


async def test_the_ci_campaign_finds_no_violation():
    config = chaos.ChaosConfig(seed=CI_SEED, preset="ci", **chaos.PRESETS["ci"])

    report = await chaos.run_campaign(config)

    print(chaos.table(report))
    assert report["violations"] == {"duplicate_sdrs_actions": 0, "wrong_owner": 0, "contradicting_answers": 0}, \
        report["details"]
    # the campaign did what it claims: actions reached SDRS and faults were injected
    assert report["sdrs_action_posts"] > 0 and report["faults_injected"] > 0
    assert report["actions_sent"] > report["sdrs_action_posts"]
