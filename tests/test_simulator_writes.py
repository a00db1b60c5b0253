"""The SDRS simulator's writes over real loopback HTTP: protection group rename and delete, replication
pair delete and create, each gated as its API page says, recorded, and open to fault injection."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from test_simulator import (
    GROUP,
    GROUP_2,
    HEX32,
    INIT_S,
    PROJECT,
    RUN_S,
    START_T,
    TOKEN,
    UNKNOWN_GROUP,
    WALL_AT_START,
    FakeClock,
    Sdrs,
    start_runner,
)

from shim.simulator import Fault, SdrsSimulator, SimulatorSettings

GROUPS = f"/v1/{PROJECT}/server-groups"
PAIRS = f"/v1/{PROJECT}/replications"
VOLUME = "b6f71149-7b9c-4f36-8ff0-1c4809a6f2c2"
INSTANCE = "4b3c2d1e-0f9a-4b8c-9d7e-6f5a4b3c2d1e"

# Written out from the API pages, independently of the implementation.
GROUP_STATUSES = [
    "creating", "available", "protected", "deleting", "error-deleting", "error", "starting",
    "error-starting", "reprotecting", "error-reprotecting", "stopping", "error-stopping", "reversing",
    "error-reversing", "failing-over", "failed-over", "error-failing-over",
]  # fmt: skip
PAIR_STATUSES = [
    "creating", "available", "deleting", "error-deleting", "error", "extending", "error-extending",
    "starting", "error-starting", "protected", "reversing", "error-reversing", "failing-over",
    "failed-over", "error-failing-over", "reprotecting", "error-reprotecting", "stopping",
    "error-stopping", "invalid", "fault", "attaching", "detaching", "error-attaching", "error-detaching",
]  # fmt: skip
# "Deleting a Replication Pair", Constraints and Limitations.
PAIR_DELETE_GROUP_STATUSES = {
    "available", "protected", "failed-over", "error-starting", "error-stopping", "error-reversing",
    "error-failing-over", "error-deleting", "error-reprotecting",
}  # fmt: skip
DELETABLE_PAIR_STATUSES = {
    "available", "protected", "failed-over", "error", "error-starting", "error-stopping", "error-reversing",
    "error-failing-over", "error-deleting", "error-reprotecting", "error-attaching", "error-extending",
    "invalid", "fault",
}  # fmt: skip
KEEP_DR_DISK = {"replication": {"server_group_id": GROUP, "delete_target_volume": False}}


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


async def accepted_job(sdrs: Sdrs, method: str, path: str, body: Any = None) -> str:
    answer = await sdrs.call(method, path, body)
    assert answer.status == 200, answer.body
    assert list(answer.json()) == ["job_id"]
    assert HEX32.fullmatch(answer.json()["job_id"])
    return answer.json()["job_id"]


# -- protection group rename ------------------------------------------------------------------------------


async def test_rename_answers_the_full_group_at_once(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over", name="pg-old", pair_count=2)
    await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S + 1)  # any status may be renamed: the page lists no constraint
    name = "Pg_new.name-" + "x" * 52  # 64 bytes, every allowed kind of character
    answer = await sdrs.call("PUT", f"{GROUPS}/{GROUP}", {"server_group": {"name": name}})
    assert answer.status == 200
    renamed = answer.json()["server_group"]
    assert renamed == await sdrs.group()
    assert (renamed["name"], renamed["status"], renamed["replication_num"]) == (name, "reprotecting", 2)
    assert renamed["created_at"] == "2019-05-23 03:51:58.256"
    assert renamed["updated_at"] == "2019-05-23 03:52:01.256"
    assert len(sdrs.sim.state.jobs) == 1  # synchronous: no job of its own


@pytest.mark.parametrize(("body", "code"), [
    ({"server_group": {"name": "x" * 65}}, "SDRS.0202"),
    ({"server_group": {"name": "with space"}}, "SDRS.0202"),
    ({"server_group": {"name": "ümlaut"}}, "SDRS.0202"),
    ({"server_group": {"name": ""}}, "SDRS.0202"),
    ({"server_group": {"name": 7}}, "SDRS.0202"),
    ({"server_group": {"name": "ok", "description": "not changeable here"}}, "SDRS.0201"),
    ({"server_group": {"description": "no name"}}, "SDRS.0201"),
    ({"server_group": {}}, "SDRS.0201"),
    ({"server_group": "ok"}, "SDRS.0201"),
    ({"name": "ok"}, "SDRS.0201"),
    (None, "SDRS.0201"),
])  # fmt: skip
async def test_rename_refuses_bad_names_and_other_fields(sdrs: Sdrs, body: Any, code: str) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, name="pg-old")
    answer = await sdrs.call("PUT", f"{GROUPS}/{GROUP}", body)
    assert (answer.status, answer.sdrs_error()[0]) == (400, code)
    assert (await sdrs.group())["name"] == "pg-old"


async def test_rename_of_an_unknown_or_malformed_group(sdrs: Sdrs) -> None:
    body = {"server_group": {"name": "ok"}}
    unknown = await sdrs.call("PUT", f"{GROUPS}/{UNKNOWN_GROUP}", body)
    assert (unknown.status, unknown.sdrs_error()[0]) == (400, "SDRS.1013")
    malformed = await sdrs.call("PUT", f"{GROUPS}/not-an-id", body)
    assert (malformed.status, malformed.sdrs_error()[0]) == (400, "SDRS.0207")


# -- protection group delete ------------------------------------------------------------------------------


async def test_delete_group_shows_deleting_then_the_group_is_gone(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=0)
    sdrs.sim.add_protection_group(PROJECT, GROUP_2, status="protected")
    job_id = await accepted_job(sdrs, "DELETE", f"{GROUPS}/{GROUP}")
    job = await sdrs.job(job_id)
    assert (job["job_type"], job["status"], job["entities"]) == (
        "deleteProtectionGroupNoCG", "INIT", {"server_group_id": GROUP},
    )  # fmt: skip
    assert (await sdrs.group())["status"] == "available"
    clock.advance(INIT_S)
    assert (await sdrs.group())["status"] == "deleting"
    clock.advance(RUN_S)

    gone = await sdrs.call("GET", f"{GROUPS}/{GROUP}")
    assert (gone.status, gone.sdrs_error()) == (400, ("SDRS.1013", "Protection group not found"))
    listing = (await sdrs.call("GET", GROUPS)).json()
    assert (listing["count"], [g["id"] for g in listing["server_groups"]]) == (1, [GROUP_2])
    job = await sdrs.job(job_id)  # a deleted group's job stays readable
    assert (job["status"], job["end_time"], job["error_code"]) == ("SUCCESS", "2019-05-23T03:52:10.256Z", None)
    again = await sdrs.call("DELETE", f"{GROUPS}/{GROUP}")
    assert (again.status, again.sdrs_error()[0]) == (400, "SDRS.1013")


@pytest.mark.parametrize("status", ["protected", "failed-over", "error", "creating"])
async def test_delete_group_has_no_status_gate(sdrs: Sdrs, clock: FakeClock, status: str) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status=status, pair_count=0)
    await accepted_job(sdrs, "DELETE", f"{GROUPS}/{GROUP}")
    clock.advance(INIT_S + RUN_S)
    assert (await sdrs.call("GET", f"{GROUPS}/{GROUP}")).sdrs_error()[0] == "SDRS.1013"


async def test_delete_group_with_replication_pairs_is_refused(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=1)
    answer = await sdrs.call("DELETE", f"{GROUPS}/{GROUP}")
    assert (answer.status, answer.sdrs_error()) == (
        400, ("SDRS.1010", "Protection group deletion not allowed due to a replication pair"),
    )  # fmt: skip
    assert sdrs.sim.state.jobs == {}
    malformed = await sdrs.call("DELETE", f"{GROUPS}/12345")
    assert (malformed.status, malformed.sdrs_error()[0]) == (400, "SDRS.0207")


async def test_failed_group_delete_leaves_error_deleting(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=0)
    sdrs.sim.fail_next_job(PROJECT, GROUP)
    failed = await accepted_job(sdrs, "DELETE", f"{GROUPS}/{GROUP}")
    clock.advance(INIT_S + RUN_S)
    job = await sdrs.job(failed)
    assert (job["status"], job["error_code"]) == ("FAIL", "SDRS.1016")
    assert job["fail_reason"]
    assert (await sdrs.group())["status"] == "error-deleting"
    await accepted_job(sdrs, "DELETE", f"{GROUPS}/{GROUP}")  # and may be deleted again
    clock.advance(INIT_S + RUN_S)
    assert (await sdrs.call("GET", f"{GROUPS}/{GROUP}")).sdrs_error()[0] == "SDRS.1013"


# -- replication pair delete -------------------------------------------------------------------------------


async def test_delete_pair_shows_deleting_then_is_gone_and_keeps_the_dr_disk(
    sdrs: Sdrs, clock: FakeClock
) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
    first, second = sdrs.sim.pair_ids(PROJECT, GROUP)
    production, dr = (await sdrs.pairs())[0]["volume_ids"].split(",")
    job_id = await accepted_job(sdrs, "DELETE", f"{PAIRS}/{first}", KEEP_DR_DISK)
    job = await sdrs.job(job_id)
    assert (job["job_type"], job["status"], job["entities"]) == (
        "deleteReplicationPairNoCG", "INIT", {"server_group_id": GROUP, "replication_pair_id": first},
    )  # fmt: skip
    clock.advance(INIT_S)
    assert [(p["id"], p["status"]) for p in await sdrs.pairs()] == [(first, "deleting"), (second, "protected")]
    assert (await sdrs.group())["status"] == "protected"  # a pair job leaves the group alone
    clock.advance(RUN_S)

    assert (await sdrs.job(job_id))["status"] == "SUCCESS"
    gone = await sdrs.call("GET", f"{PAIRS}/{first}")
    assert (gone.status, gone.sdrs_error()) == (400, ("SDRS.1608", "Replication pair not found"))
    assert [p["id"] for p in await sdrs.pairs()] == [second]
    assert (await sdrs.group())["replication_num"] == 1
    assert {production, dr} <= sdrs.sim.volumes  # delete_target_volume false: the DR disk is kept
    assert sdrs.sim.write_calls == [("DELETE", f"{PAIRS}/{first}", KEEP_DR_DISK)]


async def test_delete_target_volume_deletes_the_dr_disk_too(sdrs: Sdrs, clock: FakeClock) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    production, dr = group.pairs[0].volume_ids
    body = {"replication": {"delete_target_volume": True}}  # server_group_id is optional
    await accepted_job(sdrs, "DELETE", f"{PAIRS}/{group.pairs[0].id}", body)
    clock.advance(INIT_S + RUN_S)
    assert await sdrs.pairs() == []
    assert production in sdrs.sim.volumes
    assert dr not in sdrs.sim.volumes


@pytest.mark.parametrize("status", GROUP_STATUSES)
async def test_delete_pair_gates_on_the_group_status(sdrs: Sdrs, status: str) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status=status)
    answer = await sdrs.call("DELETE", f"{PAIRS}/{group.pairs[0].id}", {"replication": {}})
    if status in PAIR_DELETE_GROUP_STATUSES:
        assert answer.status == 200, answer.body
        return
    assert (answer.status, answer.sdrs_error()[0]) == (400, "SDRS.1002")
    assert sdrs.sim.state.jobs == {}


@pytest.mark.parametrize("status", PAIR_STATUSES)
async def test_delete_pair_gates_on_the_pair_status(sdrs: Sdrs, status: str) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected")
    sdrs.sim.set_pair_state(PROJECT, group.pairs[0].id, status=status)
    answer = await sdrs.call("DELETE", f"{PAIRS}/{group.pairs[0].id}", {"replication": {}})
    if status in DELETABLE_PAIR_STATUSES:
        assert answer.status == 200, answer.body
        return
    assert (answer.status, answer.sdrs_error()) == (400, ("SDRS.0214", "Incorrect replication pair status"))
    assert sdrs.sim.state.jobs == {}


async def test_an_attached_pair_is_not_deleted(sdrs: Sdrs) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected")
    pair_id = group.pairs[0].id
    sdrs.sim.attach_pair(PROJECT, pair_id, INSTANCE, "/dev/vdb")
    assert (await sdrs.pairs())[0]["attachment"] == [{"protected_instance": INSTANCE, "device": "/dev/vdb"}]
    answer = await sdrs.call("DELETE", f"{PAIRS}/{pair_id}", KEEP_DR_DISK)
    assert (answer.status, answer.sdrs_error()) == (400, ("SDRS.1605", "Replication pair attached"))
    assert sdrs.sim.state.jobs == {}


async def test_failed_pair_delete_leaves_error_deleting(sdrs: Sdrs, clock: FakeClock) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
    first, second = sdrs.sim.pair_ids(PROJECT, GROUP)
    sdrs.sim.fail_next_job(PROJECT, GROUP)
    failed = await accepted_job(sdrs, "DELETE", f"{PAIRS}/{first}", KEEP_DR_DISK)
    clock.advance(INIT_S + RUN_S)
    job = await sdrs.job(failed)
    assert (job["status"], job["error_code"]) == ("FAIL", "SDRS.1607")
    assert [(p["id"], p["status"]) for p in await sdrs.pairs()] == [
        (first, "error-deleting"), (second, "protected"),
    ]  # fmt: skip
    assert len(group.pairs) == 2
    await accepted_job(sdrs, "DELETE", f"{PAIRS}/{first}", KEEP_DR_DISK)  # error-deleting may go again
    clock.advance(INIT_S + RUN_S)
    assert sdrs.sim.pair_ids(PROJECT, GROUP) == [second]


@pytest.mark.parametrize(("raw", "code"), [
    (b"", "SDRS.0201"),  # the `replication` object is mandatory
    (b"{}", "SDRS.0201"),
    (b"not json", "SDRS.0201"),
    (b'{"replication": {"delete_target_volume": "no"}}', "SDRS.0201"),
    (b'{"replication": {"delete_target_volumes": true}}', "SDRS.0201"),
    (b'{"replication": {}, "force": true}', "SDRS.0201"),
    (b'{"replication": {"server_group_id": "pg-1"}}', "SDRS.0207"),
    (b'{"replication": {"server_group_id": "%s"}}' % UNKNOWN_GROUP.encode(), "SDRS.1013"),
    (b'{"replication": {"server_group_id": "%s"}}' % GROUP_2.encode(), "SDRS.1611"),
])  # fmt: skip
async def test_delete_pair_body_rules(sdrs: Sdrs, raw: bytes, code: str) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected")
    sdrs.sim.add_protection_group(PROJECT, GROUP_2, status="protected")
    answer = await sdrs.call("DELETE", f"{PAIRS}/{group.pairs[0].id}", raw=raw)
    assert (answer.status, answer.sdrs_error()[0]) == (400, code)
    assert sdrs.sim.state.jobs == {}


async def test_delete_of_an_unknown_or_malformed_pair(sdrs: Sdrs) -> None:
    unknown = await sdrs.call("DELETE", f"{PAIRS}/{UNKNOWN_GROUP}", KEEP_DR_DISK)
    assert (unknown.status, unknown.sdrs_error()[0]) == (400, "SDRS.1608")
    malformed = await sdrs.call("DELETE", f"{PAIRS}/x", KEEP_DR_DISK)
    assert (malformed.status, malformed.sdrs_error()[0]) == (400, "SDRS.0213")


async def test_a_group_is_deleted_once_its_pairs_are(sdrs: Sdrs, clock: FakeClock) -> None:
    """The order a legacy group delete becomes: every pair, then the group."""
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
    for pair_id in sdrs.sim.pair_ids(PROJECT, GROUP):
        await accepted_job(sdrs, "DELETE", f"{PAIRS}/{pair_id}", KEEP_DR_DISK)
    busy = await sdrs.call("DELETE", f"{GROUPS}/{GROUP}")  # the pairs' jobs have not ended
    assert (busy.status, busy.sdrs_error()[0]) == (400, "SDRS.1010")
    clock.advance(INIT_S + RUN_S)
    group_job = await accepted_job(sdrs, "DELETE", f"{GROUPS}/{GROUP}")
    clock.advance(INIT_S + RUN_S)
    assert (await sdrs.job(group_job))["status"] == "SUCCESS"
    assert (await sdrs.call("GET", PAIRS)).json() == {"replications": [], "count": 0}
    assert len(sdrs.sim.volumes) == 4  # no DR disk was deleted


# -- replication pair create -------------------------------------------------------------------------------


async def test_create_pair_shows_creating_then_follows_its_group(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=0)
    sdrs.sim.add_volume(VOLUME)
    body = {"replication": {"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep-1", "description": "db"}}
    job_id = await accepted_job(sdrs, "POST", PAIRS, body)
    job = await sdrs.job(job_id)
    pair_id = job["entities"]["replication_pair_id"]
    assert (job["job_type"], job["entities"]) == (
        "createReplicationPairNoCG", {"server_group_id": GROUP, "replication_pair_id": pair_id},
    )  # fmt: skip
    [pair] = await sdrs.pairs()
    assert (pair["id"], pair["name"], pair["description"]) == (pair_id, "rep-1", "db")
    assert (pair["status"], pair["replication_status"], pair["progress"]) == ("creating", "inactive", 0)
    production, dr = pair["volume_ids"].split(",")
    assert production == VOLUME
    assert dr not in sdrs.sim.volumes  # the DR disk is made by the job
    clock.advance(INIT_S + RUN_S)
    [pair] = await sdrs.pairs()
    assert (pair["status"], pair["replication_status"], pair["progress"]) == ("protected", "active", 100)
    assert dr in sdrs.sim.volumes
    assert (await sdrs.group())["replication_num"] == 1
    again = await sdrs.call("POST", PAIRS, body)  # the disk is used by a pair now
    assert (again.status, again.sdrs_error()[0]) == (400, "SDRS.1811")


async def test_a_pair_created_in_a_protected_group_syncs_first(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.settings.sync_seconds = 20.0
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=0)
    sdrs.sim.add_volume(VOLUME)
    body = {"replication": {"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep-1"}}
    await accepted_job(sdrs, "POST", PAIRS, body)
    clock.advance(INIT_S + RUN_S + 5)
    assert [(p["status"], p["replication_status"], p["progress"]) for p in await sdrs.pairs()] == [
        ("protected", "copying", 25)
    ]
    clock.advance(15)
    assert [(p["replication_status"], p["progress"]) for p in await sdrs.pairs()] == [("active", 100)]


async def test_failed_create_leaves_an_error_pair_with_its_failure_detail(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=0)
    sdrs.sim.add_volume(VOLUME)
    sdrs.sim.fail_next_job(PROJECT, GROUP)
    body = {"replication": {"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep-1"}}
    job_id = await accepted_job(sdrs, "POST", PAIRS, body)
    clock.advance(INIT_S + RUN_S)
    assert ((await sdrs.job(job_id))["error_code"]) == "SDRS.1609"
    [pair] = await sdrs.pairs()
    assert (pair["status"], pair["replication_status"], pair["failure_detail"]) == ("error", "inactive", "SDRS.1609")
    await accepted_job(sdrs, "DELETE", f"{PAIRS}/{pair['id']}", {"replication": {}})  # `error` may be deleted


@pytest.mark.parametrize(("replication", "code"), [
    ({"volume_id": VOLUME, "name": "rep"}, "SDRS.0201"),
    ({"server_group_id": GROUP, "name": "rep"}, "SDRS.0201"),
    ({"server_group_id": GROUP, "volume_id": VOLUME}, "SDRS.0201"),
    ({"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep", "size": 10}, "SDRS.0201"),
    ({"server_group_id": "pg", "volume_id": VOLUME, "name": "rep"}, "SDRS.0207"),
    ({"server_group_id": GROUP, "volume_id": "disk-1", "name": "rep"}, "SDRS.0211"),
    ({"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep 1"}, "SDRS.0202"),
    ({"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep", "description": "<b>"}, "SDRS.0212"),
    ({"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep", "description": "d" * 65}, "SDRS.0212"),
    ({"server_group_id": UNKNOWN_GROUP, "volume_id": VOLUME, "name": "rep"}, "SDRS.1013"),
    ({"server_group_id": GROUP_2, "volume_id": VOLUME, "name": "rep"}, "SDRS.1024"),
    ({"server_group_id": GROUP, "volume_id": UNKNOWN_GROUP, "name": "rep"}, "SDRS.1803"),
])  # fmt: skip
async def test_create_pair_refusals(sdrs: Sdrs, replication: dict[str, Any], code: str) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=0)
    sdrs.sim.add_protection_group(PROJECT, GROUP_2, status="failed-over", pair_count=0)
    sdrs.sim.add_volume(VOLUME)
    answer = await sdrs.call("POST", PAIRS, {"replication": replication})
    assert (answer.status, answer.sdrs_error()[0]) == (400, code)
    assert sdrs.sim.state.jobs == {}


async def test_a_group_delete_fails_when_a_pair_was_created_meanwhile(sdrs: Sdrs, clock: FakeClock) -> None:
    """SDRS accepts a create while the delete is still INIT; the delete's own check then fails it."""
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=0)
    sdrs.sim.add_volume(VOLUME)
    delete = await accepted_job(sdrs, "DELETE", f"{GROUPS}/{GROUP}")
    body = {"replication": {"server_group_id": GROUP, "volume_id": VOLUME, "name": "rep-1"}}
    await accepted_job(sdrs, "POST", PAIRS, body)
    clock.advance(INIT_S + RUN_S)
    job = await sdrs.job(delete)
    assert (job["status"], job["error_code"]) == ("FAIL", "SDRS.1010")
    group = await sdrs.group()
    assert (group["status"], group["replication_num"]) == ("error-deleting", 1)


