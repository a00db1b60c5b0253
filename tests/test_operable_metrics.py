"""What dashboards and alerts need from /metrics: the process and platform collectors, the build info,
method and action labels on shim_requests_total, and a state-store signal (with /readyz) that an alert
can key on; over real loopback sockets against a real shim, a real simulator and a real Redis."""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from conftest import DEFAULT_MAPPING, GROUP, PROJECT, REPROTECT_BODY, action_url, call, start_server, write_mappings
from shim import __version__
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.runtime.server import start_site
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.faults import Fault
from shim.web.app import build_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = {"X-Auth-Token": "token", "Content-Type": "application/json"}


@pytest.fixture
async def start_shim(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(*, sdrs: str, legacy: str | None = None, **config: Any) -> str:
        mappings_dir = write_mappings(tmp_path / f"mappings{len(runners)}", DEFAULT_MAPPING)
        data = {"upstreams": {"sdrs": sdrs, "legacy": legacy}, "mappings": str(mappings_dir),
                "state": {"backend": "sqlite", "path": str(tmp_path / f"state{len(runners)}.sqlite3")}, **config}
        settings = settings_from_mapping(data, source="test", base_dir=tmp_path)
        runner, port = await start_site(build_app(settings, load_mappings(settings.mappings)), "127.0.0.1", 0,
                                        settings=settings)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def samples_of(shim: str) -> Samples:
    reply = await call("GET", f"{shim}/metrics")
    assert reply.status == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(reply.body.decode()) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= sample_labels)


async def test_process_platform_and_build_info_are_exported(simulator, start_shim):
    _, sdrs = simulator
    samples = await samples_of(await start_shim(sdrs=sdrs))

    names = {name for name, _ in samples}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "python_info", "python_gc_collections_total"):
        assert name in names, name
    (build,) = [labels for name, labels in samples if name == "shim_build_info"]
    assert dict(build)["version"] == __version__
    assert dict(build)["python"] == platform.python_version()
    assert total(samples, "shim_ready") == 1


async def test_requests_carry_their_method_and_translated_action(simulator, legacy_upstream, start_shim):
    sim, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)

    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=TOKEN)).status == 200
    # A failover SDRS refuses: what an alert on failing actions counts.
    sim.inject(Fault(method="POST", path_suffix=f"/server-groups/{GROUP}/action", status=400,
                     body={"error": {"code": "SDRS.0001", "message": "refused"}}))
    refused = await call("POST", action_url(shim), body=b'{"os-failover-replication-consistency-group": {}}',
                         headers=TOKEN)
    assert refused.status >= 400
    assert (await call("GET", f"{shim}/v2/{PROJECT}/volumes")).status == 200
    assert (await call("PROPFIND", f"{shim}/v2/{PROJECT}/volumes")).status == 200
    samples = await samples_of(shim)

    assert total(samples, "shim_requests_total", route="translated", method="POST", action="reprotect",
                 legacy_status="200") == 1
    assert total(samples, "shim_requests_total", route="translated", method="POST", action="failover",
                 legacy_status=str(refused.status)) == 1
    assert total(samples, "shim_requests_total", route="passthrough", method="GET", action="none") == 1
    assert total(samples, "shim_requests_total", method="other", action="none") == 1  # PROPFIND: bounded
    labels = {(dict(labels)["method"], dict(labels)["action"]) for name, labels in samples
              if name == "shim_requests_total"}
    assert labels == {("POST", "reprotect"), ("POST", "failover"), ("GET", "none"), ("other", "none")}


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_a_down_state_store_shows_in_readyz_and_in_metrics_an_alert_can_use(
    simulator, redis_server, start_shim
):
    _, sdrs = simulator
    shim = await start_shim(sdrs=sdrs, state={"backend": "redis", "url": redis_server.url, "timeout_seconds": 0.5})
    up = await samples_of(shim)
    assert total(up, "shim_state_store_up") == 1
    assert total(up, "shim_state_store_checks_total", result="ok") >= 1
    assert total(up, "shim_state_store_last_ok_timestamp_seconds") > 0
    assert (await call("GET", f"{shim}/readyz?require=state_store")).status == 200

    stopped_at = time.time()
    await redis_server.stop()

    async def store_down() -> bool:
        return (await call("GET", f"{shim}/readyz")).json()["state_store"] == "unavailable"

    await wait_until(store_down)
    ready = await call("GET", f"{shim}/readyz")
    assert ready.status == 200  # as documented: reads still work, the pod stays in its Services
    strict = await call("GET", f"{shim}/readyz?require=state_store")
    assert strict.status == 503 and strict.json()["state_store"] == "unavailable"
    down = await samples_of(shim)
    assert total(down, "shim_state_store_up") == 0
    assert total(down, "shim_state_store_checks_total", result="unavailable") >= 1
    assert 0 < total(down, "shim_state_store_last_ok_timestamp_seconds") <= stopped_at  # an alert: time() - it
    assert total(down, "shim_ready") == 1
    refused = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=TOKEN)
    assert refused.status == 503
    assert total(await samples_of(shim), "shim_actions_refused_total", reason="state_store") == 1

    await redis_server.start()  # the same port again

    async def store_up() -> bool:
        return (await call("GET", f"{shim}/readyz?require=state_store")).status == 200

    await wait_until(store_up)
    assert total(await samples_of(shim), "shim_state_store_up") == 1


async def test_actions_the_guard_refuses_are_counted_by_reason(start_shim):
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=30))  # the job outlives the test
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
    runner, sdrs = await start_server(sim.app())
    try:
        shim = await start_shim(sdrs=sdrs)
        before = await samples_of(shim)
        assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=TOKEN)).status == 200
        duplicate = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=TOKEN)
        samples = await samples_of(shim)
    finally:
        await runner.cleanup()

    assert duplicate.status == 409
    for reason in ("job_running", "in_progress", "settle", "state_store", "lease_lost"):  # there from the start
        assert ("shim_actions_refused_total", frozenset({("reason", reason)})) in before, reason
    assert total(samples, "shim_actions_refused_total", reason="job_running") == 1
    assert total(samples, "shim_actions_refused_total") == 1
