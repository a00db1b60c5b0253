"""One switch for the fleet (README, One switch for the fleet): two shims sharing one store obey
`shim mode set` within the documented bound, and at no moment do both sides serve the group (judged by
the SDRS simulator's and the legacy stand-in's own request logs); a shim that cannot confirm the modes
fails closed for writes and actions; a mapping file edited or swapped under a ConfigMap's symlink is
picked up by a real `shim serve` without SIGHUP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from conftest import (
    DEFAULT_ENTRY,
    GROUP,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    RedisServer,
    ShimFactory,
    call,
    start_server,
)
from processes import Spawn, spawner, write_config
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.translate import fleet as rules

ROOT = Path(__file__).resolve().parent.parent
GROUP_URL = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
HEADERS = {"X-Auth-Token": "token"}
# A shim stops serving the old side at its next refresh; the new side serves once every member
# acknowledged, at the latest SWITCH_BOUND_SECONDS after a shim saw the switch: the documented bound.
OBEY_BOUND = rules.SWITCH_BOUND_SECONDS + 2 * rules.REFRESH_SECONDS
PARKED_RCG = "5a0e6c1d-2b3f-4d5e-8f60-718293a4b5c6"
PARKED_GROUP = "6b1f7d2e-3c40-4e5f-9a61-8293a4b5c6d7"


class TimedLog(list):  # type: ignore[type-arg]
    """A request log that also notes when each entry arrived (one monotonic clock for both sides)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.monotonic())
        super().append(item)


@dataclass
class TimedLegacy:
    """The legacy stand-in: answers `{"upstream": true}` and logs (time, method, path)."""

    log: list[tuple[float, str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.log.append((time.monotonic(), request.method, request.path))
        return web.json_response({"upstream": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass
class Sides:
    sim: SdrsSimulator
    sdrs_url: str
    legacy: TimedLegacy
    legacy_url: str

    def sdrs_times(self) -> list[float]:
        """When SDRS was asked about the group (the simulator's own log)."""
        log = self.sim.requests
        assert isinstance(log, TimedLog)
        return [at for at, (_, path, _) in zip(log.times, log, strict=True) if GROUP in path]

    def legacy_times(self) -> list[float]:
        return [at for at, _, path in self.legacy.log if RCG in path]


@pytest.fixture
async def sides() -> AsyncIterator[Sides]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2))
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
    sim.add_protection_group(PROJECT, PARKED_GROUP, status="failed-over", pair_count=1)
    sim.requests = TimedLog()
    legacy = TimedLegacy()
    sim_runner, sdrs_url = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    yield Sides(sim, sdrs_url, legacy, legacy_url)
    await legacy_runner.cleanup()
    await sim_runner.cleanup()


async def shim_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_config(tmp_path: Path, state: dict[str, Any], sides: Sides) -> Path:
    """A config for `shim mode`: the same store and mapping file as the shims'."""
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"upstreams": {"sdrs": sides.sdrs_url, "legacy": sides.legacy_url},
                                    "mappings": str(tmp_path / "mappings0"), "state": state}))
    return path


