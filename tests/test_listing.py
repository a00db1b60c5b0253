"""Legacy list calls merged from the legacy endpoint and SDRS, with the legacy filters and paging."""

from __future__ import annotations

import pytest
from aiohttp import web

from conftest import PROJECT, RCG, TOKEN, call, start_server
from golang_types import assert_go_decodes_group, assert_go_decodes_pair
from shim.simulator import SdrsSimulator, SimulatorSettings

GROUP_ID = "3e8f1a2b-4c5d-4e6f-9a0b-1c2d3e4f5a6b"
MAPPING = [{"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP_ID}]
HEADERS = {"Accept": "application/json", "User-Agent": "golangsdk/2.0.0", "X-Auth-Token": TOKEN}
LEGACY_ONLY = "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
GROUPS = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
PAIRS = f"/v2/{PROJECT}/os-vendor-replications"


def legacy_group(group_id: str, name: str, created: str, status: str = "available") -> dict:
    return {"id": group_id, "name": name, "description": None, "status": status,
            "priority_station": "eu-de-01", "replication_model": "hypermetro", "replication_status": "active",
            "replication_ids": [], "created_at": created, "updated_at": None, "fault_level": "0"}


class LegacyEvs:
    """A legacy endpoint that filters its own items like EVS (name, status) and records queries."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.groups = [
            legacy_group(LEGACY_ONLY, "legacy-only", "2017-09-28T05:08:32.839953"),
            # A stale copy of the migrated group, still known to the old endpoint.
            legacy_group(RCG, "stale-copy", "2017-10-01T00:00:00.000000", status="error"),
        ]
        self.pairs = [{"id": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "name": "legacy-pair", "status": "available",
                       "replication_consistency_group_id": LEGACY_ONLY, "volume_ids": "v1,v2",
                       "priority_station": "eu-de-01", "created_at": "2017-09-28T05:08:32.839953",
                       "updated_at": None, "replication_model": "hypermetro", "replication_status": "active",
                       "progress": "100", "failure_detail": None, "record_metadata": None, "fault_level": "0"}]

    async def handle(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if "/os-vendor-replications" in request.path:
            items, key = self.pairs, "replications"
        else:
            items, key = self.groups, "replication_consistency_groups"
        for field, value in request.query.items():
            if field not in ("limit", "marker", "offset", "sort_key", "sort_dir"):
                items = [item for item in items if item.get(field) == value]  # e.g. volume_id: no match
        return web.json_response({key: items})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def sources():
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.01, job_run_seconds=0.01))
    sim.add_protection_group(PROJECT, GROUP_ID, status="failed-over", name="migrated", pair_count=2,
                             priority_station="target")
    # Another project's group and an unmapped group of this project: never listed.
    sim.add_protection_group(PROJECT, "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c", status="protected")
    legacy = LegacyEvs()
    sim_runner, sim_url = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    yield sim, sim_url, legacy, legacy_url
    await sim_runner.cleanup()
    await legacy_runner.cleanup()


async def list_ids(shim: str, path: str, key: str, query: str = "") -> list[str]:
    reply = await call("GET", f"{shim}{path}{query}", headers=HEADERS)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    return [item["id"] for item in reply.json()[key]]


async def test_groups_list_merges_both_sources_and_lists_a_mapped_group_once(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)

    reply = await call("GET", shim + GROUPS, headers=HEADERS)

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    groups = reply.json()["replication_consistency_groups"]
    assert sorted(group["id"] for group in groups) == sorted([LEGACY_ONLY, RCG])
    migrated = next(group for group in groups if group["id"] == RCG)
    assert (migrated["name"], migrated["status"]) == ("migrated", "failovered")  # SDRS's, not the stale copy
    assert migrated["priority_station"] == "eu-de-02"
    for group in groups:
        assert_go_decodes_group(group, complete=group["id"] == RCG)
    assert legacy.queries == [{}]


@pytest.mark.parametrize(("query", "expected"), [
    ("?status=failovered", [RCG]),
    ("?status=available", [LEGACY_ONLY]),
    ("?name=migrated", [RCG]),
    ("?name=legacy-only", [LEGACY_ONLY]),
    ("?priority_station=eu-de-02", [RCG]),
    ("?sort_key=created_at&sort_dir=asc", [LEGACY_ONLY, RCG]),
    ("?sort_key=created_at&sort_dir=desc", [RCG, LEGACY_ONLY]),
    ("?sort_key=name&sort_dir=asc", [LEGACY_ONLY, RCG]),
    ("?sort_dir=asc&limit=1", [LEGACY_ONLY]),
    (f"?sort_dir=asc&marker={LEGACY_ONLY}", [RCG]),
    ("?sort_dir=asc&offset=1", [RCG]),
    ("?sort_dir=asc&offset=2", []),
])
async def test_groups_list_filters_and_pages_the_merged_list(sources, make_shim, query, expected):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    assert await list_ids(shim, GROUPS, "replication_consistency_groups", query) == expected
    for sent in legacy.queries:  # filters go to the legacy endpoint, paging never does
        assert not {"limit", "marker", "offset", "sort_key", "sort_dir"} & set(sent)


async def test_volume_id_filter_finds_the_group_holding_that_disk(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    volume = sim.group(PROJECT, GROUP_ID).pairs[1].volume_ids[1]
    ids = await list_ids(shim, GROUPS, "replication_consistency_groups", f"?volume_id={volume}")
    assert ids == [RCG]
    assert legacy.queries == []  # a list by a mapped group's disk is about that group: SDRS alone answers it


@pytest.mark.parametrize(("query", "code"), [
    ("?limit=0", "EVS.1023"), ("?limit=1001", "EVS.1023"), ("?limit=ten", "EVS.5400"),
    ("?offset=-1", "EVS.5400"), ("?marker=nope", "EVS.1024"),
    ("?marker=0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e", "EVS.1024"),
    ("?sort_key=volume_size", "EVS.1039"), ("?sort_dir=up", "EVS.1040"),
])
async def test_bad_paging_is_a_legacy_400(sources, make_shim, query, code):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    reply = await call("GET", shim + GROUPS + query, headers=HEADERS)
    assert reply.status == 400
    assert reply.fault() == ("badRequest", {"message": reply.fault()[1]["message"], "code": code})


async def test_without_a_legacy_endpoint_only_mapped_groups_are_listed(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, mapping=MAPPING)
    assert await list_ids(shim, GROUPS, "replication_consistency_groups") == [RCG]


async def test_a_project_without_mappings_is_passed_through_untouched(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    other = "abcdefabcdefabcdefabcdefabcdef12"
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    reply = await call("GET", f"{shim}/v2/{other}/os-vendor-replication-consistency-groups?limit=5&sort_dir=asc",
                       headers=HEADERS)
    assert reply.status == 200
    assert legacy.queries == [{"limit": "5", "sort_dir": "asc"}]
    assert sim.requests == []


async def test_legacy_endpoint_down_fails_the_merged_list_with_503(sources, make_shim, unused_tcp_port):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=f"http://127.0.0.1:{unused_tcp_port}", mapping=MAPPING)
    reply = await call("GET", shim + GROUPS, headers=HEADERS)
    assert reply.status == 503  # never a partial list that would hide groups
    assert reply.fault()[0] == "serviceUnavailable"


async def test_reads_of_a_mapped_group_need_a_token(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    for path in (GROUPS, f"{GROUPS}/{RCG}", PAIRS):
        reply = await call("GET", shim + path, headers={"Accept": "application/json"})
        assert reply.status == 401, path
    assert sim.requests == []


async def test_pairs_list_merges_and_filters_by_group(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    mapped_pairs = sorted(pair.id for pair in sim.group(PROJECT, GROUP_ID).pairs)

    reply = await call("GET", shim + PAIRS, headers=HEADERS)
    assert reply.status == 200
    pairs = reply.json()["replications"]
    assert sorted(pair["id"] for pair in pairs) == sorted([*mapped_pairs, legacy.pairs[0]["id"]])
    for pair in pairs:
        assert_go_decodes_pair(pair, complete=pair["id"] in mapped_pairs)

    mine = await list_ids(shim, PAIRS, "replications", f"?replication_consistency_group_id={RCG}")
    assert sorted(mine) == mapped_pairs
    first = sim.group(PROJECT, GROUP_ID).pairs[0]
    by_disks = await list_ids(shim, PAIRS, "replications", f"?volume_ids={first.volume_ids[1]}%2C{first.volume_ids[0]}")
    assert by_disks == [first.id]


async def test_a_pair_that_is_not_in_a_mapped_group_is_read_from_the_legacy_endpoint(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=MAPPING)
    unmapped_pair = sim.group(PROJECT, "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c").pairs[0].id
    for pair_id in (unmapped_pair, "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"):
        reply = await call("GET", f"{shim}{PAIRS}/{pair_id}", headers=HEADERS)
        assert reply.status == 200  # the recording legacy endpoint's answer
        assert "replications" in reply.json()
    assert len(legacy.queries) == 2


async def test_a_mapped_group_sdrs_no_longer_has_reads_as_404(sources, make_shim):
    sim, sim_url, legacy, legacy_url = sources
    gone = [{"project_id": PROJECT, "replication_consistency_group_id": LEGACY_ONLY,
             "protection_group_id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}]
    shim = await make_shim(sdrs=sim_url, legacy=legacy_url, mapping=gone)
    reply = await call("GET", f"{shim}{GROUPS}/{LEGACY_ONLY}", headers=HEADERS)
    assert reply.status == 404  # Terraform reads 404 as "deleted"
    assert reply.fault()[0] == "itemNotFound"


@pytest.mark.parametrize(("since", "listed"), [("2000-01-01T00:00:00Z", True), ("2000-01-01%2000:00:00", True),
                                              ("2999-01-01T00:00:00Z", False)])
async def test_changes_since_filters_mapped_groups(sources, make_shim, since, listed):
    sim, sim_url, legacy, legacy_url = sources
    shim = await make_shim(sdrs=sim_url, mapping=MAPPING)
    ids = await list_ids(shim, GROUPS, "replication_consistency_groups", f"?changes-since={since}")
    assert ids == ([RCG] if listed else [])
