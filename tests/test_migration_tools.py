"""The migration tools around a running shim: a mode change by SIGHUP (audited), `shim report` on the
store a running shim writes, `shim explain`, and `shim discover` over both simulators."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from conftest import GO_HEADERS, GROUP, PROJECT, RCG, REPROTECT_BODY, TOKEN, call, start_server, write_mappings
from migration_world import (
    DEFAULT_MODES,
    GROUPS,
    PARKED_GROUP,
    PARKED_RCG,
    SHADOW_GROUP,
    SHADOW_RCG,
    MigrationWorld,
    entry,
    upstreams,
)
from processes import ShimProcess, Spawn, spawner
from shim.mappings import load_mappings
from shim.migration.explain import explain


@pytest.fixture
async def world() -> AsyncIterator[MigrationWorld]:
    async for built in upstreams():
        yield built


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start


def write_config(tmp_path: Path, world: MigrationWorld, mapping: list[dict[str, str]],
                 projects: list[dict[str, str]] | None = None) -> Path:
    write_mappings(tmp_path / "mappings", mapping, projects)
    config = tmp_path / "shim.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": 0}, "log_level": "info", "mappings": "./mappings",
        "upstreams": {"sdrs": world.sdrs_url, "legacy": world.legacy_url},
        "state": {"backend": "sqlite", "path": "./state.sqlite3"}, "shadow": {"interval_seconds": 0}}))
    return config


async def run_shim(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`shim ARGS` as a process (the event loop keeps serving the simulators meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def get(shim: ShimProcess, path: str) -> dict[str, Any]:
    reply = await call("GET", shim.url + path, headers={"X-Auth-Token": TOKEN})
    assert reply.status == 200, reply.body
    return reply.json()


async def settled(shim: ShimProcess, rcg_id: str, comparisons: int) -> dict[str, Any]:
    """The shim's /migration once the group has that many shadow comparisons."""
    for _ in range(500):
        report = await get(shim, "/migration")
        (group,) = [group for group in report["groups"] if group["rcg_id"] == rcg_id]
        if sum(group["shadow"]["comparisons"].values()) >= comparisons:
            return report
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {comparisons} comparisons: {group}")


# -- a mode change is a mapping change: SIGHUP, audited --------------------------------------------


async def test_a_mode_change_by_sighup_takes_effect_and_is_audited_per_group(tmp_path, world, spawn):
    config = write_config(tmp_path, world, [entry(SHADOW_RCG, SHADOW_GROUP), entry(PARKED_RCG, PARKED_GROUP)])
    shim = await spawn(config)
    group_path = f"{GROUPS}/{SHADOW_RCG}"
    assert (await get(shim, group_path))["replication_consistency_group"]["name"] == "pg-shadow"  # from SDRS

    write_mappings(tmp_path / "mappings", [entry(SHADOW_RCG, SHADOW_GROUP, "legacy"),
                                           entry(PARKED_RCG, PARKED_GROUP)], projects=[])
    shim.proc.send_signal(signal.SIGHUP)
    (changed,) = await shim.wait_for(lambda record: record.get("logger") == "shim.migration")
    await shim.wait_for(lambda record: record.get("message") == "reloaded config and mappings")

    assert changed["message"] == "mode changed: sdrs -> legacy" and changed["level"] == "info"
    assert (changed["project_id"], changed["rcg_id"], changed["protection_group_id"]) == (
        PROJECT, SHADOW_RCG, SHADOW_GROUP)
    assert (changed["old_mode"], changed["new_mode"]) == ("sdrs", "legacy")
    assert (await get(shim, group_path))["replication_consistency_group"]["name"] == f"legacy-{SHADOW_RCG[:8]}"

    write_mappings(tmp_path / "mappings", [entry(SHADOW_RCG, SHADOW_GROUP, "legacy")],
                   projects=[{"project_id": PROJECT, "mode": "shadow"}])
    shim.proc.send_signal(signal.SIGHUP)
    lines = await shim.wait_for(lambda record: record.get("logger") == "shim.migration", count=3)

    assert {(line["message"], line.get("rcg_id")) for line in lines[1:]} == {
        ("mode changed: sdrs -> unmapped", PARKED_RCG), ("project default mode changed: none -> shadow", None)}


# -- shim report -----------------------------------------------------------------------------------


