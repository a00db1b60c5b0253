"""The SDRS v1 simulator over real loopback HTTP: status machine, jobs, pairs, errors, auth, faults."""

from __future__ import annotations

import asyncio
import errno
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shim.simulator import Fault, SdrsSimulator, SimulatorSettings, seed_demo_group, serve
from shim.simulator.errors import SdrsError
from shim.simulator.server import DEMO_GROUP_ID, DEMO_PROJECT_ID
from shim.simulator.state import SdrsState

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
OTHER_PROJECT = "1f2e3d4c5b6a79880123456789abcdef"
GROUP = "40df180b-9fe2-471a-8c64-1b758dc84189"
GROUP_2 = "7d0f3a52-1c49-4c3a-9d7e-0b8e2f6a4c10"
UNKNOWN_GROUP = "11111111-2222-3333-4444-555555555555"
TOKEN = "valid-token"
INIT_S, RUN_S = 2.0, 10.0
START_T = 1000.0
# wall time shown at clock START_T: 2019-05-23 03:51:58.256 UTC
WALL_AT_START = datetime(2019, 5, 23, 3, 51, 58, 256000, tzinfo=UTC).timestamp()

HEX32 = re.compile(r"[0-9a-f]{32}")
GROUP_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")
PAIR_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")
JOB_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# The documented gating matrix, written out independently of the implementation:
# (action, status) -> job_type for the allowed combinations.
ALLOWED = {
    ("start-server-group", "available"): "startProtectionGroupNoCG",
    ("start-server-group", "error-starting"): "startProtectionGroupNoCG",
    ("start-server-group", "failed-over"): "reprotectProtectionGroupNoCG",
    ("start-server-group", "error-reprotecting"): "reprotectProtectionGroupNoCG",
    ("stop-server-group", "protected"): "stopProtectionGroupNoCG",
    ("stop-server-group", "error-stopping"): "stopProtectionGroupNoCG",
    ("failover-server-group", "protected"): "failoverProtectionGroupNoCG",
    ("failover-server-group", "error-failing-over"): "failoverProtectionGroupNoCG",
    ("failover-server-group", "error-reversing"): "failoverProtectionGroupNoCG",
    ("reverse-server-group", "protected"): "reverseProtectionGroupNoCG",
    ("reverse-server-group", "error-reversing"): "reverseProtectionGroupNoCG",
}
ACTION_BODIES: dict[str, dict[str, Any]] = {
    "start-server-group": {"start-server-group": {}},
    "stop-server-group": {"stop-server-group": {}},
    "failover-server-group": {"failover-server-group": {}},
    "reverse-server-group": {"reverse-server-group": {"priority_station": "target"}},
}
MATRIX_STATUSES = [
    "available", "protected", "failed-over", "error-starting", "error-stopping",
    "error-reversing", "error-failing-over", "error-reprotecting",
]  # fmt: skip
OTHER_STATUSES = [
    "creating", "deleting", "error-deleting", "error", "starting", "reprotecting",
    "stopping", "reversing", "failing-over",
]  # fmt: skip
TRANSITIONAL = {
    "startProtectionGroupNoCG": ("starting", "protected", "error-starting"),
    "reprotectProtectionGroupNoCG": ("reprotecting", "protected", "error-reprotecting"),
    "stopProtectionGroupNoCG": ("stopping", "available", "error-stopping"),
    "failoverProtectionGroupNoCG": ("failing-over", "failed-over", "error-failing-over"),
    "reverseProtectionGroupNoCG": ("reversing", "protected", "error-reversing"),
}


class FakeClock:
    def __init__(self) -> None:
        self.t = START_T

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def sdrs_error(self) -> tuple[str, str]:
        document = self.json()
        assert list(document) == ["error"], document
        return document["error"]["code"], document["error"]["message"]