# -- recording and faults ------------------------------------------------------------------------------------


async def test_every_write_is_recorded_with_its_body(sdrs: Sdrs) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    pair_path = f"{PAIRS}/{group.pairs[0].id}"
    await sdrs.call("PUT", f"{GROUPS}/{GROUP}", {"server_group": {"name": "pg-1"}})
    await sdrs.call("DELETE", f"{GROUPS}/{GROUP}")  # refused (a pair), recorded all the same
    await sdrs.call("DELETE", pair_path, raw=b"[1]")
    await sdrs.call("DELETE", pair_path, KEEP_DR_DISK, token=None)  # refused by the gateway
    await sdrs.action({"start-server-group": {}})
    await sdrs.call("GET", f"{GROUPS}/{GROUP}")
    assert sdrs.sim.write_calls == [
        ("PUT", f"{GROUPS}/{GROUP}", {"server_group": {"name": "pg-1"}}),
        ("DELETE", f"{GROUPS}/{GROUP}", None),
        ("DELETE", pair_path, None),
        ("DELETE", pair_path, KEEP_DR_DISK),
        ("POST", f"{GROUPS}/{GROUP}/action", {"start-server-group": {}}),
    ]
    assert sdrs.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    assert len(sdrs.sim.state.jobs) == 1


async def test_faults_apply_to_the_new_writes(sdrs: Sdrs) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", name="pg-old")
    pair_path = f"{PAIRS}/{group.pairs[0].id}"
    sdrs.sim.inject(Fault(method="DELETE", path_contains="/replications/", status=503, body=b"busy"))
    # Every time: aiohttp resends a PUT or DELETE once after a reset (they are idempotent to it).
    sdrs.sim.inject(Fault(method="PUT", reset=True, times=None))
    refused = await sdrs.call("DELETE", pair_path, KEEP_DR_DISK)
    assert (refused.status, refused.body) == (503, b"busy")
    with pytest.raises(aiohttp.ClientOSError) as caught:
        await sdrs.call("PUT", f"{GROUPS}/{GROUP}", {"server_group": {"name": "pg-new"}})
    assert caught.value.errno == errno.ECONNRESET
    sdrs.sim.clear_faults()
    assert sdrs.sim.state.jobs == {}
    assert (await sdrs.group())["name"] == "pg-old"
    methods = [method for method, _, _ in sdrs.sim.write_calls]
    assert methods[0] == "DELETE" and set(methods[1:]) == {"PUT"}
    assert (await sdrs.call("DELETE", pair_path, KEEP_DR_DISK)).status == 200  # used up


def test_volume_ids_must_be_uuids() -> None:
    with pytest.raises(ValueError, match="UUID"):
        SdrsSimulator().add_volume("disk-1")