async def test_shim_report_shows_what_a_running_shim_recorded_in_its_store(tmp_path, world, spawn):
    world.legacy.group(PROJECT, SHADOW_RCG).status = "failovered"  # a disagreement to report
    config = write_config(tmp_path, world, DEFAULT_MODES)
    shim = await spawn(config)
    await get(shim, f"{GROUPS}/{SHADOW_RCG}")
    reply = await call("POST", f"{shim.url}{GROUPS}/{SHADOW_RCG}/action", headers=GO_HEADERS,
                       body=b'{"os-stop-replication-consistency-group":null}\n')
    assert reply.status == 200
    reprotect = await call("POST", f"{shim.url}{GROUPS}/{RCG}/action", headers=GO_HEADERS, body=REPROTECT_BODY)
    assert reprotect.status == 200
    served = await settled(shim, SHADOW_RCG, 1)
    for _ in range(500):  # the dry run, too
        if next(group for group in served["groups"] if group["rcg_id"] == SHADOW_RCG)["shadow"]["last_dry_run"]:
            break
        await asyncio.sleep(0.02)
        served = await get(shim, "/migration")

    status, table, err = await run_shim("report", "--config", str(config))
    assert status == 0, err
    lines = table.splitlines()
    (shadow_row,) = [line for line in lines if line.startswith(f"{PROJECT}  {SHADOW_RCG}")]
    assert shadow_row.split()[2:6] == ["shadow", "0", "1", "0"] and "status x1" in shadow_row
    (sdrs_row,) = [line for line in lines if line.startswith(f"{PROJECT}  {RCG}")]
    assert sdrs_row.split()[2] == "sdrs" and "reprotect" in sdrs_row and "(job " in sdrs_row
    (parked_row,) = [line for line in lines if line.startswith(f"{PROJECT}  {PARKED_RCG}")]
    assert parked_row.split()[2:6] == ["legacy", "0", "0", "0"]
    assert "    status: legacy failovered, sdrs available" in lines
    assert any(line.startswith("  last dry run") and "os-stop-replication-consistency-group" in line
               and "sdrs mode would answer 200" in line for line in lines)
    planned = f"/v1/{PROJECT}/server-groups/{SHADOW_GROUP}/action"
    assert f'    would send POST {planned} {{"stop-server-group": {{}}}}' in lines

    status, out, err = await run_shim("report", "--config", str(config), "--json")
    assert status == 0, err
    from_file = json.loads(out)
    served = await get(shim, "/migration")
    # /migration got a token (`get` sends one), so it also asked SDRS about the unfinished job; the
    # file's report had none: the same record otherwise.
    (asked,) = [group["last_action"] for group in served["groups"] if group["rcg_id"] == RCG]
    assert asked["sdrs"]["error"] is None and asked["sdrs"]["jobs"][0]["status"] in ("INIT", "RUNNING", "SUCCESS")
    for group in served["groups"]:
        if group["last_action"] is not None and group["last_action"]["sdrs"] is not None:
            group["last_action"].update(sdrs=None, outcome="running")
    for group in served["groups"] + from_file["groups"]:  # the next step's command names the serving shim's pid
        assert group["readiness"].pop("next_step") is None or group["mode"] != "sdrs"
    assert from_file["groups"] == served["groups"] and from_file["state_store"] == "available"
    (action,) = [group["last_action"] for group in from_file["groups"] if group["rcg_id"] == RCG]
    assert action["action"] == "os-reprotect-replication-consistency-group" and action["job_ids"]
    assert TOKEN not in table + out


async def test_shim_report_without_a_state_file_shows_the_modes_and_creates_nothing(tmp_path, world):
    config = write_config(tmp_path, world, DEFAULT_MODES)
    status, table, err = await run_shim("report", "--config", str(config))

    assert status == 0 and "no state file" in err
    assert not (tmp_path / "state.sqlite3").exists()
    assert [line.split()[2] for line in table.splitlines() if line.startswith(PROJECT)] == ["shadow", "legacy", "sdrs"]


# -- shim explain ----------------------------------------------------------------------------------