class Sdrs:
    """A running simulator plus a token-carrying HTTP helper."""

    def __init__(self, sim: SdrsSimulator, url: str, session: aiohttp.ClientSession) -> None:
        self.sim, self.url, self.session = sim, url, session

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = TOKEN
    ) -> Answer:
        headers = {"X-Auth-Token": token} if token is not None else {}
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.url + path, data=raw, headers=headers) as response:
            return Answer(response.status, response.headers.copy(), await response.read())

    async def group(self, group_id: str = GROUP, project: str = PROJECT) -> dict[str, Any]:
        answer = await self.call("GET", f"/v1/{project}/server-groups/{group_id}")
        assert answer.status == 200, answer
        return answer.json()["server_group"]

    async def action(self, body: Any, group_id: str = GROUP, project: str = PROJECT) -> Answer:
        return await self.call("POST", f"/v1/{project}/server-groups/{group_id}/action", body)

    async def start_job(self, body: Any, group_id: str = GROUP) -> str:
        answer = await self.action(body, group_id)
        assert answer.status == 200, answer.body
        job_id = answer.json()["job_id"]
        assert HEX32.fullmatch(job_id)
        return job_id

    async def job(self, job_id: str, project: str = PROJECT) -> dict[str, Any]:
        answer = await self.call("GET", f"/v1/{project}/jobs/{job_id}")
        assert answer.status == 200, answer.body
        return answer.json()

    async def pairs(self, group_id: str = GROUP) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"/v1/{PROJECT}/replications?server_group_id={group_id}")
        assert answer.status == 200, answer.body
        return answer.json()["replications"]


