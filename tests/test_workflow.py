"""The legacy failover -> reprotect workflow against SDRS, end to end over loopback.

A golangsdk/Terraform client fails a group over, reads `failovered`, reprotects (200), then polls the
group until `replication_status` goes copying -> active. Every read is checked as the Go client
decodes it.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import GO_HEADERS, PROJECT, RCG, TOKEN, call, start_server
from golang_types import assert_go_decodes_group, assert_go_decodes_pair
from shim.simulator import SdrsSimulator, SimulatorSettings

GROUP_ID = "2b7e4c1a-9d3f-4e2b-8a6c-5f1d0e9b7a34"
MAPPING = [{"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP_ID}]
GET_HEADERS = {"Accept": "application/json", "User-Agent": "golangsdk/2.0.0", "X-Auth-Token": TOKEN}


def action_body(key: str) -> bytes:
    return b'{"' + key.encode() + b'":null}\n'


@pytest.fixture
async def protected_group():
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.3))
    sim.add_protection_group(PROJECT, GROUP_ID, status="protected", pair_count=2,
                             source_availability_zone="eu-de-01", target_availability_zone="eu-de-02",
                             priority_station="source")
    runner, url = await start_server(sim.app())
    yield sim, url
    await runner.cleanup()


async def read_group(shim: str) -> dict:
    reply = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}",
                       headers=GET_HEADERS)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    group = reply.json()["replication_consistency_group"]
    assert_go_decodes_group(group)
    return group


async def poll_until(shim: str, wanted: tuple[str, str], allowed: set[tuple[str, str]], seen: list) -> dict:
    """Read the group until (status, replication_status) == wanted; every reading must be allowed."""
    for _ in range(200):
        group = await read_group(shim)
        state = (group["status"], group["replication_status"])
        if not seen or seen[-1] != state:
            seen.append(state)
        assert state == wanted or state in allowed, seen
        if state == wanted:
            return group
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {wanted}: {seen}")


@pytest.mark.parametrize("completion", ["accepted", "confirmed"])
async def test_failover_then_reprotect_reads_as_the_legacy_workflow(protected_group, make_shim, completion):
    sim, sdrs_url = protected_group
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING,
                           actions={"completion": completion, "poll_initial_seconds": 0.02,
                                    "poll_max_seconds": 0.05, "confirm_timeout_seconds": 5})
    action = f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"
    seen: list[tuple[str, str]] = []

    before = await read_group(shim)
    assert (before["status"], before["replication_status"]) == ("available", "active")
    assert before["priority_station"] == "eu-de-01"
    assert before["id"] == RCG
    assert len(before["replication_ids"]) == 2

    failover = await call("POST", action, body=action_body("os-failover-replication-consistency-group"),
                          headers=GO_HEADERS)
    assert (failover.status, failover.body) == (200, b"")
    failed_over = await poll_until(shim, ("failovered", "active-stopped"),
                                   {("available", "active"), ("failovering", "active-stopped")}, seen)
    assert failed_over["priority_station"] == "eu-de-02"  # the DR site is production now

    reprotect = await call("POST", action, body=action_body("os-reprotect-replication-consistency-group"),
                           headers=GO_HEADERS)
    assert (reprotect.status, reprotect.body) == (200, b"")
    seen.clear()  # never `failovered` again once the reprotect got its 200, whatever the completion mode
    await poll_until(shim, ("available", "copying"), set(), seen)
    done = await poll_until(shim, ("available", "active"), {("available", "copying")}, seen)

    assert done["priority_station"] == "eu-de-02"
    assert seen[-2:] == [("available", "copying"), ("available", "active")]
    assert [key for _, _, key in sim.action_calls] == ["failover-server-group", "start-server-group"]


async def test_right_after_a_reprotect_the_group_never_reads_failovered(make_shim):
    """SDRS keeps `failed-over` while its job is INIT; the client that got its 200 must not see it."""
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=30.0, job_run_seconds=1.0))
    sim.add_protection_group(PROJECT, GROUP_ID, status="failed-over", pair_count=1)
    runner, sdrs_url = await start_server(sim.app())
    try:
        shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)
        assert (await read_group(shim))["status"] == "failovered"
        action = f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"
        reply = await call("POST", action, body=action_body("os-reprotect-replication-consistency-group"),
                           headers=GO_HEADERS)
        assert reply.status == 200

        group = await read_group(shim)

        assert sim.group(PROJECT, GROUP_ID).status == "failed-over"  # SDRS itself has not started
        assert (group["status"], group["replication_status"]) == ("available", "copying")
        listed = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups",
                            headers=GET_HEADERS)
        assert [(g["status"], g["replication_status"]) for g in listed.json()["replication_consistency_groups"]] \
            == [("available", "copying")]
    finally:
        await runner.cleanup()


async def test_pairs_of_the_group_read_in_the_legacy_pair_shape(protected_group, make_shim):
    sim, sdrs_url = protected_group
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)
    group = await read_group(shim)

    for pair_id in group["replication_ids"]:
        reply = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replications/{pair_id}", headers=GET_HEADERS)
        assert reply.status == 200
        pair = reply.json()["replication"]
        assert_go_decodes_pair(pair)
        assert pair["id"] == pair_id
        assert pair["replication_consistency_group_id"] == RCG
        assert (pair["status"], pair["replication_status"], pair["progress"]) == ("available", "active", "100")
        assert len(pair["volume_ids"].split(",")) == 2
        assert pair["priority_station"] == "eu-de-01"
        assert pair["record_metadata"] == '{"volume_size": 10, "volume_type": "SATA", "multiattach": false}'
