"""Replication pairs with their own state in the SDRS simulator, over real loopback HTTP: the initial
synchronisation after a start/re-protect, and test-set pair states that hold until a job takes over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from test_simulator import GROUP, INIT_S, PROJECT, RUN_S, START_T, TOKEN, WALL_AT_START, FakeClock, Sdrs, start_runner

from shim.simulator import SdrsSimulator, SimulatorSettings

SYNC_S = 20.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sdrs(clock: FakeClock) -> AsyncIterator[Sdrs]:
    settings = SimulatorSettings(job_init_seconds=INIT_S, job_run_seconds=RUN_S, tokens={TOKEN})
    sim = SdrsSimulator(settings, now=clock, wall_epoch=WALL_AT_START - START_T)
    runner, url = await start_runner(sim.app())
    async with aiohttp.ClientSession() as session:
        yield Sdrs(sim, url, session)
    await runner.cleanup()


def states(pairs: list[dict[str, Any]]) -> list[tuple[str, str | None, int]]:
    return [(p["status"], p["replication_status"], p["progress"]) for p in pairs]


# -- the initial synchronisation -----------------------------------------------------------------------


@pytest.mark.parametrize(("start", "job_type", "transitional"), [
    ("failed-over", "reprotectProtectionGroupNoCG", "reprotecting"),
    ("available", "startProtectionGroupNoCG", "starting"),
])  # fmt: skip
async def test_pairs_keep_copying_for_sync_seconds_after_the_job_succeeded(
    sdrs: Sdrs, clock: FakeClock, start: str, job_type: str, transitional: str
) -> None:
    sdrs.sim.settings.sync_seconds = SYNC_S
    sdrs.sim.add_protection_group(PROJECT, GROUP, status=start, pair_count=2)
    job_id = await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S + RUN_S / 2)  # the copy spans the RUNNING job and the sync after it: 5 of 30 s
    assert states(await sdrs.pairs()) == [(transitional, "copying", 16)] * 2

    clock.advance(RUN_S / 2)
    job = await sdrs.job(job_id)
    assert (job["job_type"], job["status"]) == (job_type, "SUCCESS")
    group = await sdrs.group()
    assert (group["status"], group["progress"]) == ("protected", 33)  # the slowest pair's progress
    assert states(await sdrs.pairs()) == [("protected", "copying", 33)] * 2

    clock.advance(SYNC_S - 0.5)
    assert states(await sdrs.pairs()) == [("protected", "copying", 98)] * 2
    clock.advance(0.5)
    assert states(await sdrs.pairs()) == [("protected", "active", 100)] * 2
    assert (await sdrs.group())["progress"] == 100


async def test_a_failed_reprotect_does_not_sync_its_successful_retry_does(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.settings.sync_seconds = SYNC_S
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    sdrs.sim.fail_next_job(PROJECT, GROUP)
    await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S + RUN_S)
    assert states(await sdrs.pairs()) == [("error-reprotecting", "inactive", 0)]
    await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S + RUN_S + SYNC_S / 2)
    assert states(await sdrs.pairs()) == [("protected", "copying", 66)]


async def test_stopping_during_the_sync_ends_the_copy(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.settings.sync_seconds = SYNC_S
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available")
    await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S + RUN_S)
    assert states(await sdrs.pairs()) == [("protected", "copying", 33)]
    await sdrs.start_job({"stop-server-group": {}})
    clock.advance(INIT_S)
    assert states(await sdrs.pairs()) == [("stopping", "active", 100)]
    clock.advance(RUN_S)
    assert states(await sdrs.pairs()) == [("available", "active-stopped", 100)]


# -- a pair's own state ----------------------------------------------------------------------------------


async def test_one_pair_in_error_while_the_other_is_active(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
    first, second = sdrs.sim.pair_ids(PROJECT, GROUP)
    assert [p["id"] for p in await sdrs.pairs()] == [first, second]
    clock.advance(30)
    sdrs.sim.set_pair_state(PROJECT, first, status="error", replication_status=None, progress=0)
    sdrs.sim.set_pair_state(PROJECT, second, fault_level="2")

    broken, fine = await sdrs.pairs()
    assert states([broken, fine]) == [("error", None, 0), ("protected", "active", 100)]
    assert broken["failure_detail"] == "SDRS.1606"  # documented: only with status `error`
    assert "failure_detail" not in fine
    assert (broken["fault_level"], fine["fault_level"]) == ("0", "2")
    assert broken["updated_at"] == "2019-05-23T03:52:28.256000"
    detail = await sdrs.call("GET", f"/v1/{PROJECT}/replications/{first}")
    assert detail.json() == {"replication": broken}
    group = await sdrs.group()
    assert (group["status"], group["progress"]) == ("protected", 0)  # a group status of its own


async def test_an_own_state_holds_until_a_job_takes_the_pair_over(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
    first, second = sdrs.sim.pair_ids(PROJECT, GROUP)
    sdrs.sim.set_pair_state(PROJECT, first, status="fault", replication_status="copying", progress=40)
    sdrs.sim.set_pair_state(PROJECT, first, fault_level="2")  # keeps the values set before
    clock.advance(100)
    assert states(await sdrs.pairs()) == [("fault", "copying", 40), ("protected", "active", 100)]

    # Gates read the pair's own status: a `fault` pair may not be extended.
    extend = await sdrs.call(
        "POST", f"/v1/{PROJECT}/replications/{first}/action", {"extend-replication": {"new_size": 20}}
    )
    assert (extend.status, extend.sdrs_error()[0]) == (400, "SDRS.0214")

    await sdrs.start_job({"stop-server-group": {}})
    assert states(await sdrs.pairs())[0] == ("fault", "copying", 40)  # the job is still INIT
    clock.advance(INIT_S)
    assert states(await sdrs.pairs()) == [("stopping", "active", 100)] * 2
    clock.advance(RUN_S)
    pairs = await sdrs.pairs()
    assert states(pairs) == [("available", "active-stopped", 100)] * 2
    assert [p["fault_level"] for p in pairs] == ["2", "0"]  # a fault level stays until changed


@pytest.mark.parametrize("values", [
    {"status": "broken"}, {"replication_status": "synced"}, {"progress": 101}, {"progress": True},
    {"fault_level": "3"},
])  # fmt: skip
def test_set_pair_state_refuses_undocumented_values(values: dict[str, Any]) -> None:
    sim = SdrsSimulator()
    sim.add_protection_group(PROJECT, GROUP)
    [pair_id] = sim.pair_ids(PROJECT, GROUP)
    with pytest.raises(ValueError):
        sim.set_pair_state(PROJECT, pair_id, **values)
    with pytest.raises(KeyError):
        sim.set_pair_state(PROJECT, GROUP, status="error")  # a group id is no pair id
