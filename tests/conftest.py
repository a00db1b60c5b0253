"""Shared fixtures: real aiohttp servers on loopback (the SDRS simulator, a legacy upstream, the shim)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.runtime.server import start_site
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.web.app import build_app

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
OTHER_PROJECT = "1f2e3d4c5b6a79880123456789abcdef"
RCG = "bd35d31b-7ab9-47fc-84c6-3d326c6fa6cb"
GROUP = "40df180b-9fe2-471a-8c64-1b758dc84189"
UNMAPPED_RCG = "6a1f0d39-5b8f-4a86-9f52-2b0a9d5f0c11"
TOKEN = "gAAAAABtest-token-value"
REPROTECT_BODY = b'{"os-reprotect-replication-consistency-group":null}\n'  # as golangsdk encodes it
GO_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": "golangsdk/2.0.0",
    "Accept-Encoding": "gzip",
    "X-Auth-Token": TOKEN,
}


def action_url(shim_url: str, project: str = PROJECT, rcg: str = RCG) -> str:
    return f"{shim_url}/v2/{project}/os-vendor-replication-consistency-groups/{rcg}/action"


async def start_server(app: web.Application) -> tuple[web.AppRunner, str]:
    """Run `app` on an ephemeral loopback port; returns the runner and its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def raw_exchange(base_url: str, request: bytes) -> tuple[int, CIMultiDict[str], bytes]:
    """Send `request` bytes as they are (must ask for `Connection: close`); status, headers, raw body."""
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return int(status_line.split()[1]), headers, body


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def fault(self) -> tuple[str, dict[str, Any]]:
        """The legacy error envelope `{"<faultName>": {"message", "code"}}`, checked for shape."""
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers
        document = self.json()
        assert isinstance(document, dict) and len(document) == 1, document
        ((name, inner),) = document.items()
        assert set(inner) == {"message", "code"}, inner
        assert isinstance(inner["message"], str) and isinstance(inner["code"], str), inner
        return name, inner


async def call(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """One request as a legacy client makes it, over a fresh connection (no decompression)."""
    async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.request(  # encoded=True: the path goes out exactly as written
            method, URL(url, encoded=True), data=body, headers=headers or {}, allow_redirects=False
        ) as response:
            return Reply(response.status, response.headers.copy(), await response.read())


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[SdrsSimulator, str]]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2))
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
    runner, url = await start_server(sim.app())
    yield sim, url
    await runner.cleanup()


def write_mappings(directory: Path, entries: list[dict[str, str]], projects: list[dict[str, str]] | None = None
                   ) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"consistency_groups": entries}
    if projects is not None:
        document["projects"] = projects  # default modes per project (README, Migration)
    (directory / "consistency-groups.yaml").write_text(yaml.safe_dump(document))
    return directory


DEFAULT_ENTRY = {"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP}
DEFAULT_MAPPING = [DEFAULT_ENTRY]

ShimFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_shim(tmp_path: Path) -> AsyncIterator[ShimFactory]:
    """Start a shim: `await make_shim(sdrs=url, legacy=url, mapping=[...], **config)` -> base URL."""
    runners: list[web.AppRunner] = []

    async def factory(
        *, sdrs: str, legacy: str | None = None, mapping: list[dict[str, str]] | None = None,
        projects: list[dict[str, str]] | None = None, **config: Any
    ) -> str:
        mappings_dir = write_mappings(tmp_path / f"mappings{len(runners)}", mapping or DEFAULT_MAPPING, projects)
        data = {"upstreams": {"sdrs": sdrs, "legacy": legacy}, "mappings": str(mappings_dir),
                # the durable default, in a file of this test's own
                "state": {"backend": "sqlite", "path": str(tmp_path / f"state{len(runners)}.sqlite3")}, **config}
        settings = settings_from_mapping(data, source="test", base_dir=tmp_path)
        # As `shim serve` runs it: its runner (access log, bounded connections and heads).
        runner, port = await start_site(build_app(settings, load_mappings(settings.mappings)), "127.0.0.1", 0,
                                        settings=settings)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield factory
    for runner in runners:
        await runner.cleanup()


@dataclass
class RecordingUpstream:
    """A legacy EVS stand-in that records what reached it and answers 200 `{"upstream": true}`."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.raw_path, dict(request.headers), await request.read()))
        return web.json_response({"upstream": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def legacy_upstream() -> AsyncIterator[tuple[RecordingUpstream, str]]:
    upstream = RecordingUpstream()
    runner, url = await start_server(upstream.app())
    yield upstream, url
    await runner.cleanup()


# -- a real Redis server (Debian's redis-server; `.ci/run` installs it when missing) ----------------


@dataclass
class RedisServer:
    """One redis-server process of this test's own, on a free loopback port, persisting nothing."""

    directory: Path
    port: int = 0
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run .ci/run, which installs it (apt-get install redis-server)"
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.01)
        raise AssertionError("redis-server did not start")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    await server.stop()
