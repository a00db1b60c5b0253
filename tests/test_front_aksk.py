"""AK/SK-signed clients behind the nginx front (`shim front-config` with `aksk` configured): a real nginx
in front of a real shim; the legacy stand-in sits behind a gateway that verifies every signature for
its own Host (tests/test_golangsdk_aksk.py's Gateway).

With key pairs configured, a request with an Authorization header goes to the shim, which verifies it
and signs again for the legacy endpoint; nginx alone would relay it unverified with its Host rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_front_nginx import READY_SECONDS, free_port, generate, nginx_binary
from test_golangsdk_aksk import AK, SK, VOLUMES, Gateway, forged, go_send, sdk_signed_for, send_lines
from yarl import URL

from conftest import DEFAULT_MAPPING, GROUP, PROJECT, RCG, ShimFactory, start_server, write_mappings
from golangsdk_signer import GoSigner
from shim.front.nginx import front_routes_to_shim
from shim.legacy_sim.server import LegacySimulator
from shim.simulator import SdrsSimulator, SimulatorSettings

RCG_PATH = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"


@dataclass
class World:
    front: str
    shim: str
    gateway: Gateway
    legacy_url: str  # the gateway's
    legacy: LegacySimulator
    sim: SdrsSimulator


def front_config(directory: Path, shim: str, sdrs: str, legacy: str, **config: Any) -> Path:
    write_mappings(directory / "mappings", DEFAULT_MAPPING)
    shim_url = URL(shim)
    path = directory / "shim.yaml"
    path.write_text(yaml.safe_dump({
        "listen": {"host": shim_url.host, "port": shim_url.port}, "upstreams": {"sdrs": sdrs, "legacy": legacy},
        "mappings": "./mappings", **config}))
    return path


@pytest.fixture
async def world(tmp_path: Path, make_shim: ShimFactory, monkeypatch) -> AsyncIterator[World]:
    monkeypatch.setenv("TEST_FRONT_AK", AK)
    monkeypatch.setenv("TEST_FRONT_SK", SK)
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.15,
                                          tokens={"no-client-has-this"}, credentials={AK: SK}))
    sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2)
    legacy = LegacySimulator()
    runners = []
    for app in (sim.app(), legacy.app()):
        runner, url = await start_server(app)
        runners.append((runner, url))
    gateway = Gateway(runners[1][1])
    gateway_runner, legacy_url = await start_server(gateway.app())
    front_port = free_port()
    aksk = {"aksk": [{"access_key_env": "TEST_FRONT_AK", "secret_key_env": "TEST_FRONT_SK"}],
            "aksk_host_aliases": [f"127.0.0.1:{front_port}"]}  # what host-signing clients sign: the front
    shim = await make_shim(sdrs=runners[0][1], legacy=legacy_url, **aksk)
    config = front_config(tmp_path / "front", shim, runners[0][1], legacy_url, **aksk)
    status, conf, err = generate(config, f"127.0.0.1:{front_port}", "--access-log", "access.log")
    assert status == 0, err
    (tmp_path / "front" / "nginx.conf").write_text(conf)
    with open(tmp_path / "front" / "nginx.stderr", "wb") as stderr:
        process = subprocess.Popen([nginx_binary(), "-p", str(tmp_path / "front"), "-c",
                                    str(tmp_path / "front" / "nginx.conf")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        for _ in range(READY_SECONDS * 20):
            assert process.poll() is None, (tmp_path / "front" / "nginx.stderr").read_text()
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", front_port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield World(f"http://127.0.0.1:{front_port}", shim, gateway, legacy_url, legacy, sim)
    finally:
        process.terminate()
        process.wait(timeout=10)
        await gateway_runner.cleanup()
        for runner, _ in runners:
            await runner.cleanup()


async def test_a_golangsdk_signed_passthrough_behind_the_front_is_verified_and_re_signed_by_the_shim(world):
    signed_at = datetime.now(UTC) - timedelta(minutes=5)  # within the 15 minutes a signature is good for
    status, body, sent = await go_send(world.front, "GET", VOLUMES, query=[("limit", "5")], now=signed_at)

    assert status == 200, body
    ((_, raw_path, names, arrived),) = world.gateway.verified
    assert raw_path == VOLUMES + "?limit=5"
    assert arrived["X-Sdk-Date"] != dict(sent)["X-Sdk-Date"]  # signed again now: it went through the shim
    assert "host" not in names


async def test_a_host_signing_client_behind_the_front_reaches_the_legacy_endpoint(world):
    """huaweicloudsdkcore signs the front's address as Host: the shim accepts it (an alias) and signs
    again for the legacy endpoint's own Host, which nginx alone would have sent under the client's
    signature."""
    target, headers = sdk_signed_for(URL(world.front).raw_authority, "GET", VOLUMES)

    status, body, _ = await send_lines(world.front, "GET", target, list(headers.items()))

    assert status == 200, body
    ((_, _, names, arrived),) = world.gateway.verified
    assert "host" in names and arrived["Host"] == URL(world.legacy_url).raw_authority
    assert world.gateway.refused == []


@pytest.mark.parametrize("path", [VOLUMES, RCG_PATH], ids=["passthrough", "translated"])
async def test_a_forged_signature_behind_the_front_is_refused_by_the_shim_and_goes_nowhere(world, path):
    target, lines = GoSigner(AK, SK).sign("GET", path, [], [("Accept", "application/json")])

    status, body, _ = await send_lines(world.front, "GET", target, forged(lines))

    assert status == 401, body
    assert json.loads(body)["unauthorized"]["code"] == "EVS.5401"  # the shim's refusal, not the gateway's
    assert world.gateway.verified == [] and world.gateway.refused == [] and world.sim.requests == []


def test_front_config_with_aksk_refuses_a_front_address_the_shim_would_not_accept_as_a_signed_host(tmp_path):
    config = front_config(tmp_path, "http://127.0.0.1:8080", "http://127.0.0.1:8777", "http://127.0.0.1:8776",
                          aksk=[{"access_key_env": "A", "secret_key_env": "B"}])

    status, out, err = generate(config, "127.0.0.1:9000")

    assert (status, out) == (2, "")
    assert "aksk_host_aliases" in err and "'127.0.0.1:9000'" in err and err.count("\n") == 1


def test_the_front_routes_requests_with_an_authorization_header_to_the_shim_only_with_aksk():
    target = VOLUMES + "?limit=1"
    assert front_routes_to_shim(target, "SDK-HMAC-SHA256 Access=x", aksk=True)
    assert front_routes_to_shim(target, "anything at all", aksk=True)
    assert not front_routes_to_shim(target, None, aksk=True)
    assert not front_routes_to_shim(target, "SDK-HMAC-SHA256 Access=x", aksk=False)


async def test_two_authorization_headers_behind_the_front_go_nowhere(world):
    target, lines = GoSigner(AK, SK).sign("GET", VOLUMES, [], [("Accept", "application/json")])

    status, body, _ = await send_lines(world.front, "GET", target, [("Authorization", "Basic dXNlcjpwYXNz"), *lines])

    assert status == 400, body  # nginx refuses a duplicate Authorization header itself
    assert world.gateway.verified == [] and world.gateway.refused == []
