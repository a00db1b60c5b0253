"""`shim serve` as a real process: SIGTERM drains, SIGHUP reloads, `--workers N` shares one port,
`shim validate` knows the new keys. Upstreams (SDRS simulator, legacy stand-ins) run in the test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from conftest import (
    DEFAULT_MAPPING,
    GO_HEADERS,
    GROUP,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    call,
    start_server,
    write_mappings,
)
from processes import Spawn, spawner, write_config
from shim.config import load_settings
from shim.mappings import load_mappings
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.faults import Fault
from shim.validation import ConfigError

RCG_URL = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start
OTHER_RCG = "0c9b1a2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
@dataclass
class SlowLegacy:
    """A legacy endpoint that answers each request after `delay` seconds with a numbered JSON body."""

    delay: float
    arrived: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await asyncio.sleep(self.delay)
        number = request.query.get("n", "")
        return web.json_response({"n": number, "padding": "x" * 20000})


@pytest.fixture
async def slow_legacy() -> AsyncIterator[Callable[[float], Awaitable[SlowLegacy]]]:
    runners: list[web.AppRunner] = []

    async def start(delay: float) -> SlowLegacy:
        legacy = SlowLegacy(delay)
        app = web.Application()
        app.router.add_get("/{tail:.*}", legacy.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # do not wait out a long sleep
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        legacy.url = f"http://127.0.0.1:{site.port}"
        return legacy

    yield start
    for runner in runners:
        await runner.cleanup()


async def fetch(url: str) -> tuple[str, int, bytes]:
    """("ok", status, body) for a complete answer; ("refused", 0, b"") when no connection could be
    made; ("no answer", 0, error) when the connection closed before a status line (aiohttp's client
    then retries a GET once, which may end refused); ("truncated", status, error) for an answer
    cut short, which a drain must never cause."""
    async with aiohttp.ClientSession() as session:
        try:
            response = await session.get(url, headers={"X-Auth-Token": "token"})
        except aiohttp.ClientConnectorError:
            return "refused", 0, b""
        except aiohttp.ClientError as err:
            return "no answer", 0, repr(err).encode()
        try:
            async with response:
                return "ok", response.status, await response.read()
        except aiohttp.ClientError as err:
            return "truncated", response.status, repr(err).encode()


def check_answer(kind: str, number: int, outcome: tuple[str, int, bytes]) -> None:
    state, status, body = outcome
    assert state == "ok" and status == 200, (number, outcome)
    document = json.loads(body)
    if kind == "legacy":
        assert document["n"] == str(number) and len(document["padding"]) == 20000
    else:
        assert document["replication_consistency_group"]["id"] == RCG


async def test_sigterm_loses_no_accepted_request(tmp_path, simulator, slow_legacy, spawn):
    sim, sdrs = simulator
    legacy = await slow_legacy(1.5)
    sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{GROUP}", delay=1.5, times=None))
    grace, drain = 1.0, 10.0
    shim = await spawn(write_config(tmp_path, sdrs, legacy.url, lifecycle={
        "drain_seconds": drain, "readiness_grace_seconds": grace}))

    def request(number: int) -> tuple[str, asyncio.Task[tuple[str, int, bytes]]]:
        if number % 4 == 0:
            return "translated", asyncio.create_task(fetch(shim.url + RCG_URL))
        return "legacy", asyncio.create_task(fetch(f"{shim.url}/v2/{PROJECT}/volumes?n={number}"))

    accepted = [request(number) for number in range(16)]
    while legacy.arrived < 12 or len(sim.requests) < 8:  # all 16 are being served upstream
        await asyncio.sleep(0.01)
    shim.proc.send_signal(signal.SIGTERM)

    readiness: list[int] = []
    racing: list[tuple[str, asyncio.Task[tuple[str, int, bytes]]]] = []
    for number in range(16, 76):  # keep sending until the listener is closed
        racing.append(request(number))
        probe = await fetch(shim.url + "/readyz")
        if probe[0] != "ok":
            break
        readiness.append(probe[1])
        await asyncio.sleep(0.05)
    exit_code = await asyncio.wait_for(shim.proc.wait(), grace + drain + 5)

    assert exit_code == 0
    assert 503 in readiness  # readiness turned 503 while the shim still accepted connections
    assert readiness[readiness.index(503):] == [503] * (len(readiness) - readiness.index(503))
    for number, (kind, task) in enumerate(accepted):
        check_answer(kind, number, await task)
    outcomes = [(kind, await task) for kind, task in racing]
    for number, (kind, outcome) in enumerate(outcomes, start=16):
        # Sent while the listener closed, a request may find no connection or (at the very moment
        # of closing) a connection closed before it was read; any answer it got is complete.
        if outcome[0] not in ("refused", "no answer"):
            check_answer(kind, number, outcome)
    assert sum(outcome[0] == "ok" for _, outcome in outcomes) >= 2  # the grace still served new requests
    assert (await fetch(shim.url + "/healthz"))[0] == "refused"
    assert shim.messages("draining") and shim.messages("stopped")
    assert not any("Traceback" in line or "Unclosed" in line for line in shim.raw)


async def test_requests_still_running_after_the_drain_time_are_cut_and_the_shim_exits(
    tmp_path, simulator, slow_legacy, spawn
):
    _, sdrs = simulator
    legacy = await slow_legacy(60)
    grace, drain = 0.2, 1.0
    shim = await spawn(write_config(tmp_path, sdrs, legacy.url, lifecycle={
        "drain_seconds": drain, "readiness_grace_seconds": grace}))
    stuck = asyncio.create_task(fetch(f"{shim.url}/v2/{PROJECT}/volumes?n=1"))
    while legacy.arrived < 1:
        await asyncio.sleep(0.01)

    shim.proc.send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(shim.proc.wait(), grace + 2 * drain + 5)

    assert exit_code == 0
    assert (await stuck)[0] in ("no answer", "refused")  # cut: no status line was ever sent


async def test_sighup_reloads_mappings_atomically_and_keeps_the_old_state_when_invalid(
    tmp_path, simulator, legacy_upstream, spawn
):
    _, sdrs = simulator
    upstream, legacy = legacy_upstream
    config = write_config(tmp_path, sdrs, legacy)
    shim = await spawn(config)
    before = await config_metrics(shim.url)
    assert (await call("GET", shim.url + RCG_URL, headers={"X-Auth-Token": "t"})).json()[
        "replication_consistency_group"]["id"] == RCG  # answered from SDRS

    # Move the mapping to another legacy group, and change a setting that needs a restart.
    write_mappings(tmp_path / "mappings", [{**DEFAULT_MAPPING[0], "replication_consistency_group_id": OTHER_RCG}])
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()),
                                      "listen": {"host": "127.0.0.1", "port": 1}}))
    shim.proc.send_signal(signal.SIGHUP)
    await shim.wait_for(lambda record: record.get("message") == "reloaded config and mappings")
    reloaded = await config_metrics(shim.url)

    assert (await call("GET", shim.url + RCG_URL, headers={"X-Auth-Token": "t"})).json() == {"upstream": True}
    assert len(upstream.requests) == 1
    (warning,) = shim.messages("reload: these settings change only on restart")
    assert warning["kept_keys"] == ["listen.port"]
    assert reloaded["generation"] == before["generation"] + 1 and reloaded["digest"] != before["digest"]

    (tmp_path / "mappings" / "consistency-groups.yaml").write_text("consistency_groups:\n  - {project_id: nope}\n")
    shim.proc.send_signal(signal.SIGHUP)
    (failure,) = await shim.wait_for(lambda record: record.get("level") == "error")
    after_failure = await config_metrics(shim.url)

    assert "consistency-groups.yaml" in failure["message"] and "consistency_groups[0].project_id" in failure["message"]
    assert after_failure["generation"] == reloaded["generation"] and after_failure["digest"] == reloaded["digest"]
    assert after_failure["failures"] == 1
    other = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{OTHER_RCG}"
    reply = await call("GET", shim.url + other, headers={"X-Auth-Token": "t"})
    assert reply.json()["replication_consistency_group"]["id"] == OTHER_RCG  # the last good mapping serves
    assert len(upstream.requests) == 1
    assert [record for record in shim.records if record.get("level") == "error"] == [failure]


async def config_metrics(url: str) -> dict[str, Any]:
    text = (await call("GET", url + "/metrics")).body.decode()
    found: dict[str, Any] = {"failures": 0.0}
    for line in text.splitlines():
        if line.startswith("shim_config_info{"):
            found["digest"] = line.split('digest="')[1].split('"')[0]
        elif line.startswith("shim_config_generation "):
            found["generation"] = float(line.split()[1])
        elif line.startswith('shim_config_reloads_total{result="failure"}'):
            found["failures"] = float(line.split()[1])
    return found


async def test_workers_share_one_port_and_stop_on_sigterm(tmp_path, simulator, spawn):
    _, sdrs = simulator
    config = write_config(tmp_path, sdrs, None, lifecycle={"drain_seconds": 2, "readiness_grace_seconds": 0.1})
    shim = await spawn(config, "--workers", "2", ready_message="workers started")
    (started,) = shim.messages("workers started")
    workers = set(started["worker_pids"])
    await shim.wait_for(lambda record: record.get("message") == "listening", count=2)

    answered: set[int] = set()
    for _ in range(200):  # each on a new connection: the kernel spreads them over the workers
        answered.add((await call("GET", shim.url + "/healthz")).json()["pid"])
        if len(answered) == 2:
            break
    shim.proc.send_signal(signal.SIGHUP)
    await shim.wait_for(lambda record: record.get("message") == "reloaded config and mappings", count=2)
    shim.proc.send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(shim.proc.wait(), 15)

    assert len(workers) == 2 and shim.proc.pid not in workers
    assert answered == workers
    assert exit_code == 0
    assert len(shim.messages("stopped")) == 2
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, and reaped by the parent


async def test_sighup_while_the_workers_start_reloads_them_instead_of_killing_them(tmp_path, simulator, spawn):
    """SIGHUP sent to the parent over and over from the moment it starts spawning: each worker holds
    it (blocked) until its own handler is installed, then reloads; none dies of the default action."""
    _, sdrs = simulator
    config = write_config(tmp_path, sdrs, None, lifecycle={"drain_seconds": 1, "readiness_grace_seconds": 0.1})
    shim = await spawn(config, "--workers", "2", ready_message="starting workers")

    sent = 0
    while len(shim.messages("listening")) < 2 and shim.proc.returncode is None:
        shim.proc.send_signal(signal.SIGHUP)
        sent += 1
        await asyncio.sleep(0.005)
    reloads = await shim.wait_for(lambda record: record.get("message") == "reloaded config and mappings", count=2)
    shim.proc.send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(shim.proc.wait(), 15)

    assert sent > 10  # the signals really did arrive while the workers were starting
    assert len(shim.messages("listening")) == 2
    assert {record["pid"] for record in reloads} <= set(shim.messages("workers started")[0]["worker_pids"])
    assert not shim.messages("worker exited")
    assert exit_code == 0


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-after-another", "all-at-once"])
async def test_workers_share_the_duplicate_action_guard(tmp_path, spawn, concurrent):
    """With --workers 2, a repeated reprotect that lands on the other worker while the first job is
    still INIT (SDRS itself would accept it) is refused all the same: one SDRS action in all."""
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=60.0, job_run_seconds=1.0))
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=1)
    runner, sdrs = await start_server(sim.app())
    try:
        shim = await spawn(write_config(tmp_path, sdrs, None), "--workers", "2", ready_message="workers started")
        await shim.wait_for(lambda record: record.get("message") == "listening", count=2)
        url = shim.url + f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}/action"
        attempts = [call("POST", url, body=REPROTECT_BODY, headers=GO_HEADERS) for _ in range(24)]
        if concurrent:
            replies = await asyncio.gather(*attempts)
        else:
            replies = [await attempt for attempt in attempts]  # each on a new connection: both workers
        statuses = sorted(reply.status for reply in replies)

        assert statuses == [200] + [409] * 23
        assert sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
        # Log lines are written in batches (at most 0.1 s late): wait for all 24 audit lines.
        audited = {record["pid"] for record in await shim.wait_for(
            lambda record: record.get("message") == "translated call", count=24)}
        assert len(audited) == 2  # both workers took part
    finally:
        await runner.cleanup()


async def test_a_listen_address_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, "http://127.0.0.1:9", None, listen={"host": "127.0.0.1", "port": port})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shim", "serve", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)

    assert proc.returncode == 1
    assert f"shim: cannot listen on 127.0.0.1:{port}" in stderr.decode()
    assert "Traceback" not in stderr.decode()


# -- shim validate covers the new keys ------------------------------------------------------------

GOOD = {"upstreams": {"sdrs": "http://127.0.0.1:8777"}, "mappings": "./mappings"}


@pytest.mark.parametrize(("extra", "says"), [
    ({"lifecycle": {"drain_seconds": -1}}, "lifecycle.drain_seconds: Input should be greater than or equal to 0"),
    ({"lifecycle": {"grace": 1}}, "lifecycle.grace: unknown key"),
    ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
    ({"limits": {"max_concurrent_translated": 0}}, "limits.max_concurrent_translated: Input should be greater than 0"),
    ({"limits": {"max_field_size": 10}}, "limits.max_field_size: Input should be greater than or equal to 256"),
    ({"limits": {"max_headers": "many"}}, "limits.max_headers: Input should be a valid integer"),
])
def test_bad_new_keys_are_named(tmp_path, extra, says):
    path = write_config(tmp_path, "http://127.0.0.1:8777", None, **extra)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert says in str(err.value)


async def test_validate_reports_the_new_settings_and_exits_2_on_a_bad_one(tmp_path):
    good = write_config(tmp_path, "http://127.0.0.1:8777", None, workers=3,
                        lifecycle={"drain_seconds": 7, "readiness_grace_seconds": 2})
    ok = await run_cli("validate", "--config", str(good))
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump({**GOOD, "lifecycle": {"drain_seconds": "soon"}}))
    bad = await run_cli("validate", "--config", str(bad_path))

    assert ok[0] == 0 and "3 worker(s), drain 7s after 2s readiness grace" in ok[1]
    assert bad[0] == 2 and "lifecycle.drain_seconds: Input should be a valid number" in bad[2]


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- deployment examples --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_the_kubernetes_example_is_a_valid_hardened_sidecar(tmp_path):
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all((ROOT / "examples/kubernetes/sidecar-pod.yaml").read_text())}
    config_map, pod = docs["ConfigMap"], docs["Pod"]
    (volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    for item in volume["configMap"]["items"]:  # lay the files out as the kubelet mounts them
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_map["data"][item["key"]])
    settings = load_settings(tmp_path / "shim.yaml")

    assert len(load_mappings(settings.mappings).groups) == 1
    (shim,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "evs-sdrs-shim"]
    assert settings.listen.host == "127.0.0.1"
    assert shim["readinessProbe"]["httpGet"]["path"] == "/readyz"  # on the management listener
    assert shim["livenessProbe"]["httpGet"]["path"] == "/healthz"
    lifecycle = settings.lifecycle
    assert pod["spec"]["terminationGracePeriodSeconds"] > lifecycle.drain_seconds + lifecycle.readiness_grace_seconds
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert shim["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_container_image_checks_healthz():
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = next(line for line in dockerfile.splitlines() if line.lstrip().startswith("CMD [\"python\""))
    assert "/healthz" in healthcheck and "urllib" in healthcheck
    assert "HEALTHCHECK" in dockerfile