@dataclass
class Client:
    """One legacy client of one shim, reading the group in a loop: (time, which side answered)."""

    url: str
    seen: list[tuple[float, str]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply = await call("GET", self.url + GROUP_URL, headers=HEADERS)
            if reply.status == 200:
                side = "legacy" if reply.json() == {"upstream": True} else "sdrs"
            else:
                assert reply.status == 503 and reply.headers.get("Retry-After"), (reply.status, reply.body)
                side = "switching"
            self.seen.append((time.monotonic(), side))
            await asyncio.sleep(0.005)

    def first(self, side: str, after: float) -> float:
        return min(at for at, seen in self.seen if seen == side and at >= after)


async def switch_and_watch(config: Path, clients: list[Client], mode: str, old: str) -> tuple[float, float]:
    """`shim mode set` while both clients read: (when the command ended, when both saw the new side)."""
    code, out, err = await shim_cli("mode", "set", "--config", str(config), "--group", RCG, "--who", "test-operator",
                                    mode)
    assert code == 0, err
    switched = time.monotonic()
    record = json.loads(out)
    assert (record["who"], record["from"], record["to"]) == ("test-operator", old, mode) and record["at"] > 0
    deadline = switched + OBEY_BOUND + 5
    while not all(any(seen == mode and at >= switched for at, seen in c.seen) for c in clients):
        assert time.monotonic() < deadline, "a shim did not obey the switch"
        await asyncio.sleep(0.05)
    for client in clients:  # within the documented bound
        assert client.first(mode, switched) - switched <= OBEY_BOUND
    await asyncio.sleep(rules.REFRESH_SECONDS * 1.5)  # the loops go on: nobody goes back
    for client in clients:
        assert all(seen == mode for at, seen in client.seen if at >= client.first(mode, switched)), client.seen
    return switched, max(client.first(mode, switched) for client in clients)


@pytest.fixture(params=["redis", "sqlite"])
async def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    if request.param == "sqlite":  # one file, shared as the workers of one host share it
        yield {"backend": "sqlite", "path": str(tmp_path / "shared.sqlite3")}
        return
    server = RedisServer(tmp_path)
    await server.start()
    yield {"backend": "redis", "url": server.url}
    await server.stop()


async def test_mode_set_flips_a_group_for_two_shims_and_never_two_sides_serve_it(
    tmp_path: Path, sides: Sides, make_shim: ShimFactory, shared_state: dict[str, Any]
):
    shims = [await make_shim(sdrs=sides.sdrs_url, legacy=sides.legacy_url, state=shared_state) for _ in range(2)]
    config = cli_config(tmp_path, shared_state, sides)
    clients = [Client(url) for url in shims]
    stop = asyncio.Event()
    loops = [asyncio.create_task(client.run(stop)) for client in clients]
    try:
        await asyncio.sleep(0.3)
        assert all(seen == "sdrs" for client in clients for _, seen in client.seen)  # the file's mode, seeded
        started = time.monotonic()
        await switch_and_watch(config, clients, "legacy", "sdrs")
        # The simulator's and the legacy stand-in's own logs: SDRS's last call about the group came
        # before the legacy endpoint's first.
        assert sides.legacy_times() and max(sides.sdrs_times()) < min(sides.legacy_times())
        assert min(sides.legacy_times()) > started

        back = time.monotonic()
        await switch_and_watch(config, clients, "sdrs", "legacy")
        new_sdrs = [at for at in sides.sdrs_times() if at > back]
        assert new_sdrs and max(sides.legacy_times()) < min(new_sdrs)
    finally:
        stop.set()
        await asyncio.gather(*loops)

    # Both serve the same mode version, and say so.
    versions = set()
    for url in shims:
        ready = (await call("GET", url + "/readyz")).json()
        assert ready["modes_confirmed"] is True
        versions.add(ready["mode_version"])
        metrics = (await call("GET", url + "/metrics")).body.decode()
        assert f"shim_fleet_mode_version {float(ready['mode_version'])}" in metrics
        assert "shim_fleet_modes_confirmed 1.0" in metrics
        report = (await call("GET", url + "/migration")).json()
        assert report["fleet"]["mode_version"] == ready["mode_version"]
        # The console's row says who switched the group, and when (the fleet's audit record).
        (changed,) = [g["mode_changed"] for g in report["groups"] if g["rcg_id"] == RCG]
        assert (changed["by"], changed["old_mode"], changed["new_mode"]) == ("test-operator", "legacy", "sdrs")
    assert len(versions) == 1
    code, out, err = await shim_cli("mode", "show", "--config", str(config), "--json")
    assert code == 0, err
    shown = json.loads(out)
    (group,) = [g for g in shown["groups"] if g["rcg_id"] == RCG]
    assert (group["mode"], group["switching"]) == ("sdrs", False)
    assert [(r["who"], r["from"], r["to"]) for r in shown["audit"]] == [
        ("test-operator", "sdrs", "legacy"), ("test-operator", "legacy", "sdrs")]
    assert len(shown["shims"]) == 2 and {s["serves_version"] for s in shown["shims"]} == versions


async def test_a_shim_that_cannot_confirm_the_modes_fails_closed_for_writes_and_actions(
    tmp_path: Path, sides: Sides, make_shim: ShimFactory, redis_server: RedisServer
):
    state = {"backend": "redis", "url": redis_server.url}
    parked = {**DEFAULT_ENTRY, "replication_consistency_group_id": PARKED_RCG, "protection_group_id": PARKED_GROUP,
              "mode": "legacy"}
    shim = await make_shim(sdrs=sides.sdrs_url, legacy=sides.legacy_url, state=state,
                           mapping=[DEFAULT_ENTRY, parked])
    parked_url = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{PARKED_RCG}"
    assert (await call("POST", shim + parked_url + "/action", body=REPROTECT_BODY, headers=HEADERS)).json() == {
        "upstream": True}  # the legacy endpoint serves the parked group's actions
    relayed = len(sides.legacy.log)

    await redis_server.stop()
    await asyncio.sleep(rules.STALE_SECONDS + rules.REFRESH_SECONDS + 0.5)
    sdrs_before = len(sides.sim.requests)
    for path in (parked_url + "/action", GROUP_URL + "/action"):
        reply = await call("POST", shim + path, body=REPROTECT_BODY, headers=HEADERS)
        assert reply.status == 503 and reply.headers["Retry-After"], reply.body
    reply = await call("PUT", shim + parked_url, body=b'{"replication_consistency_group": {"name": "x"}}',
                       headers=HEADERS)
    assert reply.status == 503
    assert len(sides.legacy.log) == relayed and len(sides.sim.requests) == sdrs_before  # sent to neither side
    # Reads keep the last known side; /readyz and /metrics say the modes are not confirmed.
    assert (await call("GET", shim + parked_url, headers=HEADERS)).json() == {"upstream": True}
    ready = (await call("GET", shim + "/readyz")).json()
    assert ready["modes_confirmed"] is False and ready["state_store"] == "unavailable"
    assert "shim_fleet_modes_confirmed 0.0" in (await call("GET", shim + "/metrics")).body.decode()

    await redis_server.start()  # an empty store (no persistence): seeded again, writes served again
    for _ in range(100):
        if (await call("GET", shim + "/readyz")).json()["modes_confirmed"]:
            break
        await asyncio.sleep(0.1)
    assert (await call("POST", shim + parked_url + "/action", body=REPROTECT_BODY, headers=HEADERS)).json() == {
        "upstream": True}


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start


def configmap_layout(mappings: Path, version: str, entries: list[dict[str, Any]]) -> None:
    """What the kubelet does to a mounted ConfigMap: the files in a new timestamped directory, then
    the `..data` symlink swapped to it in one rename; the visible names are symlinks through `..data`."""
    target = mappings / f"..{version}"
    target.mkdir()
    (target / "consistency-groups.yaml").write_text(yaml.safe_dump({"consistency_groups": entries}))
    link = mappings / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, mappings / "..data")
    visible = mappings / "consistency-groups.yaml"
    if not visible.is_symlink():
        visible.unlink(missing_ok=True)
        visible.symlink_to("..data/consistency-groups.yaml")