def test_explain_names_the_entry_the_mode_the_sdrs_calls_and_the_answer(tmp_path):
    mappings = load_mappings(write_mappings(tmp_path, DEFAULT_MODES))
    action = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"

    text = explain(mappings, "POST", f"http://127.0.0.1:8080{action}",
                   b'{"os-reprotect-replication-consistency-group": null}').render()

    assert "Owner:   SDRS (translated by the shim)" in text
    assert f"consistency_groups[0] maps it to protection group {GROUP}; mode sdrs, from the default" in text
    assert (f'  POST /v1/{PROJECT}/server-groups/{GROUP}/action {{"start-server-group": {{}}}}  (only when the SDRS '
            "group is error-reprotecting or failed-over)") in text
    assert "Answer:  200 with an empty body; 400 badRequest (status must be failovered)" in text


@pytest.mark.parametrize("method, path, body, expected", [
    ("GET", f"{GROUPS}/{SHADOW_RCG}", None, ["Owner:   the legacy endpoint (relayed unchanged)", "mode shadow",
                                            f"Shadow:  afterwards (at most once per shadow.interval_seconds) the shim "
                                            f"reads GET /v1/{PROJECT}/server-groups/{SHADOW_GROUP}"]),
    ("POST", f"{GROUPS}/{SHADOW_RCG}/action", '{"os-stop-replication-consistency-group": null}',
     ["Owner:   the legacy endpoint (relayed unchanged)", "Shadow:  afterwards the shim records a dry run",
      "nothing but GETs is sent to SDRS", "SDRS calls the shim would make: none"]),
    ("POST", f"{GROUPS}/{PARKED_RCG}/action", '{"os-stop-replication-consistency-group": null}',
     ["mode legacy: every call about the group goes to the legacy endpoint; SDRS is never asked",
      "SDRS calls the shim would make: none"]),
    ("GET", f"{GROUPS}/{SHADOW_RCG}x", None, ["Owner:   the shim itself", "Answer:  400 Malformed request url"]),
    ("GET", f"/v2/{PROJECT}/volumes", None, ["not a replication consistency group or replication pair URL"]),
    ("GET", "/migration", None, ["the shim's own management endpoint"]),
    ("POST", "/metrics", None, ["Owner:   the shim itself", "Answer:  405 badMethod (Allow: GET, HEAD)"]),
    ("GET", f"{GROUPS}/{SHADOW_RCG}/action%3F", None, ["Owner:   the shim itself", "Answer:  400 Malformed request url",
                                                     "canonical form"]),
])
def test_explain_for_each_mode_and_kind_of_url(tmp_path, method, path, body, expected):
    mappings = load_mappings(write_mappings(tmp_path, DEFAULT_MODES))
    text = explain(mappings, method, path, None if body is None else body.encode()).render()
    for line in expected:
        assert line in text, text


@pytest.mark.parametrize("key, sdrs_action", [
    ("os-reprotect-replication-consistency-group", "start-server-group"),
    ("os-stop-replication-consistency-group", "stop-server-group"),
    ("os-failover-replication-consistency-group", "failover-server-group"),
])
def test_explain_of_a_shadow_action_names_the_sdrs_call_sdrs_mode_would_send(tmp_path, key, sdrs_action):
    mappings = load_mappings(write_mappings(tmp_path, DEFAULT_MODES))
    text = explain(mappings, "POST", f"{GROUPS}/{SHADOW_RCG}/action", json.dumps({key: None}).encode()).render()

    (shadow,) = [line for line in text.splitlines() if line.startswith("Shadow:")]
    assert (f"what sdrs mode would have sent, POST /v1/{PROJECT}/server-groups/{SHADOW_GROUP}/action "
            f'{{"{sdrs_action}": ') in shadow, shadow
    assert "nothing but GETs is sent to SDRS" in shadow
    assert "SDRS calls the shim would make: none" in text  # in shadow mode the shim itself sends no action


def test_explain_in_a_fully_migrated_project(tmp_path):
    mappings = load_mappings(write_mappings(tmp_path, [entry(RCG, GROUP)], [{"project_id": PROJECT, "mode": "sdrs"}]))

    unmapped = explain(mappings, "GET", f"{GROUPS}/{SHADOW_RCG}").render()
    listing = explain(mappings, "GET", GROUPS).render()

    assert "Answer:  404 itemNotFound" in unmapped and "is fully migrated" in unmapped
    assert "Answer:  200 the SDRS groups only (no legacy call)" in listing


