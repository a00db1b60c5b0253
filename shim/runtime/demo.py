"""`shim demo`: the SDRS simulator, a legacy EVS stand-in and the shim, all on loopback.

Needs no cloud account. One group in each mode (README, Migration):
- sdrs: the simulator's failed-over protection group, served from SDRS (the shipped mapping's entry);
- shadow: a protected group and its faithful legacy copy: the legacy endpoint answers, the shim compares;
- legacy: a parked group: the legacy endpoint alone, SDRS never asked.
The demo writes its own mapping file (a temporary directory) and prints the migration report at the end.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from shim.config import Settings, settings_from_mapping
from shim.legacy_sim import LegacySimulator
from shim.mappings import CONSISTENCY_GROUPS_FILE, load_mappings
from shim.migration.report import render_table
from shim.runtime.legacy_stub import legacy_stub
from shim.runtime.server import start_site, wait_for_stop_signal
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.server import seed_demo_group
from shim.web.app import build_app
from shim.web.logs import configure_logging

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
RCG = "bd35d31b-7ab9-47fc-84c6-3d326c6fa6cb"
GROUP = "40df180b-9fe2-471a-8c64-1b758dc84189"
TOKEN = "demo-token"  # the simulator accepts any non-empty token
SHADOW_RCG = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"  # mode shadow: the legacy endpoint serves, the shim compares
SHADOW_GROUP = "d2e3f4a5-b6c7-4d8e-9f0a-1b2c3d4e5f60"
PARKED_RCG = "e3f4a5b6-c7d8-4e9f-8a1b-2c3d4e5f6071"  # mode legacy: parked, SDRS never asked
PARKED_GROUP = "f4a5b6c7-d8e9-4f0a-9b2c-3d4e5f607182"
DEMO_MAPPING = f"""# shim demo: one group in each mode (README, Migration)
consistency_groups:
  - project_id: {PROJECT}
    replication_consistency_group_id: {RCG}
    protection_group_id: {GROUP}
    mode: sdrs
  - project_id: {PROJECT}
    replication_consistency_group_id: {SHADOW_RCG}
    protection_group_id: {SHADOW_GROUP}
    mode: shadow
  - project_id: {PROJECT}
    replication_consistency_group_id: {PARKED_RCG}
    protection_group_id: {PARKED_GROUP}
    mode: legacy