async def wait_until_legacy_serves(url: str, path: str, bound: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < bound:
        reply = await call("GET", url + path, headers=HEADERS)
        if reply.status == 200 and reply.json() == {"upstream": True}:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} still not served by the legacy endpoint after {bound} s")


async def test_a_configmap_symlink_swap_and_a_file_edit_are_picked_up_without_sighup(
    tmp_path: Path, sides: Sides, spawn: Spawn
):
    config = write_config(tmp_path, sides.sdrs_url, sides.legacy_url)
    mappings = tmp_path / "mappings"
    (mappings / "consistency-groups.yaml").unlink()
    configmap_layout(mappings, "2026_12_08_01", [DEFAULT_ENTRY])
    shim = await spawn(config)
    reply = await call("GET", shim.url + GROUP_URL, headers=HEADERS)
    assert reply.json()["replication_consistency_group"]["id"] == RCG  # SDRS serves it

    # The kubelet swaps ..data: the entry now parks the group (mode legacy). No signal is sent.
    configmap_layout(mappings, "2026_12_08_02", [{**DEFAULT_ENTRY, "mode": "legacy"}])
    took = await wait_until_legacy_serves(shim.url, GROUP_URL, 2 * OBEY_BOUND)
    assert took <= 1.5 + OBEY_BOUND  # the watcher's poll (1 s) and the reload's spacing, then the switch
    (changed,) = await shim.wait_for(lambda record: record.get("logger") == "shim.migration")
    assert (changed["old_mode"], changed["new_mode"]) == ("sdrs", "legacy")

    # A plain edit of the config file (the mapping directory moves) is picked up as well.
    other = tmp_path / "other-mappings"
    other.mkdir()
    (other / "consistency-groups.yaml").write_text(yaml.safe_dump({"consistency_groups": []}))
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "mappings": "./other-mappings"}))
    await shim.wait_for(lambda record: record.get("message") == "reloaded config and mappings", count=2)
    assert shim.messages("a config or mapping file changed: reloading")
    assert shim.proc.returncode is None


