"""The management listener (`management: {host, port}`): /metrics, /healthz, /readyz and /migration on
a port of their own, for Prometheus and httpGet probes, while clients keep the loopback listener; over
real sockets against real `shim serve` processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from conftest import REPROTECT_BODY, action_url, call
from processes import ShimProcess, Spawn, spawner, write_config
from shim.config import settings_from_mapping
from shim.simulator.faults import Fault
from shim.validation import ConfigError

MANAGEMENT_PATHS = ("/healthz", "/readyz", "/metrics", "/migration")


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start


async def management_url(shim: ShimProcess, count: int = 1) -> str:
    records = await shim.wait_for(lambda record: record.get("message") == "management listening", count=count)
    ports = {record["port"] for record in records}
    assert len(ports) == 1, ports  # workers share one management port
    return f"http://127.0.0.1:{ports.pop()}"


async def test_the_management_listener_answers_the_shims_own_paths(tmp_path, simulator, legacy_upstream, spawn):
    _, sdrs = simulator
    recorder, legacy = legacy_upstream
    config = write_config(tmp_path, sdrs, legacy, management={"host": "127.0.0.1", "port": 0})
    shim = await spawn(config)
    management = await management_url(shim)
    assert management != shim.url

    for path in MANAGEMENT_PATHS:
        reply = await call("GET", management + path)
        assert reply.status == 200, (path, reply.body)
    metrics = (await call("GET", management + "/metrics")).body.decode()
    assert "shim_requests_total" in metrics or "# TYPE shim_requests counter" in metrics
    ready = (await call("GET", management + "/readyz")).json()
    assert ready["status"] == "ready" and ready["state_store"] == "available"
    assert (await call("GET", management + "/migration")).json()["groups"]
    # By default the client listener keeps answering them (compatibility).
    for path in MANAGEMENT_PATHS:
        assert (await call("GET", shim.url + path)).status == 200
    # Nothing else is served there, and nothing reaches the legacy endpoint from it.
    assert (await call("GET", management + "/v2/p/volumes")).status == 404
    assert (await call("POST", management + "/metrics")).status == 405
    assert recorder.requests == []


async def test_the_management_readiness_turns_503_with_the_drain(tmp_path, simulator, spawn):
    _, sdrs = simulator
    config = write_config(tmp_path, sdrs, None, management={"port": 0},
                          lifecycle={"readiness_grace_seconds": 1.5, "drain_seconds": 1})
    shim = await spawn(config)
    management = await management_url(shim)
    assert (await call("GET", management + "/readyz")).status == 200

    shim.proc.send_signal(signal.SIGTERM)
    await shim.wait_for(lambda record: record.get("message", "").startswith("draining"))
    reply = await call("GET", management + "/readyz")
    assert reply.status == 503 and reply.json() == {"status": "draining"}
    assert (await call("GET", management + "/healthz")).status == 200
    assert await asyncio.wait_for(shim.proc.wait(), 15) == 0
    with pytest.raises(OSError):  # closed with the shim
        await call("GET", management + "/healthz")


async def test_with_also_on_listen_false_the_client_listener_passes_those_paths_through(
    tmp_path, simulator, legacy_upstream, spawn
):
    _, sdrs = simulator
    recorder, legacy = legacy_upstream
    config = write_config(tmp_path, sdrs, legacy, management={"port": 0, "also_on_listen": False})
    shim = await spawn(config)
    management = await management_url(shim)

    reply = await call("GET", shim.url + "/metrics")
    assert reply.json() == {"upstream": True}  # the legacy endpoint's answer, like any other path
    assert [(method, path) for method, path, _, _ in recorder.requests] == [("GET", "/metrics")]
    assert b"shim_upstream_up" in (await call("GET", management + "/metrics")).body


async def test_workers_share_the_management_port(tmp_path, simulator, spawn):
    _, sdrs = simulator
    config = write_config(tmp_path, sdrs, None, management={"port": 0},
                          lifecycle={"drain_seconds": 1, "readiness_grace_seconds": 0.1})
    shim = await spawn(config, "--workers", "2", ready_message="workers started")
    (started,) = shim.messages("workers started")
    management = await management_url(shim, count=2)
    await shim.wait_for(lambda record: record.get("message") == "listening", count=2)

    answered: set[int] = set()
    for _ in range(200):  # each on a new connection: the kernel spreads them over the workers
        answered.add((await call("GET", management + "/healthz")).json()["pid"])
        if len(answered) == 2:
            break
    assert answered == set(started["worker_pids"])
    shim.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(shim.proc.wait(), 15) == 0


def test_the_management_port_must_differ_from_the_listen_port(tmp_path):
    data = {"upstreams": {"sdrs": "http://127.0.0.1:1"}, "listen": {"port": 8080}, "management": {"port": 8080}}
    with pytest.raises(ConfigError, match="management.port must differ"):
        settings_from_mapping(data, source="test", base_dir=tmp_path)
    data["management"] = {"port": 9090}
    assert settings_from_mapping(data, source="test", base_dir=tmp_path).management.port == 9090


async def test_a_token_given_to_the_management_migration_never_reaches_a_log_line(tmp_path, simulator, spawn):
    sim, sdrs = simulator
    config = write_config(tmp_path, sdrs, None, management={"port": 0}, log_level="debug")
    shim = await spawn(config)
    management = await management_url(shim)
    headers = {"X-Auth-Token": "client-token-0123456789", "Content-Type": "application/json"}
    assert (await call("POST", action_url(shim.url), body=REPROTECT_BODY, headers=headers)).status == 200
    secret = "operator-token-abcdefghij0123456789"
    sim.inject(Fault(method="GET", path_suffix="", status=500, body={"error": {"code": "SDRS.9999",
                                                                             "message": "down"}}, times=None))

    reply = await call("GET", management + "/migration", headers={"X-Auth-Token": secret})

    sim.clear_faults()
    (group,) = [group for group in reply.json()["groups"] if group["last_action"]]
    assert group["last_action"]["sdrs"]["error"]  # SDRS was asked, with the operator's token, and failed
    shim.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(shim.proc.wait(), 15)
    logged = "".join(shim.raw)
    assert "GET /migration" in logged or '"path": "/migration"' in logged  # the access line is there (DEBUG)
    assert secret not in logged