"""


@dataclass(frozen=True)
class DemoUrls:
    shim: str
    sdrs: str
    legacy: str

    @property
    def console(self) -> str:
        return f"{self.shim}/migration"

    @property
    def action(self) -> str:
        return f"{self.shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"

    def group(self, rcg_id: str) -> str:
        return f"{self.shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{rcg_id}"


@dataclass(frozen=True)
class Step:
    title: str
    method: str
    url: str
    expect: int
    body: str | None = None
    token: bool = True

    def curl(self) -> str:
        parts = ["curl", "-i", "-X", self.method, self.url]
        if self.token:
            parts += ["-H", f"X-Auth-Token: {TOKEN}"]
        if self.body is not None:
            parts += ["-H", "Content-Type: application/json", "-d", self.body]
        return shlex.join(parts)


def demo_steps(urls: DemoUrls) -> list[Step]:
    reprotect = '{"os-reprotect-replication-consistency-group": null}'
    group = f"{urls.shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
    return [
        Step("the legacy group, read from SDRS: status failovered", "GET", group, 200),
        Step("reprotect, the legacy way: 200 with an empty body", "POST", urls.action, 200, reprotect),
        Step("reprotect again while SDRS runs the first: 409, and no second SDRS action", "POST",
             urls.action, 409, reprotect),
        Step("the legacy group again: available, replication_status copying (then active)", "GET", group, 200),
        Step("without a token: 401", "POST", urls.action, 401, reprotect, token=False),
        Step("the legacy list: the legacy endpoint's groups merged with the migrated one", "GET",
             f"{urls.shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups", 200),
        Step("the SDRS protection group behind it, straight from the simulator", "GET",
             f"{urls.sdrs}/v1/{PROJECT}/server-groups/{GROUP}", 200),
        Step("mode shadow: the legacy endpoint answers; afterwards the shim compares SDRS's view", "GET",
             urls.group(SHADOW_RCG), 200),
        Step("a shadow action: the legacy endpoint acts; the shim records what SDRS would have been sent",
             "POST", urls.group(SHADOW_RCG) + "/action", 200, '{"os-stop-replication-consistency-group": null}'),
        Step("mode legacy (parked or rolled back): the legacy endpoint alone, SDRS never asked", "GET",
             urls.group(PARKED_RCG), 200),
        Step("the migration report: modes, shadow comparisons, dry runs, last actions", "GET",
             f"{urls.shim}/migration", 200, token=False),
    ]


def demo_settings(port: int, sdrs_url: str, legacy_url: str, mappings_dir: Path) -> Settings:
    """The demo shim's settings: quiet (warnings only) unless SHIM_LOG_LEVEL / SHIM_LOG_FORMAT say
    otherwise (the environment overrides these values as it overrides a config file); nothing kept
    between runs (the memory state store)."""
    return settings_from_mapping(
        {"listen": {"host": "127.0.0.1", "port": port},
         "upstreams": {"sdrs": sdrs_url, "legacy": legacy_url},
         "mappings": str(mappings_dir),
         "shadow": {"interval_seconds": 5},
         "state": {"backend": "memory"},
         "log_level": "warning"},
        source="demo", base_dir=mappings_dir,
    )


def seed_migration_groups(sim: SdrsSimulator, legacy: LegacySimulator) -> None:
    """The shadow and the parked group: protected in SDRS, with faithful legacy copies (same RCG ids in
    the mapping, the same production disks), so shadow mode compares them as a match."""
    for group_id, rcg_id, name in ((SHADOW_GROUP, SHADOW_RCG, "shadow"), (PARKED_GROUP, PARKED_RCG, "parked")):
        group = sim.add_protection_group(PROJECT, group_id, status="protected", name=f"pg-{name}", pair_count=2)
        copy = legacy.add_group(PROJECT, group_id=rcg_id, name=f"{name}-rcg", pair_count=2,
                                priority_station=group.production_availability_zone)
        for pair_id, sdrs_pair in zip(copy.replication_ids, group.pairs, strict=True):
            legacy.pair(PROJECT, pair_id).volume_ids = sdrs_pair.volume_ids


async def run_demo(port: int, check: bool, job_seconds: float) -> int:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=1.0, job_run_seconds=job_seconds))
    seed_demo_group(sim)
    legacy = legacy_stub()
    seed_migration_groups(sim, legacy)
    sim_runner, sim_port = await start_site(sim.app(), "127.0.0.1", 0)
    legacy_runner, legacy_port = await start_site(legacy.app(), "127.0.0.1", 0)
    sdrs_url, legacy_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{legacy_port}"
    runners: list[web.AppRunner] = [sim_runner, legacy_runner]
    with tempfile.TemporaryDirectory(prefix="shim-demo-") as mappings_dir:
        (Path(mappings_dir) / CONSISTENCY_GROUPS_FILE).write_text(DEMO_MAPPING)
        settings = demo_settings(port, sdrs_url, legacy_url, Path(mappings_dir))
        configure_logging(settings.log_level, log_format=settings.log_format)
        try:
            shim_runner, shim_port = await start_site(
                build_app(settings, load_mappings(settings.mappings)), "127.0.0.1", port, settings=settings
            )
            runners.append(shim_runner)
            urls = DemoUrls(f"http://127.0.0.1:{shim_port}", sdrs_url, legacy_url)
            print_banner(urls)
            if check:
                failures = await run_checks(demo_steps(urls))
                print_report(await settled_report(urls))
                return failures
            print("Press Ctrl-C to stop (the migration report is printed then).", flush=True)
            await wait_for_stop_signal()
            print_report(await fetch_report(urls))
            return 0
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


def print_banner(urls: DemoUrls) -> None:
    print("evs-sdrs-shim demo: everything runs on loopback; no cloud account is needed.")
    print(f"  shim             {urls.shim}")
    print(f"  SDRS simulator   {urls.sdrs}   (protection group {GROUP}: failed-over)")
    print(f"  legacy EVS stub  {urls.legacy}")
    print(f"  console          {urls.console}   (the migration console: open it in a browser)")
    print(f"Legacy group {RCG} in project {PROJECT} maps to that protection group (mode sdrs);")
    print(f"{SHADOW_RCG} is in mode shadow and {PARKED_RCG} in mode legacy.\n")
    print("Try, in another terminal:")
    for step in demo_steps(urls):
        print(f"  # {step.title}\n  {step.curl()}\n")


async def run_checks(steps: list[Step]) -> int:
    """Run the printed steps once and say whether each answered as promised."""
    failures = 0
    async with aiohttp.ClientSession() as session:
        for step in steps:
            headers = {"X-Auth-Token": TOKEN} if step.token else {}
            if step.body is not None:
                headers["Content-Type"] = "application/json"
            async with session.request(step.method, step.url, data=step.body, headers=headers) as reply:
                text = (await reply.text())[:300]
            ok = reply.status == step.expect
            failures += not ok
            print(f"[{'ok' if ok else 'FAILED'}] {reply.status} {step.title}")
            if text:
                print(f"       {text}")
    return 1 if failures else 0


async def fetch_report(urls: DemoUrls) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{urls.shim}/migration") as reply:
        return json.loads(await reply.read())


async def settled_report(urls: DemoUrls, seconds: float = 5.0) -> dict[str, Any]:
    """The report once the shadow group's comparison and dry run have been recorded (they run after the
    answers), or as it is after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        report = await fetch_report(urls)
        shadow = next(group["shadow"] for group in report["groups"] if group["rcg_id"] == SHADOW_RCG)
        if (sum(shadow["comparisons"].values()) and shadow["last_dry_run"]) or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.05)


def print_report(report: dict[str, Any]) -> None:
    print("\nThe migration report (`shim report --config PATH` prints it from a running shim's state store):\n")
    print(render_table(report), end="", flush=True)


def main(port: int, check: bool, job_seconds: float) -> int:
    return asyncio.run(run_demo(port, check, job_seconds))
