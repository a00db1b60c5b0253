"""Each legacy RCG action -> its SDRS action, with its legacy precondition, and both completion modes."""

from __future__ import annotations

import asyncio

import pytest

from conftest import GO_HEADERS, PROJECT, RCG, call, start_server
from shim.simulator import SdrsSimulator, SimulatorSettings

GROUP_ID = "9c2d7e15-3a4b-4f6c-8d9e-0a1b2c3d4e5f"
MAPPING = [{"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP_ID}]
ACTION_URL = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"

SYNC = "os-sync-replication-consistency-group"
STOP = "os-stop-replication-consistency-group"
FAILOVER = "os-failover-replication-consistency-group"
REVERSE = "os-reverse-replication-consistency-group"
REPROTECT = "os-reprotect-replication-consistency-group"
EXTEND = "os-extend-replication-volumes"


def body(key: str) -> bytes:
    return b'{"' + key.encode() + b'":null}\n'


async def running_simulator(status: str, *, init: float = 0.02, run: float = 0.1, **group: object):
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=init, job_run_seconds=run))
    sim.add_protection_group(PROJECT, GROUP_ID, status=status, pair_count=2, **group)
    runner, url = await start_server(sim.app())
    return sim, url, runner


@pytest.fixture
async def simulators():
    runners = []

    async def start(status: str, **options: object):
        sim, url, runner = await running_simulator(status, **options)
        runners.append(runner)
        return sim, url

    yield start
    for runner in runners:
        await runner.cleanup()


async def wait_for_status(sim: SdrsSimulator, status: str) -> None:
    for _ in range(100):
        if sim.group(PROJECT, GROUP_ID).status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"group never became {status}: {sim.group(PROJECT, GROUP_ID).status}")


# (legacy key, SDRS status before, SDRS action sent, SDRS status after the job)
ALLOWED = [
    (SYNC, "available", "start-server-group", "protected"),
    (SYNC, "error-starting", "start-server-group", "protected"),
    (STOP, "protected", "stop-server-group", "available"),
    (STOP, "error-stopping", "stop-server-group", "available"),
    (FAILOVER, "protected", "failover-server-group", "failed-over"),
    (FAILOVER, "error-failing-over", "failover-server-group", "failed-over"),
    (FAILOVER, "error-reversing", "failover-server-group", "failed-over"),
    (REVERSE, "protected", "reverse-server-group", "protected"),
    (REVERSE, "error-reversing", "reverse-server-group", "protected"),
    (REPROTECT, "failed-over", "start-server-group", "protected"),
    (REPROTECT, "error-reprotecting", "start-server-group", "protected"),
]


@pytest.mark.parametrize(("key", "before", "sdrs_action", "after"), ALLOWED)
async def test_action_is_translated_to_its_sdrs_action(simulators, make_shim, key, before, sdrs_action, after):
    sim, sdrs_url = await simulators(before)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)

    reply = await call("POST", shim + ACTION_URL, body=body(key), headers=GO_HEADERS)

    assert (reply.status, reply.body) == (200, b"")
    assert sim.action_calls == [(PROJECT, GROUP_ID, sdrs_action)]
    await wait_for_status(sim, after)


# Every SDRS status in which the legacy action would not do what it says (or SDRS would refuse it).
SDRS_STATUSES = ["available", "protected", "failed-over", "error-starting", "error-stopping",
                 "error-reversing", "error-failing-over", "error-reprotecting", "reprotecting", "starting"]


# Pause and sync have no legacy precondition ("None"): a pause of a paused group, a sync of a
# replicating one succeed with nothing sent, as the legacy endpoint answered them.
ALREADY_DONE = [(STOP, status) for status in ("available", "stopping", "failed-over")] + [
    (SYNC, status) for status in ("protected", "starting", "reprotecting")]
REFUSED = [
    (key, status)
    for key in (SYNC, STOP, FAILOVER, REVERSE, REPROTECT)
    for status in SDRS_STATUSES
    if (key, status) not in {(allowed_key, before) for allowed_key, before, _, _ in ALLOWED}
    and (key, status) not in ALREADY_DONE
]


@pytest.mark.parametrize(("key", "status"), ALREADY_DONE)
async def test_a_pause_of_a_paused_group_or_a_sync_of_a_replicating_one_is_200_and_sends_nothing(
    simulators, make_shim, key, status
):
    sim, sdrs_url = await simulators(status)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)

    reply = await call("POST", shim + ACTION_URL, body=body(key), headers=GO_HEADERS)

    assert (reply.status, reply.body) == (200, b"")
    assert sim.action_calls == []