async def test_shim_explain_on_the_command_line(tmp_path, world):
    config = write_config(tmp_path, world, DEFAULT_MODES)
    status, out, err = await run_shim("explain", "--config", str(config), "GET", f"{GROUPS}/{RCG}")

    assert status == 0, err
    assert out.startswith(f"GET {GROUPS}/{RCG}\nOwner:   SDRS (translated by the shim)\n")
    assert out.endswith("(nothing was sent: this is an explanation)\n")
    assert world.sim.requests == [] and world.legacy.requests == []


# -- shim discover ---------------------------------------------------------------------------------

SHARED_GROUP = "9a4bc061-7f84-4293-9ea5-c6d7e8f90a1b"
LONELY_GROUP = "ab5cd172-8095-43a4-afb6-d7e8f90a1b2c"
MAPPING_HEAD = "# hand-written: the first group we moved\n"


def discovery_world(world: MigrationWorld) -> dict[str, str]:
    """Beside the three faithful copies: one SDRS disk claimed by two legacy groups, a legacy group SDRS
    knows nothing of, and an SDRS group no legacy group matches."""
    shared = world.sim.add_protection_group(PROJECT, SHARED_GROUP, status="protected", name="pg-shared")
    disk = shared.pairs[0].volume_ids[0]
    beta = world.legacy.add_group(PROJECT, name="beta", pair_count=0)
    gamma = world.legacy.add_group(PROJECT, name="gamma", pair_count=0)
    for group, other_disk in ((beta, shared.pairs[0].volume_ids[1]), (gamma, "0f1e2d3c-4b5a-4697-8877-665544332211")):
        pair = world.legacy.add_pair(PROJECT, volume_ids=(disk, other_disk), group_id=group.id,
                                     replication_status="active")
        group.replication_ids.append(pair.id)
    delta = world.legacy.add_group(PROJECT, name="delta", pair_count=1)
    world.sim.add_protection_group(PROJECT, LONELY_GROUP, status="available", name="pg-lonely")
    return {"disk": disk, "beta": beta.id, "gamma": gamma.id, "delta": delta.id}


async def test_discover_matches_by_production_volume_and_reports_what_it_cannot(tmp_path, world):
    found = discovery_world(world)
    config = write_config(tmp_path, world, [entry(RCG, GROUP)])
    mapping_file = tmp_path / "mappings" / "consistency-groups.yaml"
    mapping_file.write_text(MAPPING_HEAD + mapping_file.read_text())
    before = mapping_file.read_text()

    status, out, err = await run_shim("discover", "--config", str(config), "--project", PROJECT,
                                      env={"OS_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"})

    assert status == 0, err
    assert out.startswith(before)  # the file as it was, comments included, then the new entries
    assert "\n\n" not in out and "\n# discovered " in out
    entries = yaml.safe_load(out)["consistency_groups"]
    assert all(len(found.pop("legacy")["pairs"]) == 2 for found in entries[1:])  # each with its legacy identity
    assert entries == [entry(RCG, GROUP), entry(SHADOW_RCG, SHADOW_GROUP, "shadow"),
                       entry(PARKED_RCG, PARKED_GROUP, "shadow")] or entries == [
        entry(RCG, GROUP), entry(PARKED_RCG, PARKED_GROUP, "shadow"), entry(SHADOW_RCG, SHADOW_GROUP, "shadow")]
    assert "share 2 production volume(s)" in out
    assert "Matched (new entries, mode shadow): 2" in err and "Already mapped: 1" in err
    assert "Ambiguous (not written): 2" in err
    assert f"legacy 'beta' ({found['beta']}): volume {found['disk']} is also a production volume of legacy group " \
           f"'gamma'" in err
    assert "Unmatched (not written): 1" in err
    assert f"legacy 'delta' ({found['delta']}): none of its 1 production volume(s) is in an SDRS" in err
    assert f"'pg-shared' ({SHARED_GROUP})" in err and f"'pg-lonely' ({LONELY_GROUP})" in err
    assert mapping_file.read_text() == before  # printed only
    assert {method for method, _, _ in world.sim.requests} == {"GET"}
    assert {request.method for request in world.legacy.requests} == {"GET"}
    assert TOKEN not in out + err


