"""A migration in progress, on loopback: the SDRS simulator holds protection groups, the legacy EVS
stand-in holds the legacy copy of each (same RCG id, its own pair ids, the same disks), and a shim
maps them in the three modes. Shared by the migration tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from conftest import GROUP, PROJECT, RCG, TOKEN, Reply, ShimFactory, call, start_server
from shim.legacy_sim import LegacySimSettings
from shim.legacy_sim.server import LegacySimulator
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.web.logs import configure_logging

SHADOW_RCG = "5a0e6c1d-2b3f-4d5e-8f60-718293a4b5c6"
SHADOW_GROUP = "6b1f7d2e-3c40-4e5f-9a61-8293a4b5c6d7"
PARKED_RCG = "7c2a8e3f-4d51-4f60-8b72-93a4b5c6d7e8"
PARKED_GROUP = "8d3b9f40-5e62-4071-9c83-a4b5c6d7e8f9"
READ_HEADERS = {"Accept": "application/json", "User-Agent": "golangsdk/2.0.0", "X-Auth-Token": TOKEN}
GROUPS = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
PAIRS = f"/v2/{PROJECT}/os-vendor-replications"


def entry(rcg: str, group: str, mode: str | None = None, project: str = PROJECT) -> dict[str, str]:
    document = {"project_id": project, "replication_consistency_group_id": rcg, "protection_group_id": group}
    return document if mode is None else {**document, "mode": mode}


def legacy_copy(sim: SdrsSimulator, legacy: LegacySimulator, group_id: str, rcg_id: str, **options: Any) -> Any:
    """The legacy copy of an SDRS group: the same RCG id, as many pairs, each on an SDRS pair's disks,
    production in the SDRS group's production AZ (what a faithful copy shows)."""
    group = sim.group(PROJECT, group_id)
    options.setdefault("priority_station", group.production_availability_zone)
    copy = legacy.add_group(PROJECT, group_id=rcg_id, name=f"legacy-{rcg_id[:8]}", pair_count=len(group.pairs),
                            **options)
    for pair_id, sdrs_pair in zip(copy.replication_ids, group.pairs, strict=True):
        legacy.pair(PROJECT, pair_id).volume_ids = sdrs_pair.volume_ids
    return copy


@dataclass
class MigrationWorld:
    shim: str
    sim: SdrsSimulator
    legacy: LegacySimulator
    sdrs_url: str
    legacy_url: str

    async def get(self, path: str) -> Reply:
        return await call("GET", self.shim + path, headers=READ_HEADERS)

    async def report(self) -> dict[str, Any]:
        reply = await call("GET", self.shim + "/migration")
        assert reply.status == 200, reply.body
        return reply.json()

    async def group_report(self, rcg_id: str) -> dict[str, Any]:
        (found,) = [group for group in (await self.report())["groups"] if group["rcg_id"] == rcg_id]
        return found

    async def wait_for(self, rcg_id: str, done: Callable[[dict[str, Any]], bool], seconds: float = 10.0
                       ) -> dict[str, Any]:
        """Poll /migration until the group's entry satisfies `done` (shadow work runs after the answer)."""
        deadline = time.monotonic() + seconds
        while True:
            found = await self.group_report(rcg_id)
            if done(found):
                return found
            assert time.monotonic() < deadline, f"shadow work did not finish: {found}"
            await asyncio.sleep(0.02)

    def sdrs_paths(self) -> list[str]:
        return [path for _, path, _ in self.sim.requests]


DEFAULT_MODES = [entry(RCG, GROUP), entry(SHADOW_RCG, SHADOW_GROUP, "shadow"),
                 entry(PARKED_RCG, PARKED_GROUP, "legacy")]


async def upstreams() -> AsyncIterator[MigrationWorld]:
    """SDRS: GROUP (failed-over), SHADOW_GROUP and PARKED_GROUP (protected), two pairs each; the legacy
    stand-in: their faithful legacy copies. Both running; no shim yet (`shim` is "")."""
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2))
    legacy = LegacySimulator(LegacySimSettings(transition_seconds=0.05, copy_seconds=0.05))
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2, priority_station="target")
    sim.add_protection_group(PROJECT, SHADOW_GROUP, status="protected", pair_count=2, name="pg-shadow")
    sim.add_protection_group(PROJECT, PARKED_GROUP, status="protected", pair_count=2, name="pg-parked")
    legacy_copy(sim, legacy, GROUP, RCG, status="failovered", replication_status="active-stopped")
    legacy_copy(sim, legacy, SHADOW_GROUP, SHADOW_RCG)
    legacy_copy(sim, legacy, PARKED_GROUP, PARKED_RCG)
    sim_runner, sdrs_url = await start_server(sim.app())
    legacy_runner, legacy_url = await start_server(legacy.app())
    try:
        yield MigrationWorld("", sim, legacy, sdrs_url, legacy_url)
    finally:
        await sim_runner.cleanup()
        await legacy_runner.cleanup()


async def migration_world(make_shim: ShimFactory, mapping: list[dict[str, str]] | None = None,
                          projects: list[dict[str, str]] | None = None, **config: Any
                          ) -> AsyncIterator[MigrationWorld]:
    """The upstreams above and a shim in front of them. The mapping: GROUP sdrs, SHADOW_GROUP shadow,
    PARKED_GROUP legacy (DEFAULT_MODES), unless `mapping` says otherwise; every shadow read compared."""
    async for world in upstreams():
        config.setdefault("shadow", {"interval_seconds": 0})
        world.shim = await make_shim(sdrs=world.sdrs_url, legacy=world.legacy_url,
                                     mapping=mapping if mapping is not None else DEFAULT_MODES, projects=projects,
                                     **config)
        yield world


# -- what the shim wrote: log lines and metrics ------------------------------------------------------


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line the shim writes, at DEBUG, through its own formatter (as `shim serve` writes them)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def log_records(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def metric(shim: str, name: str, **labels: str) -> float:
    """One sample of the shim's /metrics (0 when absent)."""
    reply = await call("GET", f"{shim}/metrics")
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0