@pytest.mark.parametrize(("key", "status"), REFUSED)
async def test_action_in_a_wrong_status_is_400_and_nothing_is_sent(simulators, make_shim, key, status):
    sim, sdrs_url = await simulators(status)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)

    reply = await call("POST", shim + ACTION_URL, body=body(key), headers=GO_HEADERS)

    assert reply.status == 400
    name, inner = reply.fault()
    assert name == "badRequest"
    assert f"'{status}'" in inner["message"]
    assert sim.action_calls == []


async def test_sync_never_becomes_a_reprotect(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)
    reply = await call("POST", shim + ACTION_URL, body=body(SYNC), headers=GO_HEADERS)
    assert reply.status == 400
    assert "reprotect" in reply.fault()[1]["message"]
    assert sim.action_calls == []
    assert sim.group(PROJECT, GROUP_ID).status == "failed-over"


@pytest.mark.parametrize(("station", "after"), [("source", "target"), ("target", "source")])
async def test_switchover_asks_for_the_opposite_site(simulators, make_shim, station, after):
    sim, sdrs_url = await simulators("protected", priority_station=station)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)

    reply = await call("POST", shim + ACTION_URL, body=body(REVERSE), headers=GO_HEADERS)

    assert reply.status == 200
    await wait_for_status(sim, "reversing")
    await wait_for_status(sim, "protected")
    assert sim.group(PROJECT, GROUP_ID).priority_station == after


# -- disk expansion ------------------------------------------------------------------------------


def pair_ids(sim: SdrsSimulator) -> list[str]:
    return [pair.id for pair in sim.group(PROJECT, GROUP_ID).pairs]


@pytest.mark.parametrize("shape", ["documented", "golangsdk"])
async def test_extend_accepts_both_body_shapes_and_answers_when_done(simulators, make_shim, shape):
    sim, sdrs_url = await simulators("protected")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING,
                           actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05})
    first = pair_ids(sim)[0]
    value = ('{"replications": [{"id": "%s", "new_size": 20}]}' if shape == "documented"
             else '{"id": "%s", "new_size": 20}') % first
    payload = ('{"os-extend-replication-volumes": %s}\n' % value).encode()

    reply = await call("POST", shim + ACTION_URL, body=payload, headers=GO_HEADERS)

    assert (reply.status, reply.body) == (200, b"")
    assert [key for _, _, key in sim.action_calls] == []  # pair actions are not group actions
    sizes = {pair.id: pair.volume_size for pair in sim.group(PROJECT, GROUP_ID).pairs}
    assert sizes[first] == 20  # 200 means the expansion is complete
    assert list(sizes.values()).count(10) == 1
    extends = [path for method, path, _ in sim.requests if method == "POST"]
    assert extends == [f"/v1/{PROJECT}/replications/{first}/action"]


async def test_extend_of_several_pairs_sends_one_call_per_pair(simulators, make_shim):
    sim, sdrs_url = await simulators("available")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING,
                           actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05})
    ids = pair_ids(sim)
    payload = ('{"os-extend-replication-volumes": {"replications": [{"id": "%s", "new_size": 30}, '
               '{"id": "%s", "new_size": 40}]}}' % tuple(ids)).encode()

    reply = await call("POST", shim + ACTION_URL, body=payload, headers=GO_HEADERS)

    assert reply.status == 200
    assert [pair.volume_size for pair in sim.group(PROJECT, GROUP_ID).pairs] == [30, 40]


@pytest.mark.parametrize(("value", "status", "says"), [
    ('{"id": "11111111-2222-3333-4444-555555555555", "new_size": 20}', 404, "could not be found"),
    ('{"id": "{first}", "new_size": 10}', 400, "must be larger than the current 10 GB"),
    ('{"id": "{first}", "new_size": "20"}', 400, "whole number of GB"),
    ('{"id": "{first}", "new_size": true}', 400, "whole number of GB"),
    ('{"id": "../x", "new_size": 20}', 400, "must be a UUID"),
    ('{"replications": []}', 400, "1 to 100 pairs"),
    ('{"replications": [{"id": "{first}", "new_size": 20}, {"id": "{first}", "new_size": 30}]}', 400, "listed twice"),
    ('null', 400, "needs"),
    ('{"id": "{first}"}', 400, "needs"),
])
async def test_bad_extend_is_refused_before_anything_is_sent(simulators, make_shim, value, status, says):
    sim, sdrs_url = await simulators("protected")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)
    payload = ('{"os-extend-replication-volumes": %s}' % value.replace("{first}", pair_ids(sim)[0])).encode()

    reply = await call("POST", shim + ACTION_URL, body=payload, headers=GO_HEADERS)

    assert reply.status == status
    assert says in reply.fault()[1]["message"]
    assert [method for method, _, _ in sim.requests if method == "POST"] == []


async def test_extend_in_a_failed_over_group_is_400(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)
    payload = ('{"os-extend-replication-volumes": {"id": "%s", "new_size": 20}}' % pair_ids(sim)[0]).encode()
    reply = await call("POST", shim + ACTION_URL, body=payload, headers=GO_HEADERS)
    assert reply.status == 400
    assert "'failed-over'" in reply.fault()[1]["message"]