# -- the rules, without sockets -------------------------------------------------------------------


def file_mappings(tmp_path: Path, mode: str, projects: list[dict[str, str]] | None = None) -> Any:
    from conftest import write_mappings
    from shim.mappings import load_mappings

    directory = tmp_path / f"m-{mode}-{len(list(tmp_path.iterdir()))}"
    return load_mappings(write_mappings(directory, [{**DEFAULT_ENTRY, "mode": mode}], projects))


def test_a_late_copy_of_the_file_never_undoes_a_newer_switch(tmp_path: Path):
    old, new = file_mappings(tmp_path, "shadow"), file_mappings(tmp_path, "sdrs")
    fleet = rules.seeded(rules.FleetModes(), old)
    assert fleet is not None
    name = rules.group_name(PROJECT, RCG)
    # The first shim to load the edited file switches the fleet (the store's seed is the old mode).
    (change,) = rules.file_changes(fleet, old, new)
    assert change == ("group", name, "shadow", "sdrs")
    fleet = rules.switched(fleet, "group", name, "sdrs", seed="sdrs")
    assert fleet.groups[name].switching  # shadow (legacy side) -> sdrs: fenced until complete
    # Every other shim loading the same edit, and a shim still on the old file, change nothing.
    assert rules.file_changes(fleet, old, new) == []
    assert rules.file_changes(fleet, old, old) == []
    # An operator's switch back is not undone by a file still saying sdrs.
    fleet = rules.switched(fleet, "group", name, "legacy")
    assert rules.file_changes(fleet, old, new) == []
    served = rules.effective(new, fleet, confirmed=True)
    assert served.entry(PROJECT, RCG).mode == "legacy" and served.mode_version == fleet.version
    assert served.switching(PROJECT, RCG)  # sdrs -> legacy, not complete yet: neither side serves


def test_a_switch_between_sides_is_fenced_until_complete_and_within_a_side_is_not(tmp_path: Path):
    mappings = file_mappings(tmp_path, "sdrs")
    fleet = rules.seeded(rules.FleetModes(), mappings)
    assert fleet is not None
    name = rules.group_name(PROJECT, RCG)
    fleet = rules.switched(fleet, "group", name, "legacy")
    served = rules.effective(mappings, fleet, confirmed=True)
    assert served.switching(PROJECT, RCG) and served.switching(PROJECT)  # its project's lists too
    assert rules.all_acknowledged(fleet.version, {"a": {"version": fleet.version}, "b": {"version": 1}}) is False
    assert rules.all_acknowledged(fleet.version, {"a": {"version": fleet.version}, "b": {"version": fleet.version}})
    done = rules.completed(fleet, "group", name, fleet.groups[name].version)
    assert done is not None and not rules.effective(mappings, done, confirmed=True).switching(PROJECT, RCG)
    shadow = rules.switched(done, "group", name, "shadow")
    assert not shadow.groups[name].switching  # the legacy endpoint serves both
    assert rules.refuses_unconfirmed(rules.effective(mappings, shadow, confirmed=False), "POST", PROJECT, RCG)
    assert not rules.refuses_unconfirmed(rules.effective(mappings, shadow, confirmed=False), "GET", PROJECT, RCG)
    with pytest.raises(ValueError, match="fully migrated"):
        migrated = rules.switched(shadow, "project", PROJECT, "sdrs")
        rules.check_switch(migrated, mappings, "group", name, "legacy")


async def test_an_action_re_reads_the_mode_under_the_lease(tmp_path: Path):
    from shim.state.fleet import FleetView, switch
    from shim.state.store import MemoryStore
    from shim.translate.legacy import LegacyError

    mappings = file_mappings(tmp_path, "sdrs")
    store = MemoryStore()
    view = FleetView(store, lambda: mappings, lambda _: None)
    await view.start()
    entry = mappings.entry(PROJECT, RCG)
    await view.recheck(entry)  # sdrs, as seeded
    await switch(store, mappings, "group", rules.group_name(PROJECT, RCG), "legacy", "someone")
    with pytest.raises(LegacyError) as refused:  # this shim's view still says sdrs: the store decides
        await view.recheck(entry)
    assert refused.value.status == 503