async def start_runner(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


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


# -- discovery and reads ---------------------------------------------------------------------------


async def test_version_documents_need_no_token(sdrs: Sdrs) -> None:
    versions = await sdrs.call("GET", "/", token=None)
    assert versions.status == 200
    assert versions.json() == {"versions": [{
        "id": "v1", "links": [{"href": f"{sdrs.url}/v1", "rel": "self"}], "status": "CURRENT",
        "updated": "2018-05-30T15:00:00Z", "version": "", "min_version": "",
    }]}  # fmt: skip
    version = await sdrs.call("GET", "/v1", token=None)
    assert version.status == 200
    assert version.json()["version"]["id"] == "v1"
    assert version.json()["version"]["links"] == [{"href": f"{sdrs.url}/v1", "rel": "self"}]


async def test_show_group_has_every_documented_field(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(
        PROJECT, GROUP, status="failed-over", name="pg-demo", source_availability_zone="eu-de-01",
        target_availability_zone="eu-de-02", priority_station="target", pair_count=2,
    )  # fmt: skip
    answer = await sdrs.call("GET", f"/v1/{PROJECT}/server-groups/{GROUP}")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert HEX32.fullmatch(answer.headers["X-Request-Id"])
    group = answer.json()["server_group"]
    assert set(group) == {
        "id", "name", "description", "status", "progress", "source_availability_zone",
        "target_availability_zone", "domain_id", "domain_name", "priority_station",
        "protected_instance_num", "replication_num", "disaster_recovery_drill_num", "protected_status",
        "replication_status", "health_status", "source_vpc_id", "target_vpc_id", "test_vpc_id", "dr_type",
        "server_type", "created_at", "updated_at", "protection_type", "replication_model",
    }  # fmt: skip
    assert (group["id"], group["name"], group["status"]) == (GROUP, "pg-demo", "failed-over")
    assert (group["source_availability_zone"], group["target_availability_zone"]) == ("eu-de-01", "eu-de-02")
    assert group["priority_station"] == "target"
    assert group["replication_num"] == 2
    assert group["created_at"] == "2019-05-23 03:51:58.256"
    assert group["updated_at"] == "2019-05-23 03:51:58.256"
    assert (group["protection_type"], group["dr_type"], group["server_type"]) == (
        "replication-pair",
        "migration",
        "ECS",
    )
    assert group["replication_status"] is None  # null for post-upgrade groups, as documented


async def test_list_groups_filters_pages_and_counts_per_project(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", name="alpha-db")
    sdrs.sim.add_protection_group(PROJECT, GROUP_2, status="available", name="beta-web")
    sdrs.sim.add_protection_group(PROJECT, UNKNOWN_GROUP, status="protected", name="Alpha-app")
    sdrs.sim.add_protection_group(OTHER_PROJECT, GROUP, status="protected", name="alpha-other")
    base = f"/v1/{PROJECT}/server-groups"

    everything = (await sdrs.call("GET", base)).json()
    assert everything["count"] == 3
    assert [g["id"] for g in everything["server_groups"]] == [GROUP, GROUP_2, UNKNOWN_GROUP]

    protected = (await sdrs.call("GET", base + "?status=protected")).json()
    assert [g["name"] for g in protected["server_groups"]] == ["alpha-db", "Alpha-app"]
    fuzzy = (await sdrs.call("GET", base + "?name=ALPHA")).json()
    assert fuzzy["count"] == 2
    page = (await sdrs.call("GET", base + "?limit=1&offset=1")).json()
    assert (page["count"], [g["id"] for g in page["server_groups"]]) == (3, [GROUP_2])
    assert (await sdrs.call("GET", base + "?offset=5")).json() == {"server_groups": [], "count": 3}

    for query, code in [("limit=0", "SDRS.0221"), ("limit=1001", "SDRS.0221"), ("limit=x", "SDRS.0221"),
                        ("offset=-1", "SDRS.0222")]:  # fmt: skip
        answer = await sdrs.call("GET", f"{base}?{query}")
        assert (answer.status, answer.sdrs_error()[0]) == (400, code), query


async def test_group_lookup_errors(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(OTHER_PROJECT, GROUP, status="protected")
    unknown = await sdrs.call("GET", f"/v1/{PROJECT}/server-groups/{GROUP}")
    assert (unknown.status, unknown.sdrs_error()) == (400, ("SDRS.1013", "Protection group not found"))
    malformed = await sdrs.call("GET", f"/v1/{PROJECT}/server-groups/not-a-uuid")
    assert (malformed.status, malformed.sdrs_error()) == (400, ("SDRS.0207", "Invalid protection group ID"))
    no_api = await sdrs.call("GET", f"/v1/{PROJECT}/volumes")
    assert no_api.status == 404
    assert no_api.json()["error_code"] == "APIGW.0101"


# -- gating matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", MATRIX_STATUSES + OTHER_STATUSES)
@pytest.mark.parametrize("action", list(ACTION_BODIES))
async def test_gating_matrix(sdrs: Sdrs, clock: FakeClock, action: str, status: str) -> None:
    priority_station = "source"  # reverse-server-group asks for "target", the other site
    sdrs.sim.add_protection_group(PROJECT, GROUP, status=status, priority_station=priority_station)
    answer = await sdrs.action(ACTION_BODIES[action])
    expected_type = ALLOWED.get((action, status))
    if expected_type is None:
        assert answer.status == 400
        assert answer.sdrs_error() == (
            "SDRS.1002",
            "Operation not allowed for the protection group in the current state",
        )
        assert (await sdrs.group())["status"] == status
        assert len(sdrs.sim.state.jobs) == 0
        return
    assert answer.status == 200
    job = await sdrs.job(answer.json()["job_id"])
    assert (job["job_type"], job["status"]) == (expected_type, "INIT")
    assert (await sdrs.group())["status"] == status  # unchanged while INIT
    clock.advance(INIT_S)
    assert (await sdrs.group())["status"] == TRANSITIONAL[expected_type][0]
    clock.advance(RUN_S)
    assert (await sdrs.job(job["job_id"]))["status"] == "SUCCESS"
    assert (await sdrs.group())["status"] == TRANSITIONAL[expected_type][1]


async def test_action_needs_replication_pairs(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available", pair_count=0)
    answer = await sdrs.action({"start-server-group": {}})
    assert (answer.status, answer.sdrs_error()[0]) == (400, "SDRS.1002")


@pytest.mark.parametrize(("raw", "code"), [
    (b"not json", "SDRS.0201"),
    (b"[]", "SDRS.0201"),
    (b"{}", "SDRS.0206"),
    (b'{"start-server-group": {}, "stop-server-group": {}}', "SDRS.0206"),
    (b'{"os-reprotect-replication-consistency-group": null}', "SDRS.0206"),
    (b'{"start-server-group": "yes"}', "SDRS.0201"),
    (b'{"reverse-server-group": {}}', "SDRS.0201"),
    (b'{"reverse-server-group": {"priority_station": "eu-de-02"}}', "SDRS.0201"),
    (b'{"reverse-server-group": {"priority_station": "source"}}', "SDRS.0201"),  # already production
])  # fmt: skip
async def test_malformed_action_bodies_are_refused(sdrs: Sdrs, raw: bytes, code: str) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", priority_station="source")
    answer = await sdrs.call("POST", f"/v1/{PROJECT}/server-groups/{GROUP}/action", raw=raw)
    assert (answer.status, answer.sdrs_error()[0]) == (400, code)
    assert sdrs.sim.state.jobs == {}


async def test_action_on_unknown_or_malformed_group(sdrs: Sdrs) -> None:
    unknown = await sdrs.action({"start-server-group": {}}, group_id=UNKNOWN_GROUP)
    assert (unknown.status, unknown.sdrs_error()[0]) == (400, "SDRS.1013")
    malformed = await sdrs.action({"start-server-group": {}}, group_id="12345")
    assert (malformed.status, malformed.sdrs_error()[0]) == (400, "SDRS.0207")


# -- jobs and the status machine over time ------------------------------------------------------------


async def test_reprotect_job_lifecycle_follows_the_clock(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(
        PROJECT, GROUP, status="failed-over", priority_station="target", pair_count=2
    )
    clock.advance(60)
    job_id = await sdrs.start_job({"start-server-group": {}})

    job = await sdrs.job(job_id)
    assert job == {
        "job_id": job_id, "job_type": "reprotectProtectionGroupNoCG", "status": "INIT",
        "entities": {"server_group_id": GROUP}, "begin_time": "2019-05-23T03:52:58.256Z",
        "end_time": None, "error_code": None, "fail_reason": None,
    }  # fmt: skip
    assert (await sdrs.group())["status"] == "failed-over"
    assert {(p["replication_status"], p["status"]) for p in await sdrs.pairs()} == {
        ("active-stopped", "failed-over")
    }

    clock.advance(INIT_S)
    assert (await sdrs.job(job_id))["status"] == "RUNNING"
    group = await sdrs.group()
    assert (group["status"], group["progress"]) == ("reprotecting", 0)
    assert group["updated_at"] == "2019-05-23 03:53:00.256"
    clock.advance(RUN_S / 2)
    pairs = await sdrs.pairs()
    assert [(p["status"], p["replication_status"], p["progress"]) for p in pairs] == [
        ("reprotecting", "copying", 50)
    ] * 2

    clock.advance(RUN_S / 2)
    job = await sdrs.job(job_id)
    assert (job["status"], job["end_time"]) == ("SUCCESS", "2019-05-23T03:53:10.256Z")
    group = await sdrs.group()
    assert (group["status"], group["priority_station"], group["progress"]) == ("protected", "target", 100)
    pairs = await sdrs.pairs()
    assert [(p["status"], p["replication_status"], p["progress"]) for p in pairs] == [
        ("protected", "active", 100)
    ] * 2


async def test_second_start_during_init_is_accepted_as_sdrs_does(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    first = await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S / 2)
    second = await sdrs.start_job({"start-server-group": {}})
    assert first != second
    clock.advance(INIT_S / 2)  # the first job is RUNNING now: the status gate closes
    third = await sdrs.action({"start-server-group": {}})
    assert (third.status, third.sdrs_error()[0]) == (400, "SDRS.1002")
    clock.advance(RUN_S + INIT_S)
    assert [(await sdrs.job(j))["status"] for j in (first, second)] == ["SUCCESS", "SUCCESS"]
    assert (await sdrs.group())["status"] == "protected"


async def test_enable_then_disable_moves_pairs_from_inactive_to_active_stopped(
    sdrs: Sdrs, clock: FakeClock
) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="available")
    assert [(p["replication_status"], p["progress"]) for p in await sdrs.pairs()] == [("inactive", 0)]
    job_id = await sdrs.start_job({"start-server-group": {}})
    assert (await sdrs.job(job_id))["job_type"] == "startProtectionGroupNoCG"
    clock.advance(INIT_S + RUN_S / 4)
    assert [(p["status"], p["replication_status"], p["progress"]) for p in await sdrs.pairs()] == [
        ("starting", "copying", 25)
    ]
    clock.advance(RUN_S)
    assert (await sdrs.group())["status"] == "protected"
    stop_id = await sdrs.start_job({"stop-server-group": {}})
    clock.advance(INIT_S)
    assert [(p["status"], p["replication_status"]) for p in await sdrs.pairs()] == [("stopping", "active")]
    clock.advance(RUN_S)
    assert (await sdrs.job(stop_id))["job_type"] == "stopProtectionGroupNoCG"
    assert (await sdrs.group())["status"] == "available"
    assert [(p["status"], p["replication_status"]) for p in await sdrs.pairs()] == [
        ("available", "active-stopped")
    ]


async def test_failover_flips_priority_station_and_stops_replication(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", priority_station="source")
    await sdrs.start_job({"failover-server-group": {}})
    clock.advance(INIT_S)
    group = await sdrs.group()
    assert (group["status"], group["priority_station"]) == ("failing-over", "source")
    clock.advance(RUN_S)
    group = await sdrs.group()
    assert (group["status"], group["priority_station"]) == ("failed-over", "target")
    [pair] = await sdrs.pairs()
    assert (pair["priority_station"], pair["replication_status"], pair["status"]) == (
        "target",
        "active-stopped",
        "failed-over",
    )


async def test_failover_is_refused_when_a_replication_link_is_broken(sdrs: Sdrs) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
    group.pairs[1].fault_level = "5"
    answer = await sdrs.action({"failover-server-group": {}})
    assert (answer.status, answer.sdrs_error()[0]) == (400, "SDRS.1824")
    assert (await sdrs.pairs())[1]["fault_level"] == "5"


@pytest.mark.parametrize(("current", "requested"), [("source", "target"), ("target", "source")])
async def test_reverse_sets_the_requested_production_site(
    sdrs: Sdrs, clock: FakeClock, current: str, requested: str
) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", priority_station=current)
    job_id = await sdrs.start_job({"reverse-server-group": {"priority_station": requested}})
    clock.advance(INIT_S)
    assert ((await sdrs.group())["status"], (await sdrs.group())["priority_station"]) == (
        "reversing",
        current,
    )
    assert [p["replication_status"] for p in await sdrs.pairs()] == ["active"]
    clock.advance(RUN_S)
    assert (await sdrs.job(job_id))["job_type"] == "reverseProtectionGroupNoCG"
    group = await sdrs.group()
    assert (group["status"], group["priority_station"]) == ("protected", requested)
    assert [p["priority_station"] for p in await sdrs.pairs()] == [requested]


async def test_failed_job_reports_its_error_and_leaves_the_error_status(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over", priority_station="target")
    sdrs.sim.fail_next_job(PROJECT, GROUP, error_code="SDRS.1032", fail_reason="DR site server not stopped")
    job_id = await sdrs.start_job({"start-server-group": {}})
    clock.advance(INIT_S)
    assert (await sdrs.job(job_id))["status"] == "RUNNING"
    assert (await sdrs.group())["status"] == "reprotecting"
    clock.advance(RUN_S)
    job = await sdrs.job(job_id)
    assert (job["status"], job["error_code"], job["fail_reason"]) == (
        "FAIL",
        "SDRS.1032",
        "DR site server not stopped",
    )
    assert job["end_time"] is not None
    group = await sdrs.group()
    assert (group["status"], group["priority_station"]) == ("error-reprotecting", "target")
    assert [p["replication_status"] for p in await sdrs.pairs()] == ["inactive"]

    retry = await sdrs.start_job({"start-server-group": {}})  # the failure was used up
    clock.advance(INIT_S + RUN_S)
    assert (await sdrs.job(retry))["status"] == "SUCCESS"
    assert (await sdrs.group())["status"] == "protected"


async def test_failed_job_defaults_to_the_documented_failure_code(sdrs: Sdrs, clock: FakeClock) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected")
    sdrs.sim.fail_next_job(PROJECT, GROUP)
    job_id = await sdrs.start_job({"stop-server-group": {}})
    clock.advance(INIT_S + RUN_S)
    job = await sdrs.job(job_id)
    assert (job["status"], job["error_code"]) == ("FAIL", "SDRS.1028")
    assert job["fail_reason"]
    assert (await sdrs.group())["status"] == "error-stopping"


async def test_unknown_job_is_404_null_job(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    job_id = await sdrs.start_job({"start-server-group": {}})
    for project, job in [(PROJECT, "0" * 32), (OTHER_PROJECT, job_id), (PROJECT, "bogus")]:
        answer = await sdrs.call("GET", f"/v1/{project}/jobs/{job}")
        assert answer.status == 404
        assert answer.json() == {"error": {"code": "SDRS.0408", "message": "Null job"}}


# -- replication pairs -----------------------------------------------------------------------------


async def test_replication_list_and_detail(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", name="db", pair_count=2)
    sdrs.sim.add_protection_group(PROJECT, GROUP_2, status="available", name="web", pair_count=1)
    base = f"/v1/{PROJECT}/replications"

    listing = (await sdrs.call("GET", f"{base}?server_group_id={GROUP}")).json()
    assert listing["count"] == 2
    pair = listing["replications"][0]
    assert set(pair) == {
        "id", "name", "description", "replication_model", "status", "progress", "replication_status",
        "attachment", "server_group_id", "volume_ids", "priority_station", "fault_level", "created_at",
        "updated_at", "record_metadata",
    }  # fmt: skip
    assert pair["server_group_id"] == GROUP
    assert re.fullmatch(r"[0-9a-f-]{36},[0-9a-f-]{36}", pair["volume_ids"])
    assert pair["fault_level"] == "0"
    assert pair["record_metadata"] == {
        "multiattach": False,
        "bootable": False,
        "volume_size": 10,
        "volume_type": "SATA",
    }
    assert pair["created_at"] == "2019-05-23T03:51:58.256000"
    assert (pair["status"], pair["replication_status"], pair["progress"]) == ("protected", "active", 100)

    assert (await sdrs.call("GET", base)).json()["count"] == 3
    assert (await sdrs.call("GET", f"{base}?status=available")).json()["count"] == 1
    assert (await sdrs.call("GET", f"{base}?name=web")).json()["count"] == 1
    page = (await sdrs.call("GET", f"{base}?limit=2&offset=2")).json()
    assert (page["count"], [p["server_group_id"] for p in page["replications"]]) == (3, [GROUP_2])
    assert (await sdrs.call("GET", f"{base}?server_group_id={UNKNOWN_GROUP}")).json() == {
        "replications": [],
        "count": 0,
    }
    bad_filter = await sdrs.call("GET", f"{base}?server_group_id=nope")
    assert (bad_filter.status, bad_filter.sdrs_error()[0]) == (400, "SDRS.0207")

    detail = await sdrs.call("GET", f"{base}/{pair['id']}")
    assert detail.json() == {"replication": pair}
    unknown = await sdrs.call("GET", f"{base}/{UNKNOWN_GROUP}")
    assert (unknown.status, unknown.sdrs_error()) == (400, ("SDRS.1608", "Replication pair not found"))
    malformed = await sdrs.call("GET", f"{base}/x")
    assert (malformed.status, malformed.sdrs_error()[0]) == (400, "SDRS.0213")


async def test_extend_replication(sdrs: Sdrs, clock: FakeClock) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected", volume_size=10)
    pair_id = group.pairs[0].id
    url = f"/v1/{PROJECT}/replications/{pair_id}/action"

    too_small = await sdrs.call("POST", url, {"extend-replication": {"new_size": 10}})
    assert (too_small.status, too_small.sdrs_error()[0]) == (400, "SDRS.0201")
    wrong_key = await sdrs.call("POST", url, {"resize": {"new_size": 20}})
    assert (wrong_key.status, wrong_key.sdrs_error()[0]) == (400, "SDRS.0206")
    not_json = await sdrs.call("POST", url, raw=b"{")
    assert (not_json.status, not_json.sdrs_error()[0]) == (400, "SDRS.0201")

    answer = await sdrs.call("POST", url, {"extend-replication": {"new_size": 20.9}})  # decimals cut off
    assert answer.status == 200
    job = await sdrs.job(answer.json()["job_id"])
    assert job["job_type"] == "expandReplicationPairNew"
    assert job["entities"] == {"server_group_id": GROUP, "replication_pair_id": pair_id}
    clock.advance(INIT_S)
    detail = (await sdrs.call("GET", f"/v1/{PROJECT}/replications/{pair_id}")).json()["replication"]
    assert (detail["status"], detail["record_metadata"]["volume_size"]) == ("extending", 10)
    busy = await sdrs.call("POST", url, {"extend-replication": {"new_size": 30}})
    assert (busy.status, busy.sdrs_error()[0]) == (400, "SDRS.0214")
    assert (await sdrs.group())["status"] == "protected"  # a pair job leaves the group alone
    clock.advance(RUN_S)
    detail = (await sdrs.call("GET", f"/v1/{PROJECT}/replications/{pair_id}")).json()["replication"]
    assert (detail["status"], detail["record_metadata"]["volume_size"]) == ("protected", 20)


async def test_failed_extend_leaves_error_extending_which_may_extend_again(
    sdrs: Sdrs, clock: FakeClock
) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="protected")
    pair_id = group.pairs[0].id
    url = f"/v1/{PROJECT}/replications/{pair_id}/action"
    sdrs.sim.fail_next_job(PROJECT, GROUP)
    failed = (await sdrs.call("POST", url, {"extend-replication": {"new_size": 20}})).json()["job_id"]
    clock.advance(INIT_S + RUN_S)
    assert ((await sdrs.job(failed))["status"], (await sdrs.job(failed))["error_code"]) == (
        "FAIL",
        "SDRS.1820",
    )
    assert [(p["status"], p["record_metadata"]["volume_size"]) for p in await sdrs.pairs()] == [
        ("error-extending", 10)
    ]
    again = await sdrs.call("POST", url, {"extend-replication": {"new_size": 20}})
    assert again.status == 200
    clock.advance(INIT_S + RUN_S)
    assert [(p["status"], p["record_metadata"]["volume_size"]) for p in await sdrs.pairs()] == [
        ("protected", 20)
    ]


async def test_extend_is_refused_for_a_failed_over_pair(sdrs: Sdrs) -> None:
    group = sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    answer = await sdrs.call(
        "POST",
        f"/v1/{PROJECT}/replications/{group.pairs[0].id}/action",
        {"extend-replication": {"new_size": 50}},
    )
    assert (answer.status, answer.sdrs_error()) == (400, ("SDRS.0214", "Incorrect replication pair status"))


# -- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "says"), [(None, "x-auth-token not found"), ("wrong", "decrypt token fail")]
)
async def test_token_is_required(sdrs: Sdrs, token: str | None, says: str) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    answer = await sdrs.call(
        "POST", f"/v1/{PROJECT}/server-groups/{GROUP}/action", {"start-server-group": {}}, token=token
    )
    assert answer.status == 401
    body = answer.json()
    assert body["error_code"] == "APIGW.0301"
    assert body["error_msg"] == f"Incorrect IAM authentication information: {says}"
    assert body["request_id"] == answer.headers["X-Request-Id"]
    assert sdrs.sim.state.jobs == {}
    assert sdrs.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]  # recorded, not executed


async def test_any_token_is_accepted_without_a_token_set() -> None:
    sim = SdrsSimulator(SimulatorSettings())
    seed_demo_group(sim)
    runner, url = await start_runner(sim.app())
    try:
        async with aiohttp.ClientSession() as session:
            path = f"{url}/v1/{DEMO_PROJECT_ID}/server-groups/{DEMO_GROUP_ID}"
            async with session.get(path, headers={"X-Auth-Token": "anything"}) as response:
                assert response.status == 200
                group = (await response.json())["server_group"]
            async with session.get(path, headers={"X-Auth-Token": ""}) as response:
                assert response.status == 401
    finally:
        await runner.cleanup()
    assert (group["status"], group["priority_station"], group["replication_num"]) == (
        "failed-over",
        "target",
        2,
    )
    assert (group["source_availability_zone"], group["target_availability_zone"]) == ("eu-de-01", "eu-de-02")


# -- recording and fault injection -----------------------------------------------------------------


async def test_requests_and_action_calls_are_recorded(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    assert (await sdrs.action({"start-server-group": {}})).status == 200
    assert (await sdrs.action({"start-server-group": {}})).status == 200  # still INIT: accepted
    assert (await sdrs.action({"stop-server-group": {}})).status == 400
    await sdrs.call("POST", f"/v1/{PROJECT}/server-groups/{GROUP}/action", raw=b"garbage")
    await sdrs.call("GET", f"/v1/{PROJECT}/replications?limit=5")
    assert sdrs.sim.action_calls == [
        (PROJECT, GROUP, "start-server-group"),
        (PROJECT, GROUP, "start-server-group"),
        (PROJECT, GROUP, "stop-server-group"),
        (PROJECT, GROUP, ""),
    ]
    method, path_qs, headers = sdrs.sim.requests[-1]
    assert (method, path_qs) == ("GET", f"/v1/{PROJECT}/replications?limit=5")
    assert headers["x-auth-token"] == TOKEN
    assert len(sdrs.sim.requests) == 5


async def test_fault_status_replaces_matching_requests_only(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    sdrs.sim.inject(Fault(method="POST", path_suffix="/action", status=503, body=b"upstream busy",
                          headers={"Retry-After": "7"}, times=2))  # fmt: skip
    assert (await sdrs.group())["status"] == "failed-over"  # GET does not match
    for _ in range(2):
        answer = await sdrs.action({"start-server-group": {}})
        assert (answer.status, answer.body, answer.headers["Retry-After"]) == (503, b"upstream busy", "7")
        assert HEX32.fullmatch(answer.headers["X-Request-Id"])
    assert sdrs.sim.state.jobs == {}
    assert (await sdrs.action({"start-server-group": {}})).status == 200  # used up
    assert len(sdrs.sim.action_calls) == 3


async def test_fault_dict_body_is_sent_as_json(sdrs: Sdrs) -> None:
    sdrs.sim.inject(
        Fault(method="GET", status=500, body={"error": {"code": "SDRS.0013", "message": "Internal error"}})
    )
    answer = await sdrs.call("GET", f"/v1/{PROJECT}/server-groups/{GROUP}")
    assert answer.status == 500
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.sdrs_error() == ("SDRS.0013", "Internal error")


async def test_fault_delay_then_normal_answer() -> None:
    sim = SdrsSimulator(SimulatorSettings())
    seed_demo_group(sim)
    sim.inject(Fault(path_suffix=f"/server-groups/{DEMO_GROUP_ID}", delay=0.3))
    runner, url = await start_runner(sim.app())
    try:
        async with aiohttp.ClientSession(headers={"X-Auth-Token": "t"}) as session:
            started = time.monotonic()
            async with session.get(f"{url}/v1/{DEMO_PROJECT_ID}/server-groups/{DEMO_GROUP_ID}") as response:
                assert response.status == 200
                assert (await response.json())["server_group"]["id"] == DEMO_GROUP_ID
            assert time.monotonic() - started >= 0.3
            assert sim.faults.pending == []  # used up: the next request is answered without the delay
            async with session.get(f"{url}/v1/{DEMO_PROJECT_ID}/server-groups/{DEMO_GROUP_ID}") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_fault_reset_drops_the_connection_without_an_answer(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    sdrs.sim.inject(Fault(method="POST", path_suffix="/action", reset=True))
    with pytest.raises(aiohttp.ClientOSError) as caught:
        await sdrs.action({"start-server-group": {}})
    assert caught.value.errno == errno.ECONNRESET  # an RST, not an orderly close
    assert sdrs.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    assert sdrs.sim.state.jobs == {}


async def test_fault_hang_never_answers(sdrs: Sdrs) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    sdrs.sim.inject(Fault(method="POST", path_suffix="/action", hang=True))
    url = f"{sdrs.url}/v1/{PROJECT}/server-groups/{GROUP}/action"
    async with aiohttp.ClientSession(headers={"X-Auth-Token": TOKEN}) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(url, json={"start-server-group": {}}, timeout=aiohttp.ClientTimeout(total=0.3))
    assert sdrs.sim.state.jobs == {}
    assert (await sdrs.action({"start-server-group": {}})).status == 200


@pytest.mark.parametrize("status", [None, 200])
async def test_fault_truncate_promises_more_than_it_sends(sdrs: Sdrs, status: int | None) -> None:
    sdrs.sim.add_protection_group(PROJECT, GROUP, status="failed-over")
    sdrs.sim.inject(Fault(method="GET", truncate=True, status=status, body=b'{"server_group": {}}'))
    async with sdrs.session.get(
        f"{sdrs.url}/v1/{PROJECT}/server-groups/{GROUP}", headers={"X-Auth-Token": TOKEN}
    ) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


def test_fault_times_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SdrsSimulator().inject(Fault(times=0))


# -- serve() -----------------------------------------------------------------------------------------


async def test_serve_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await serve("0.0.0.0", 0, SimulatorSettings(), seed_demo=False)


async def test_serve_runs_until_cancelled(unused_tcp_port: int) -> None:
    task = asyncio.create_task(serve("127.0.0.1", unused_tcp_port, SimulatorSettings(), seed_demo=True))
    url = f"http://127.0.0.1:{unused_tcp_port}/v1/{DEMO_PROJECT_ID}/server-groups/{DEMO_GROUP_ID}"
    try:
        async with aiohttp.ClientSession(headers={"X-Auth-Token": "t"}) as session:
            for _ in range(100):
                try:
                    async with session.get(url) as response:
                        assert response.status == 200
                        assert (await response.json())["server_group"]["status"] == "failed-over"
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.02)
            else:
                pytest.fail("serve() never started listening")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- the status machine as a property ----------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("action"), st.sampled_from(list(ACTION_BODIES)), st.sampled_from(["source", "target"])),
    st.tuples(st.just("wait"), st.floats(min_value=0, max_value=15), st.just("")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from(MATRIX_STATUSES), steps=st.lists(STEP, max_size=12))
def test_status_machine_gates_on_the_visible_status(start: str, steps: list[tuple[str, Any, str]]) -> None:
    """Whatever happens, an action is accepted iff the matrix allows it from the status clients see."""
    clock = FakeClock()
    ids = iter(range(1, 1000))
    state = SdrsState(
        SimulatorSettings(job_init_seconds=INIT_S, job_run_seconds=RUN_S), clock, lambda: f"{next(ids):032x}"
    )
    state.add_group(PROJECT, GROUP, status=start, name="pg", source_availability_zone="a",
                    target_availability_zone="b", priority_station="source", pair_count=1,
                    description=None, volume_size=10)  # fmt: skip
    for kind, what, station in steps:
        if kind == "wait":
            clock.advance(what)
            continue
        before = state.group(PROJECT, GROUP)
        status, production = before.status, before.priority_station
        try:
            job = state.submit_group_action(
                PROJECT, GROUP, what, station if what == "reverse-server-group" else None
            )
        except SdrsError as err:
            same_site = what == "reverse-server-group" and station == production
            assert (what, status) not in ALLOWED or (same_site and err.code == "SDRS.0201"), (
                what,
                status,
                err.code,
            )
        else:
            assert ALLOWED[(what, status)] == job.job_type
    clock.advance(INIT_S + RUN_S)
    final = state.group(PROJECT, GROUP)
    assert final.status not in {"starting", "reprotecting", "stopping", "reversing", "failing-over"}
    assert all(job.status(clock()) in ("SUCCESS", "FAIL") for job in state.jobs.values())