async def test_extend_job_failure_is_a_legacy_error_naming_the_sdrs_code(simulators, make_shim):
    sim, sdrs_url = await simulators("protected")
    sim.fail_next_job(PROJECT, GROUP_ID, error_code="SDRS.1820", fail_reason="disk capacity exceeded")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING,
                           actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05})
    payload = ('{"os-extend-replication-volumes": {"id": "%s", "new_size": 20}}' % pair_ids(sim)[0]).encode()

    reply = await call("POST", shim + ACTION_URL, body=payload, headers=GO_HEADERS)

    assert reply.status == 500  # a failed job is SDRS's failure: SDRS.1820 does not blame the request
    message = reply.fault()[1]["message"]
    assert "SDRS.1820" in message and "disk capacity exceeded" in message


# -- completion modes ------------------------------------------------------------------------------


CONFIRMED = {"completion": "confirmed", "poll_initial_seconds": 0.02, "poll_max_seconds": 0.05,
             "confirm_timeout_seconds": 2}


async def test_accepted_mode_answers_while_the_job_is_still_init(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over", init=5.0)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING)
    reply = await call("POST", shim + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)
    assert reply.status == 200
    assert sim.group(PROJECT, GROUP_ID).status == "failed-over"  # SDRS has not started yet


async def test_confirmed_mode_answers_once_the_group_is_reprotecting(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over", init=0.1, run=5.0)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING, actions=CONFIRMED)

    reply = await call("POST", shim + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)

    assert (reply.status, reply.body) == (200, b"")
    assert sim.group(PROJECT, GROUP_ID).status == "reprotecting"
    job_polls = [path for method, path, _ in sim.requests if method == "GET" and "/jobs/" in path]
    assert len(job_polls) >= 2  # it waited through INIT
    assert len(sim.action_calls) == 1


async def test_confirmed_mode_reports_a_failed_job_with_its_code_and_reason(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over", init=0.05, run=0.0)  # INIT, then FAIL
    sim.fail_next_job(PROJECT, GROUP_ID, error_code="SDRS.1342", fail_reason="DR site server is running")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING, actions=CONFIRMED)

    reply = await call("POST", shim + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)

    assert reply.status == 400  # SDRS.1342's row in mappings/sdrs-errors.yaml
    message = reply.fault()[1]["message"]
    assert "SDRS.1342" in message and "DR site server is running" in message
    assert len(sim.action_calls) == 1


async def test_confirmed_mode_with_an_unknown_job_code_is_500(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over", init=0.05, run=0.0)
    sim.fail_next_job(PROJECT, GROUP_ID, error_code="EVS.2024", fail_reason="volume is error!")
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING, actions=CONFIRMED)
    reply = await call("POST", shim + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)
    assert reply.status == 500
    assert "EVS.2024" in reply.fault()[1]["message"]


async def test_confirmed_mode_gives_up_on_a_job_that_never_starts_and_never_resends(simulators, make_shim):
    sim, sdrs_url = await simulators("failed-over", init=3600.0)
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING, actions={**CONFIRMED, "confirm_timeout_seconds": 0.3})

    reply = await call("POST", shim + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)

    assert reply.status == 504
    assert "may still run" in reply.fault()[1]["message"]
    retry = await call("POST", shim + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)
    assert retry.status == 409
    assert "INIT" in retry.fault()[1]["message"]
    assert len(sim.action_calls) == 1


async def test_a_long_confirmed_action_keeps_its_lease_renewed(simulators, make_shim, tmp_path):
    """A confirmed action that polls for longer than `state.lease_seconds` renews its lease: a second
    shim on the same store (another worker) finds the group held all the while, not free."""
    sim, sdrs_url = await simulators("failed-over", init=1.3, run=5.0)  # confirmed once RUNNING: after 1.3 s
    state = {"backend": "sqlite", "path": str(tmp_path / "shared.sqlite3"), "lease_seconds": 0.3}
    slow = await make_shim(sdrs=sdrs_url, mapping=MAPPING, state=state,
                           actions={**CONFIRMED, "confirm_timeout_seconds": 5})
    other = await make_shim(sdrs=sdrs_url, mapping=MAPPING, state=state)

    first = asyncio.create_task(call("POST", slow + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS))
    await asyncio.sleep(0.9)  # three lease lifetimes into the first action's wait
    second = await call("POST", other + ACTION_URL, body=body(REPROTECT), headers=GO_HEADERS)

    assert second.status == 409
    assert "is in progress" in second.fault()[1]["message"]  # the lease, not the job, refused it
    assert (await first).status == 200
    assert len(sim.action_calls) == 1