async def test_discover_write_keeps_the_file_a_backup_and_a_valid_mapping(tmp_path, world):
    discovery_world(world)
    config = write_config(tmp_path, world, [entry(RCG, GROUP)])
    mapping_file = tmp_path / "mappings" / "consistency-groups.yaml"
    mapping_file.write_text(MAPPING_HEAD + mapping_file.read_text())
    before = mapping_file.read_text()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    status, out, err = await run_shim("discover", "--config", str(config), "--project", PROJECT, "--write",
                                      "--token-file", str(token_file), env={"PATH": "/usr/bin:/bin"})

    assert status == 0, err
    (backup,) = (tmp_path / "mappings").glob("consistency-groups.yaml.*.bak")
    assert backup.read_text() == before
    assert mapping_file.read_text() == out and out.startswith(MAPPING_HEAD)
    modes = {group.rcg_id: group.mode for group in load_mappings(tmp_path / "mappings").groups.values()}
    assert modes == {RCG: "sdrs", SHADOW_RCG: "shadow", PARKED_RCG: "shadow"}
    assert f"Wrote 2 new entries (mode shadow) to {mapping_file}" in err

    status, again, err = await run_shim("discover", "--config", str(config), "--project", PROJECT, "--write",
                                        "--token-file", str(token_file), env={"PATH": "/usr/bin:/bin"})
    assert status == 0 and again == out and "Already mapped: 3" in err and "Nothing new to write" in err


@dataclass
class EndlessLegacy:
    """A legacy endpoint that pages wrongly: it ignores `marker` (the first full page again and again)
    or invents new ids on every page; after `stop_after` pages it answers 500, so a lister without
    guards ends too, with the wrong error."""

    kind: str  # "ignores marker" | "never ends" | "slow"
    stop_after: int = 40
    pages: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.pages += 1
        if self.pages > self.stop_after:
            return web.json_response({"computeFault": {"message": "gave up", "code": "EVS.5000"}}, status=500)
        key = ("replication_consistency_groups" if request.path.endswith("consistency-groups") else "replications")
        first = 0 if self.kind == "ignores marker" else (self.pages - 1) * 1000
        if self.kind == "slow":
            await asyncio.sleep(0.3)
        items = [{"id": f"{n:08x}-0000-4000-8000-{self.pages if self.kind != 'ignores marker' else 0:012x}",
                  "name": f"g{n}", "replication_ids": [], "volume_ids": ""} for n in range(first, first + 1000)]
        return web.json_response({key: items})


@pytest.mark.parametrize("kind, says", [
    ("ignores marker", "(it ignores `marker`); the list cannot be completed"),
    ("never ends", "more than 2500 items"),
    ("slow", "did not list all of GET"),
])
async def test_discover_ends_against_a_legacy_endpoint_that_pages_wrongly(tmp_path, world, kind, says):
    """The SDRS lister's guards on the legacy lists too: a page that does not advance, an item cap and a
    deadline; real loopback servers (the hostile legacy endpoint, the SDRS simulator)."""
    legacy = EndlessLegacy(kind)
    app = web.Application()
    app.router.add_get("/{tail:.*}", legacy.handle)
    runner, legacy_url = await start_server(app)
    try:
        config = write_config(tmp_path, world, [entry(RCG, GROUP)])
        document = yaml.safe_load(config.read_text())
        document["upstreams"]["legacy"] = legacy_url
        document["limits"] = {"sdrs_list_items": 2500}
        document["timeouts"] = {"sdrs_list": 0.5 if kind == "slow" else 30}
        config.write_text(yaml.safe_dump(document))

        status, out, err = await run_shim("discover", "--config", str(config), "--project", PROJECT,
                                          env={"OS_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"})
    finally:
        await runner.cleanup()

    assert status == 1, err
    assert says in err, err
    assert out == ""
    assert legacy.pages <= 2 * 4  # both lists stop within a few pages (the cap is 2500 items: 3 pages each)


async def test_discover_takes_no_token_from_the_command_line(tmp_path, world):
    config = write_config(tmp_path, world, [entry(RCG, GROUP)])
    status, _, err = await run_shim("discover", "--config", str(config), "--project", PROJECT,
                                    env={"PATH": "/usr/bin:/bin"})

    assert status == 2
    assert "no token: set OS_TOKEN or --token-file" in err
    assert world.sim.requests == [] and world.legacy.requests == []
