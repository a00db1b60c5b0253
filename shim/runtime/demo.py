"""`shim demo`: the SDRS simulator, a legacy EVS stand-in and the shim, all on loopback.

Needs no cloud account: the simulator holds one failed-over protection group, mapped (by the shipped
`mappings/consistency-groups.yaml`) to the legacy replication consistency group the curl lines use.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from shim.config import Settings, settings_from_mapping
from shim.mappings import default_mappings_dir, load_mappings
from shim.runtime.legacy_stub import legacy_stub_app
from shim.runtime.server import start_site, wait_for_stop_signal
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.server import seed_demo_group
from shim.web.app import build_app
from shim.web.logs import configure_logging

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
RCG = "bd35d31b-7ab9-47fc-84c6-3d326c6fa6cb"
GROUP = "40df180b-9fe2-471a-8c64-1b758dc84189"
TOKEN = "demo-token"  # the simulator accepts any non-empty token


@dataclass(frozen=True)
class DemoUrls:
    shim: str
    sdrs: str
    legacy: str

    @property
    def action(self) -> str:
        return f"{self.shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"


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
    ]


def demo_settings(port: int, sdrs_url: str, legacy_url: str) -> Settings:
    """The demo shim's settings: quiet (warnings only) unless SHIM_LOG_LEVEL / SHIM_LOG_FORMAT say
    otherwise (the environment overrides these values as it overrides a config file)."""
    return settings_from_mapping(
        {"listen": {"host": "127.0.0.1", "port": port},
         "upstreams": {"sdrs": sdrs_url, "legacy": legacy_url},
         "mappings": str(default_mappings_dir()),
         "log_level": "warning"},
        source="demo", base_dir=default_mappings_dir(),
    )


async def run_demo(port: int, check: bool, job_seconds: float) -> int:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=1.0, job_run_seconds=job_seconds))
    seed_demo_group(sim)
    sim_runner, sim_port = await start_site(sim.app(), "127.0.0.1", 0)
    legacy_runner, legacy_port = await start_site(legacy_stub_app(), "127.0.0.1", 0)
    sdrs_url, legacy_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{legacy_port}"
    settings = demo_settings(port, sdrs_url, legacy_url)
    configure_logging(settings.log_level, log_format=settings.log_format)
    runners: list[web.AppRunner] = [sim_runner, legacy_runner]
    try:
        shim_runner, shim_port = await start_site(
            build_app(settings, load_mappings(settings.mappings)), "127.0.0.1", port, settings=settings
        )
        runners.append(shim_runner)
        urls = DemoUrls(f"http://127.0.0.1:{shim_port}", sdrs_url, legacy_url)
        print_banner(urls)
        if check:
            return await run_checks(demo_steps(urls))
        print("Press Ctrl-C to stop.", flush=True)
        await wait_for_stop_signal()
        return 0
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def print_banner(urls: DemoUrls) -> None:
    print("evs-sdrs-shim demo: everything runs on loopback; no cloud account is needed.")
    print(f"  shim             {urls.shim}")
    print(f"  SDRS simulator   {urls.sdrs}   (protection group {GROUP}: failed-over)")
    print(f"  legacy EVS stub  {urls.legacy}")
    print(f"Legacy group {RCG} in project {PROJECT} maps to that protection group.\n")
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


def main(port: int, check: bool, job_seconds: float) -> int:
    return asyncio.run(run_demo(port, check, job_seconds))
