"""The chaos campaign (issue 19): a fleet of `shim serve` processes sharing one state store, in front of
the SDRS simulator and the legacy EVS stand-in, under concurrent clients and a seeded fault injector;
a checker then reads both stand-ins' own request logs and the clients' history.

    PYTHONPATH=$PWD python benchmarks/chaos.py --preset ci --seed 1919
    PYTHONPATH=$PWD python benchmarks/chaos.py --preset long --seed 20261208 --json chaos.json
    PYTHONPATH=$PWD python benchmarks/chaos.py --seed 7 --duration 60 --faults shim-kill,sdrs-5xx

How it runs (one asyncio event loop):
- the SDRS simulator and the legacy stand-in run in this process (so their request logs and SDRS's
  job log are read directly, with the simulator's own monotonic clock);
- the store is a parameter (`--store`): `redis` (one redis-server on a free loopback port, append-only
  file fsynced on every write so a restart keeps what it acknowledged); `redis-sentinel` is reserved
  for the Sentinel support being added in parallel (refused until the shim can use it);
- N shims, each its own `python -m shim serve` process group (every `--workers-every`th with
  `--workers 2`), each with its own config and mapping file, on fixed loopback ports so a restart
  comes back where clients look for it;
- clients (asyncio + aiohttp) pick a random shim and send golangsdk-shaped calls about a fixed set of
  groups (mapped in mode sdrs, mapped in mode legacy, unmapped): actions (`{"os-...": null}\\n`),
  updates (rename, description, pair removal), pair deletes, group reads and lists; each request has
  its own `X-Request-Id`, which the shim passes on to both upstreams, so every upstream request is
  tied to the client call that caused it;
- the fault injector (its own RNG, so a seed replays the same fault schedule; the interleaving with
  the load is not deterministic) injects faults at random intervals, each bounded in time.

What the checker counts as a violation (each must be 0):
- duplicate SDRS action: a guarded SDRS write (group action POST, pair DELETE, group DELETE) W that
  arrived at time t on a protection group while a previous write W' on the same group, caused by
  another client request, could still be acting: from W' arriving until its job ended (INIT or
  RUNNING in SDRS's job log), or until SDRS answered W' without a job;
- wrong owner: an upstream request about a group (its path or query names the group, one of its pairs
  or one of its jobs) that reached the side that did not own the group at that moment: SDRS for a
  group in mode legacy or unmapped (in mode shadow only reads may reach SDRS), the legacy endpoint for
  a group in mode sdrs. With `--mode-flips`, a switch moves ownership at the first request that only
  the new mode allows (or when the last shim was told); a request to the old side after that counts;
- contradicting answer: 200 for an action whose request sent no accepted SDRS action POST (pause
  and sync are documented no-ops when nothing is to be done: reported, not counted), or a 4xx for a
  request whose SDRS write SDRS accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install

from shim.legacy_sim import LegacySimSettings, LegacySimulator  # noqa: E402
from shim.simulator import SdrsSimulator, SimulatorSettings  # noqa: E402
from shim.simulator import server as sdrs_server  # noqa: E402
from shim.simulator.faults import Fault  # noqa: E402

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
TOKEN = "gAAAAABchaos-token-value"
GROUPS_PATH = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
PAIRS_PATH = f"/v2/{PROJECT}/os-vendor-replications"
LEGACY_ACTION_KEY = {
    "reprotect": "os-reprotect-replication-consistency-group",
    "sync": "os-sync-replication-consistency-group",
    "stop": "os-stop-replication-consistency-group",
    "failover": "os-failover-replication-consistency-group",
}
SDRS_ACTION = {"reprotect": "start-server-group", "sync": "start-server-group", "stop": "stop-server-group",
               "failover": "failover-server-group"}
SENT_WHEN = {  # README, Actions: the SDRS statuses in which the shim sends the action
    "reprotect": {"failed-over", "error-reprotecting"},
    "sync": {"available", "error-starting"},
    "stop": {"protected", "error-stopping"},
    "failover": {"protected", "error-failing-over", "error-reversing"},
}
NOOP_ACTIONS = {"stop", "sync"}  # 200 with nothing sent when there is nothing to do (README, Actions)
MODE_CYCLE = {"legacy": "shadow", "shadow": "sdrs", "sdrs": "legacy"}

FAULT_KINDS = ("shim-kill", "shim-stop", "redis-restart", "sdrs-slow", "sdrs-reset-before", "sdrs-reset-after",
               "sdrs-5xx", "sdrs-429", "sdrs-fail-job", "sdrs-reset-after-delete", "sdrs-slow-delete", "clock-skew",
               "mode-flip")
DEFAULT_FAULTS = ("shim-kill", "shim-stop", "redis-restart", "sdrs-slow", "sdrs-reset-before", "sdrs-reset-after",
                  "sdrs-5xx", "sdrs-429", "sdrs-fail-job", "sdrs-reset-after-delete", "sdrs-slow-delete")


@dataclass
class ChaosConfig:
    seed: int = 1919
    duration: float = 40.0  # seconds of load (and faults)
    shims: int = 3
    workers_every: int = 2  # every n-th shim (1-based) runs `--workers 2`; 0: none
    clients: int = 12
    sdrs_groups: int = 5
    legacy_mapped_groups: int = 2
    unmapped_groups: int = 2
    faults: tuple[str, ...] = DEFAULT_FAULTS
    fault_interval: float = 1.0  # mean seconds between two faults
    store: str = "redis"
    job_init_seconds: float = 0.3
    job_run_seconds: float = 1.0
    settle_seconds: float = 8.0  # > the slowest SDRS answer + a job's life
    lease_seconds: float = 4.0
    stop_max_seconds: float = 6.0  # a SIGSTOP lasts up to this (past the lease: the fencing is tested)
    client_timeout: float = 8.0
    think_seconds: float = 0.02  # a client's pause between two calls
    workdir: str | None = None
    preset: str = "custom"


PRESETS: dict[str, dict[str, Any]] = {
    "ci": {"duration": 40.0, "shims": 3, "clients": 12, "sdrs_groups": 8, "fault_interval": 0.8},
    "long": {"duration": 840.0, "shims": 4, "clients": 24, "sdrs_groups": 12, "legacy_mapped_groups": 3,
             "unmapped_groups": 3, "fault_interval": 2.5},
}


# -- the stand-ins, with timed logs -------------------------------------------------------------------


@dataclass
class Logged:
    """One request as an upstream saw it, on that upstream's own clock (monotonic seconds)."""

    side: str  # "sdrs" | "legacy"
    t: float
    method: str
    path: str
    query: str
    request_id: str | None
    status: int | None = None
    t_end: float | None = None
    job_id: str | None = None
    action: str = ""


class ChaosSdrs(SdrsSimulator):
    """The SDRS simulator, logging each request with its arrival and answer time, its X-Request-Id and
    the job it created; `reset_after_action`/`reset_after_delete` make the next group actions / pair
    deletes act, then reset the connection (SDRS did it; the shim cannot know)."""

    def __init__(self, settings: SimulatorSettings) -> None:
        super().__init__(settings)
        self.log: list[Logged] = []
        self.reset_after_action = 0
        self.reset_after_delete = 0

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        entry = Logged("sdrs", self.now(), request.method, request.path, request.query_string,
                       request.headers.get("X-Request-Id"))
        self.log.append(entry)
        if request.method == "POST" and request.path.endswith("/action"):
            entry.action = sdrs_server._action_key(await request.read())  # the body is kept for the handler
        try:
            response = await SdrsSimulator._record(self, request, handler)
        finally:
            entry.t_end = self.now()
        entry.status = response.status
        body = getattr(response, "body", None)
        if request.method != "GET" and response.status == 200 and isinstance(body, bytes) and b'"job_id"' in body:
            with contextlib.suppress(ValueError, AttributeError):
                entry.job_id = json.loads(body).get("job_id")
        return response

    async def _acted_then_reset(self, request: web.Request, handler: Any, counter: str) -> web.Response:
        response = await handler(request)
        if getattr(self, counter) > 0 and response.status == 200:
            setattr(self, counter, getattr(self, counter) - 1)
            entry = next((e for e in reversed(self.log) if e.request_id == request.headers.get("X-Request-Id")), None)
            if entry is not None and isinstance(response.body, bytes):
                with contextlib.suppress(ValueError, AttributeError):
                    entry.job_id = json.loads(response.body).get("job_id")
            return sdrs_server._reset_connection(request)
        return response

    async def _group_action(self, request: web.Request) -> web.Response:
        return await self._acted_then_reset(request, super()._group_action, "reset_after_action")

    async def _delete_pair(self, request: web.Request) -> web.Response:
        return await self._acted_then_reset(request, super()._delete_pair, "reset_after_delete")


class ChaosLegacy(LegacySimulator):
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        now = time.monotonic()
        entry = Logged("legacy", now, request.method, request.path, request.query_string,
                       request.headers.get("X-Request-Id") or request.headers.get("X-Openstack-Request-Id"))
        self.log.append(entry)
        try:
            response = await LegacySimulator._record(self, request, handler)
        finally:
            entry.t_end = time.monotonic()
        entry.status = response.status
        return response

    def __init__(self, settings: LegacySimSettings) -> None:
        super().__init__(settings)
        self.log: list[Logged] = []


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the state store: a parameter ----------------------------------------------------------------------


class RedisStore:
    """One redis-server of the campaign's own; its AOF is fsynced on every write (a restart keeps the
    leases and records it acknowledged: a Redis without persistence forgets them, as documented)."""

    topology = "redis"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def shim_state(self, lease_seconds: float) -> dict[str, Any]:
        return {"backend": "redis", "url": self.url, "lease_seconds": lease_seconds, "timeout_seconds": 0.5}

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--dir", str(self.directory),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def restart(self, down_seconds: float, sig: int) -> None:
        await self.stop(sig)
        await asyncio.sleep(down_seconds)
        await self.start()


def make_store(topology: str, directory: Path) -> RedisStore:
    if topology == "redis":
        return RedisStore(directory)
    raise SystemExit(f"--store {topology}: not supported by this shim yet (Sentinel support lands with issue 19); "
                     "use --store redis")


# -- the shims -----------------------------------------------------------------------------------------


@dataclass
class GroupSpec:
    rcg: str
    pg: str | None  # None: unmapped
    mode: str  # sdrs | shadow | legacy | unmapped
    sdrs_pairs: list[str] = field(default_factory=list)
    legacy_pairs: list[str] = field(default_factory=list)


class Shim:
    def __init__(self, index: int, directory: Path, port: int, workers: int) -> None:
        self.index = index
        self.directory = directory
        self.port = port
        self.workers = workers
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped = False
        self.skew: str | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def write_mappings(self, groups: list[GroupSpec]) -> None:
        entries = [{"project_id": PROJECT, "replication_consistency_group_id": g.rcg, "protection_group_id": g.pg,
                    "mode": g.mode} for g in groups if g.pg is not None]
        mappings = self.directory / "mappings"
        mappings.mkdir(parents=True, exist_ok=True)
        temporary = mappings / "consistency-groups.yaml.new"
        temporary.write_text(yaml.safe_dump({"consistency_groups": entries}))
        temporary.replace(mappings / "consistency-groups.yaml")

    def write_config(self, config: ChaosConfig, sdrs: str, legacy: str, store: RedisStore) -> None:
        data = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "upstreams": {"sdrs": sdrs, "legacy": legacy},
            "mappings": "./mappings",
            "log_level": "warning",
            "state": store.shim_state(config.lease_seconds),
            "actions": {"settle_seconds": config.settle_seconds, "wait_for_previous_seconds": 3},
            "lifecycle": {"drain_seconds": 1, "readiness_grace_seconds": 0},
            "timeouts": {"sdrs": {"connect": 1, "read": 2, "total": 3}},
        }
        (self.directory / "shim.yaml").write_text(yaml.safe_dump(data))

    async def start(self, skew: str | None = None) -> None:
        command = [sys.executable, "-m", "shim", "serve", "--config", str(self.directory / "shim.yaml")]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if skew:
            command = ["faketime", "-f", skew, *command]
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"  # the event loop keeps a sane clock; time.time() moves
        self.skew = skew
        log = open(self.directory / "shim.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *command, cwd=self.directory, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=log, start_new_session=True)
        finally:
            log.close()
        self.stopped = False
        self.starts += 1
        async with aiohttp.ClientSession() as session:
            for _ in range(300):  # up to ~30 s on a loaded machine
                if self.proc.returncode is not None:
                    raise RuntimeError(f"shim {self.index} exited {self.proc.returncode}: "
                                       f"see {self.directory}/shim.log")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"shim {self.index} did not become healthy")

    def signal_group(self, sig: int) -> None:
        """`sig` to this shim's own process group (the `shim serve` parent and its workers)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def signal_parent(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()
        self.stopped = False

    async def stop(self) -> None:
        if self.proc is None:
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            pass
        self.signal_group(signal.SIGKILL)  # the parent, and any worker left behind
        await self.proc.wait()

    def rss_bytes(self) -> int:
        """RSS of the parent and its direct children (the workers)."""
        if not self.alive or self.proc is None:
            return 0
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as children:
                pids += [int(pid) for pid in children.read().split()]
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/status") as status:
                    for line in status:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
        return total


# -- the clients ---------------------------------------------------------------------------------------


@dataclass
class Call:
    request_id: str
    client: int
    shim: int
    kind: str  # action | update | remove-pair | pair-delete | read | list
    rcg: str
    action: str
    method: str
    path: str
    t_send: float
    t_recv: float = 0.0
    status: int | None = None
    error: str | None = None


class World:
    def __init__(self, config: ChaosConfig, sdrs: ChaosSdrs, legacy: ChaosLegacy, groups: list[GroupSpec],
                 shims: list[Shim]) -> None:
        self.config = config
        self.sdrs = sdrs
        self.legacy = legacy
        self.groups = groups
        self.shims = shims
        self.calls: list[Call] = []
        self.faults: list[dict[str, Any]] = []
        self.switches: list[dict[str, Any]] = []  # mode flips: rcg, t_start, t_done, old, new
        self.peak_rss: dict[int, int] = defaultdict(int)
        self.peak_rss_total = 0
        self.stop_at = 0.0

    def sdrs_pairs(self, group: GroupSpec) -> list[str]:
        try:
            return self.sdrs.pair_ids(PROJECT, group.pg or "")
        except KeyError:
            return []

    def sdrs_status(self, group: GroupSpec) -> str | None:
        try:
            return self.sdrs.group(PROJECT, group.pg or "").status
        except KeyError:
            return None


def action_body(action: str) -> bytes:
    return json.dumps({LEGACY_ACTION_KEY[action]: None}).encode() + b"\n"  # as golangsdk encodes it


def choose_call(world: World, rng: random.Random) -> tuple[str, GroupSpec, str, str, str, bytes | None]:
    """kind, group, action, method, path, body."""
    group = rng.choice(world.groups)
    roll = rng.random()
    group_path = f"{GROUPS_PATH}/{group.rcg}"
    if roll < 0.6:
        action = rng.choice(list(LEGACY_ACTION_KEY))
        status = world.sdrs_status(group) if group.mode == "sdrs" else None
        if status is not None and rng.random() < 0.75:  # mostly an action SDRS would take now
            fitting = [name for name, statuses in SENT_WHEN.items() if status in statuses]
            if fitting:
                action = rng.choice(fitting)
        return "action", group, action, "POST", group_path + "/action", action_body(action)
    if roll < 0.68:
        document = {"name": f"chaos-{rng.randrange(10**6)}"} if rng.random() < 0.5 else \
            {"description": f"chaos {rng.randrange(10**6)}"}
        return "update", group, "", "PUT", group_path, json.dumps({"replication_consistency_group": document}).encode()
    pairs = group.sdrs_pairs if group.mode == "sdrs" else group.legacy_pairs
    if roll < 0.70:
        # a group keeps at least one pair in SDRS, or a long run ends with groups SDRS cannot start
        live = world.sdrs_pairs(group) if group.mode == "sdrs" else pairs
        if len(live) >= 2 or (group.mode != "sdrs" and live):
            body = {"replication_consistency_group": {"remove_replication_ids": [rng.choice(live)]}}
            return "remove-pair", group, "", "PUT", group_path, json.dumps(body).encode()
        return "read", group, "", "GET", group_path, None
    if roll < 0.75 and pairs:
        return "pair-delete", group, "", "DELETE", f"{PAIRS_PATH}/{rng.choice(pairs)}", None
    if roll < 0.95:
        return "read", group, "", "GET", group_path, None
    return "list", group, "", "GET", GROUPS_PATH, None


async def client(world: World, index: int) -> None:
    rng = random.Random(f"{world.config.seed}-client-{index}")
    timeout = aiohttp.ClientTimeout(total=world.config.client_timeout)
    headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "golangsdk/2.0.0",
               "Accept-Encoding": "gzip", "X-Auth-Token": TOKEN}
    serial = 0
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        while time.monotonic() < world.stop_at:
            kind, group, action, method, path, body = choose_call(world, rng)
            shim = rng.choice(world.shims)
            serial += 1
            request_id = f"chaos-{index}-{serial}"
            call = Call(request_id, index, shim.index, kind, group.rcg, action, method, path, time.monotonic())
            world.calls.append(call)
            try:
                async with session.request(method, shim.url + path, data=body,
                                           headers={**headers, "X-Request-Id": request_id}) as response:
                    await response.read()
                    call.status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                call.error = type(err).__name__
                await asyncio.sleep(0.1)  # a shim down: do not spin
            call.t_recv = time.monotonic()
            await asyncio.sleep(rng.random() * 2 * world.config.think_seconds)


# -- the fault injector --------------------------------------------------------------------------------


class Injector:
    def __init__(self, world: World, store: RedisStore) -> None:
        self.world = world
        self.store = store
        self.rng = random.Random(f"{world.config.seed}-faults")
        self.background: set[asyncio.Task[None]] = set()
        self.busy_shims: set[int] = set()
        self.redis_busy = False

    def record(self, kind: str, **details: Any) -> None:
        self.world.faults.append({"kind": kind, "t": time.monotonic(), **details})

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def run(self) -> None:
        config = self.world.config
        while True:
            await asyncio.sleep(self.rng.expovariate(1 / config.fault_interval))
            if time.monotonic() >= self.world.stop_at - 1:
                break
            kind = self.rng.choice(config.faults)
            await self.inject(kind)
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)

    def free_shim(self) -> Shim | None:
        free = [shim for shim in self.world.shims if shim.index not in self.busy_shims]
        # keep at least one shim untouched at any moment, so clients always have somewhere to go
        if len(free) <= 1:
            return None
        return self.rng.choice(free)

    async def inject(self, kind: str) -> None:
        rng, sdrs = self.rng, self.world.sdrs
        if kind in ("shim-kill", "shim-stop", "clock-skew"):
            shim = self.free_shim()
            if shim is None:
                return
            self.busy_shims.add(shim.index)
            self.spawn(self._shim_fault(kind, shim))
        elif kind == "redis-restart":
            if not self.redis_busy:
                self.redis_busy = True
                self.spawn(self._redis_restart())
        elif kind in ("sdrs-slow", "sdrs-slow-delete"):
            method = "DELETE" if kind == "sdrs-slow-delete" else rng.choice(["POST", "GET"])
            fault = Fault(method=method, delay=rng.uniform(0.5, 3.0), times=rng.randint(1, 4))
            sdrs.inject(fault)
            self.record(kind, method=fault.method, delay=round(fault.delay, 2), times=fault.times)
        elif kind == "sdrs-reset-before":  # the POST is read, then the connection is reset: SDRS did nothing
            sdrs.inject(Fault(method="POST", path_contains="/action", reset=True))
            self.record(kind)
        elif kind == "sdrs-reset-after":  # SDRS acts on the action, then resets: the shim cannot know
            sdrs.reset_after_action += 1
            self.record(kind)
        elif kind == "sdrs-reset-after-delete":  # the same for a pair DELETE (an update removing a pair)
            sdrs.reset_after_delete += 1
            self.record(kind)
        elif kind == "sdrs-5xx":
            status = rng.choice([500, 502, 503, 504])
            fault = Fault(method=rng.choice(["POST", "GET", None]), status=status,
                          body={"error_code": "SDRS.0001", "error_msg": "injected"}, times=rng.randint(1, 3))
            sdrs.inject(fault)
            self.record(kind, status=status, method=fault.method, times=fault.times)
        elif kind == "sdrs-429":
            fault = Fault(method=rng.choice(["POST", "GET", None]), status=429, headers={"Retry-After": "1"},
                          body={"error_code": "APIGW.0308", "error_msg": "throttled"}, times=rng.randint(1, 3))
            sdrs.inject(fault)
            self.record(kind, method=fault.method, times=fault.times)
        elif kind == "sdrs-fail-job":
            group = rng.choice([g for g in self.world.groups if g.pg is not None])
            sdrs.fail_next_job(PROJECT, group.pg or "")
            self.record(kind, rcg=group.rcg)
        elif kind == "mode-flip":
            group = rng.choice([g for g in self.world.groups if g.pg is not None])
            if not any(s["rcg"] == group.rcg and s["t_done"] is None for s in self.world.switches):
                self.spawn(self._mode_flip(group))
        else:
            raise ValueError(f"unknown fault {kind!r}")

    async def _shim_fault(self, kind: str, shim: Shim) -> None:
        rng = self.rng
        try:
            if kind == "shim-stop":
                seconds = rng.uniform(0.3, self.world.config.stop_max_seconds)
                self.record(kind, shim=shim.index, seconds=round(seconds, 2))
                shim.signal_group(signal.SIGSTOP)
                shim.stopped = True
                await asyncio.sleep(seconds)
                shim.signal_group(signal.SIGCONT)
                shim.stopped = False
                return
            skew = None
            if kind == "clock-skew":
                skew = rng.choice(["+7200s", "+90s", "-90s", "-7200s"])
            down = rng.uniform(0.1, 2.0)
            self.record(kind, shim=shim.index, down=round(down, 2), skew=skew)
            await shim.kill()
            await asyncio.sleep(down)
            if time.monotonic() < self.world.stop_at + 5:
                await shim.start(skew or (shim.skew if kind != "shim-kill" else shim.skew))
        finally:
            self.busy_shims.discard(shim.index)

    async def _redis_restart(self) -> None:
        try:
            down = self.rng.uniform(0.1, 2.0)
            sig = self.rng.choice([signal.SIGTERM, signal.SIGKILL])
            self.record("redis-restart", down=round(down, 2), signal=signal.Signals(sig).name)
            await self.store.restart(down, sig)
        finally:
            self.redis_busy = False

    async def _mode_flip(self, group: GroupSpec) -> None:
        """Today's switch: each shim's mapping file, then its SIGHUP, pod by pod."""
        old, new = group.mode, MODE_CYCLE[group.mode]
        switch = {"rcg": group.rcg, "old": old, "new": new, "t_start": time.monotonic(), "t_done": None}
        self.world.switches.append(switch)
        self.record("mode-flip", rcg=group.rcg, old=old, new=new)
        group.mode = new
        for shim in self.rng.sample(self.world.shims, len(self.world.shims)):
            shim.write_mappings(self.world.groups)
            shim.signal_parent(signal.SIGHUP)
            await asyncio.sleep(self.rng.uniform(0, 1.0))
        switch["t_done"] = time.monotonic()


async def sample_memory(world: World) -> None:
    while time.monotonic() < world.stop_at + 2:
        total = 0
        for shim in world.shims:
            rss = shim.rss_bytes()
            world.peak_rss[shim.index] = max(world.peak_rss[shim.index], rss)
            total += rss
        world.peak_rss_total = max(world.peak_rss_total, total)
        await asyncio.sleep(0.5)


# -- the checker ---------------------------------------------------------------------------------------


def _after(path: str, marker: str) -> str | None:
    parts = path.split("/")
    if marker in parts:
        index = parts.index(marker)
        if index + 1 < len(parts):
            return parts[index + 1].lower().replace("-", "")
    return None


def _norm(identifier: str) -> str:
    return identifier.lower().replace("-", "")


class Checker:
    def __init__(self, world: World, initial_modes: dict[str, str]) -> None:
        self.world = world
        self.initial_modes = initial_modes
        groups = world.groups
        self.by_pg = {_norm(g.pg): g for g in groups if g.pg}
        self.by_rcg = {_norm(g.rcg): g for g in groups}
        self.by_sdrs_pair = {_norm(p): g for g in groups for p in g.sdrs_pairs}
        self.by_legacy_pair = {_norm(p): g for g in groups for p in g.legacy_pairs}
        self.job_group = {_norm(job.job_id): self.by_pg.get(_norm(job.server_group_id))
                          for job in world.sdrs.state.jobs.values()}

    # which group a request is about --------------------------------------------------------------
    def sdrs_group(self, entry: Logged) -> GroupSpec | None:
        if (pg := _after(entry.path, "server-groups")) is not None:
            return self.by_pg.get(pg) or self.by_rcg.get(pg)
        if (pair := _after(entry.path, "replications")) is not None:
            return self.by_sdrs_pair.get(pair)
        if (job := _after(entry.path, "jobs")) is not None:
            return self.job_group.get(job)
        if "server_group_id=" in entry.query:
            value = entry.query.split("server_group_id=")[1].split("&")[0]
            return self.by_pg.get(_norm(value))
        return None

    def legacy_group(self, entry: Logged) -> GroupSpec | None:
        if (rcg := _after(entry.path, "os-vendor-replication-consistency-groups")) is not None:
            return self.by_rcg.get(rcg)
        if (pair := _after(entry.path, "os-vendor-replications")) is not None:
            return self.by_legacy_pair.get(pair) or self.by_sdrs_pair.get(pair)
        return None

    def about(self, entry: Logged) -> str:
        for marker, kind in (("os-vendor-replication-consistency-groups", "group"), ("server-groups", "group"),
                             ("jobs", "job")):
            if _after(entry.path, marker) is not None:
                return kind
        for marker in ("os-vendor-replications", "replications"):
            if (pair := _after(entry.path, marker)) is not None:
                return "sdrs pair" if pair in self.by_sdrs_pair else "legacy pair"
        return "query"

    def sdrs_writes_of(self, entry: Logged) -> list[str]:
        """For a pair: what SDRS was asked to do with it (method, answer, job) before this request."""
        pair = _after(entry.path, "os-vendor-replications") or _after(entry.path, "replications")
        if pair is None:
            return []
        return [f"{e.method} {e.status} job={e.job_id} rid={e.request_id}" for e in self.world.sdrs.log
                if e.method != "GET" and _after(e.path, "replications") == pair]

    # ownership -----------------------------------------------------------------------------------
    @staticmethod
    def allowed(side: str, method: str, mode: str) -> bool:
        if mode == "sdrs":
            return side == "sdrs"
        if mode == "shadow":
            return side == "legacy" or method in ("GET", "HEAD")
        return side == "legacy"  # legacy, unmapped

    def mode_timeline(self, requests: list[tuple[Logged, GroupSpec]]) -> dict[str, list[tuple[float, str]]]:
        """Per group: (from time, mode); a switch takes effect at the first request that only the new
        mode allows, else when the last shim was told."""
        timeline: dict[str, list[tuple[float, str]]] = {g.rcg: [(float("-inf"), self.initial_modes[g.rcg])]
                                                         for g in self.world.groups}
        by_group: dict[str, list[Logged]] = defaultdict(list)
        for entry, group in requests:
            by_group[group.rcg].append(entry)
        for switch in sorted(self.world.switches, key=lambda s: s["t_start"]):
            done = switch["t_done"] if switch["t_done"] is not None else switch["t_start"]
            effect = done
            for entry in sorted(by_group[switch["rcg"]], key=lambda e: e.t):
                if entry.t < switch["t_start"]:
                    continue
                if entry.t > done:
                    break
                if self.allowed(entry.side, entry.method, switch["new"]) and not self.allowed(
                        entry.side, entry.method, switch["old"]):
                    effect = entry.t
                    break
            timeline[switch["rcg"]].append((effect, switch["new"]))
        return timeline

    def wrong_owner(self) -> list[dict[str, Any]]:
        offset = time.monotonic() - self.world.sdrs.now()  # the simulator's clock on the harness's clock
        requests: list[tuple[Logged, GroupSpec]] = []
        for entry in self.world.sdrs.log:
            group = self.sdrs_group(entry)
            if group is not None:
                requests.append((Logged(**{**asdict(entry), "t": entry.t + offset}), group))
        for entry in self.world.legacy.log:
            group = self.legacy_group(entry)
            if group is not None:
                requests.append((entry, group))
        timeline = self.mode_timeline(requests)
        found = []
        for entry, group in requests:
            mode = [m for start, m in timeline[group.rcg] if start <= entry.t][-1]
            if not self.allowed(entry.side, entry.method, mode):
                found.append({"side": entry.side, "method": entry.method, "path": entry.path, "query": entry.query,
                              "rcg": group.rcg, "mode": mode, "request_id": entry.request_id,
                              "status": entry.status, "about": self.about(entry),
                              "sdrs_writes_of_it": self.sdrs_writes_of(entry)})
        return found

    # duplicates -----------------------------------------------------------------------------------
    def guarded_writes(self) -> list[tuple[Logged, str]]:
        writes = []
        for entry in self.world.sdrs.log:
            is_action = entry.method == "POST" and entry.path.endswith("/action") and "/server-groups/" in entry.path
            is_delete = entry.method == "DELETE" and ("/replications/" in entry.path or "/server-groups/" in entry.path)
            if is_action or is_delete:
                group = self.sdrs_group(entry)
                writes.append((entry, group.pg if group and group.pg else entry.path))
        return writes

    def duplicates(self) -> list[dict[str, Any]]:
        jobs = self.world.sdrs.state.jobs
        by_group: dict[str, list[Logged]] = defaultdict(list)
        for entry, key in self.guarded_writes():
            by_group[key].append(entry)
        found = []
        for key, writes in by_group.items():
            writes.sort(key=lambda e: e.t)
            for i, later in enumerate(writes):
                for earlier in writes[:i]:
                    if earlier.request_id == later.request_id and earlier.request_id is not None:
                        continue  # one update removing several pairs: one action
                    job = jobs.get(earlier.job_id or "")
                    busy_until = job.ends_at if job is not None else (earlier.t_end or earlier.t)
                    if earlier.t <= later.t < busy_until:
                        state = job.status(later.t) if job is not None else "answer pending"
                        found.append({"group": key, "earlier": earlier.request_id, "later": later.request_id,
                                      "earlier_path": earlier.path, "later_path": later.path,
                                      "earlier_action": earlier.action, "later_action": later.action,
                                      "previous_job": earlier.job_id, "previous_job_state": state,
                                      "gap_seconds": round(later.t - earlier.t, 3)})
                        break
        return found

    # contradicting answers ------------------------------------------------------------------------
    def contradictions(self) -> tuple[list[dict[str, Any]], int]:
        accepted: dict[str, list[Logged]] = defaultdict(list)
        for entry, _ in self.guarded_writes():
            if entry.request_id and entry.job_id:
                accepted[entry.request_id].append(entry)
        found, noop = [], 0
        for call in self.world.calls:
            group = self.by_rcg[_norm(call.rcg)]
            if call.status is None or not self.owned_by_sdrs_throughout(group, call):
                continue
            sent = accepted.get(call.request_id, [])
            if call.kind == "action" and call.status == 200:
                posts = [e for e in sent if e.method == "POST" and e.action == SDRS_ACTION[call.action]]
                if not posts:
                    if call.action in NOOP_ACTIONS:
                        noop += 1
                    else:
                        found.append({"request_id": call.request_id, "action": call.action, "status": 200,
                                      "shim": call.shim, "what": "200 for an action never sent",
                                      "seconds": round(call.t_recv - call.t_send, 3),
                                      "sdrs_saw": self.sdrs_saw(call.request_id)})
            elif 400 <= call.status < 500 and sent:
                found.append({"request_id": call.request_id, "kind": call.kind, "action": call.action,
                              "status": call.status, "what": f"{call.status} for a call SDRS accepted",
                              "sent": [f"{e.method} {e.path}" for e in sent]})
        return found, noop

    def sdrs_saw(self, request_id: str) -> list[str]:
        return [f"{e.method} {e.path.rsplit('/', 1)[-1]} {e.action} -> {e.status} job={e.job_id}"
                for e in self.world.sdrs.log if e.request_id == request_id]

    def owned_by_sdrs_throughout(self, group: GroupSpec, call: Call) -> bool:
        if self.initial_modes[group.rcg] != "sdrs":
            return False
        return not any(s["rcg"] == group.rcg and s["t_start"] <= call.t_recv for s in self.world.switches)

    def report(self) -> dict[str, Any]:
        duplicates = self.duplicates()
        wrong_owner = self.wrong_owner()
        contradictions, noop = self.contradictions()
        world = self.world
        calls = world.calls
        outcome = Counter(str(c.status) if c.status is not None else (c.error or "none") for c in calls)
        sdrs_writes = self.guarded_writes()
        return {
            "seed": world.config.seed,
            "preset": world.config.preset,
            "config": {k: v for k, v in asdict(world.config).items() if k not in ("workdir",)},
            "store": world.config.store,
            "shims": [{"index": s.index, "workers": s.workers, "starts": s.starts} for s in world.shims],
            "client_calls": len(calls),
            "actions_sent": sum(1 for c in calls if c.kind == "action"),
            "calls_by_kind": dict(Counter(c.kind for c in calls)),
            "answers": dict(sorted(outcome.items())),
            "sdrs_requests": len(world.sdrs.log),
            "sdrs_action_posts": sum(1 for e, _ in sdrs_writes if e.method == "POST"),
            "sdrs_action_posts_by_answer": dict(Counter(str(e.status) for e, _ in sdrs_writes if e.method == "POST")),
            "sdrs_jobs": len(world.sdrs.state.jobs),
            "legacy_requests": len(world.legacy.log),
            "faults_injected": len(world.faults),
            "faults_by_kind": dict(Counter(f["kind"] for f in world.faults)),
            "violations": {"duplicate_sdrs_actions": len(duplicates), "wrong_owner": len(wrong_owner),
                           "contradicting_answers": len(contradictions)},
            "documented_noop_200": noop,
            "peak_rss_mb": {"per_shim": {str(k): round(v / 2**20, 1) for k, v in sorted(world.peak_rss.items())},
                            "all_shims": round(world.peak_rss_total / 2**20, 1)},
            "details": {"duplicate_sdrs_actions": duplicates[:20], "wrong_owner": wrong_owner[:20],
                        "contradicting_answers": contradictions[:20]},
            "faults": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items()}
                       for f in world.faults],
        }


# -- one campaign --------------------------------------------------------------------------------------


def seed_groups(config: ChaosConfig, sdrs: ChaosSdrs, legacy: ChaosLegacy) -> list[GroupSpec]:
    rng = random.Random(f"{config.seed}-groups")

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    groups = []
    kinds = ["sdrs"] * config.sdrs_groups + ["legacy"] * config.legacy_mapped_groups + \
        ["unmapped"] * config.unmapped_groups
    for kind in kinds:
        rcg = new_id()
        pg = new_id() if kind != "unmapped" else None
        group = GroupSpec(rcg, pg, kind)
        if pg is not None:
            status = rng.choice(["failed-over", "protected", "available"])
            sdrs.add_protection_group(PROJECT, pg, status=status, pair_count=3)
            group.sdrs_pairs = sdrs.pair_ids(PROJECT, pg)
        copy = legacy.add_group(PROJECT, group_id=rcg, pair_count=2,
                                status=rng.choice(["available", "failovered"]),
                                replication_status="active-stopped")
        group.legacy_pairs = list(copy.replication_ids)
        groups.append(group)
    return groups


async def run_campaign(config: ChaosConfig) -> dict[str, Any]:
    unknown = set(config.faults) - set(FAULT_KINDS)
    if unknown:
        raise SystemExit(f"unknown fault kinds: {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    if "clock-skew" in config.faults and shutil.which("faketime") is None:
        raise SystemExit("clock-skew needs Debian's faketime (apt-get install faketime)")
    owned_dir = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="chaos-")) if owned_dir else Path(config.workdir or "")
    workdir.mkdir(parents=True, exist_ok=True)
    sdrs = ChaosSdrs(SimulatorSettings(job_init_seconds=config.job_init_seconds,
                                       job_run_seconds=config.job_run_seconds))
    legacy = ChaosLegacy(LegacySimSettings(transition_seconds=0.2, copy_seconds=0.2))
    groups = seed_groups(config, sdrs, legacy)
    initial_modes = {g.rcg: g.mode for g in groups}
    runners: list[web.AppRunner] = []
    store = make_store(config.store, workdir / "store")
    shims = [Shim(i, workdir / f"shim{i}", free_port(),
                  2 if config.workers_every and (i + 1) % config.workers_every == 0 else 1)
             for i in range(config.shims)]
    world = World(config, sdrs, legacy, groups, shims)
    started = time.monotonic()
    injector = Injector(world, store)
    try:
        sdrs_runner, sdrs_url = await serve_app(sdrs.app())
        runners.append(sdrs_runner)
        legacy_runner, legacy_url = await serve_app(legacy.app())
        runners.append(legacy_runner)
        await store.start()
        for shim in shims:
            shim.directory.mkdir(parents=True, exist_ok=True)
            shim.write_mappings(groups)
            shim.write_config(config, sdrs_url, legacy_url, store)
        await asyncio.gather(*(shim.start() for shim in shims))
        world.stop_at = time.monotonic() + config.duration
        memory = asyncio.create_task(sample_memory(world))
        await asyncio.gather(injector.run(), *(client(world, i) for i in range(config.clients)))
        await memory
    finally:
        for task in list(injector.background):
            task.cancel()
        await asyncio.gather(*injector.background, return_exceptions=True)
        await asyncio.gather(*(shim.stop() for shim in shims), return_exceptions=True)
        await store.stop()
        for runner in runners:
            await runner.cleanup()
        if owned_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    report = Checker(world, initial_modes).report()
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def table(report: dict[str, Any]) -> str:
    v = report["violations"]
    rows = [
        ("seed", report["seed"]), ("preset", report["preset"]), ("store", report["store"]),
        ("shims (workers)", ", ".join(f"#{s['index']}x{s['workers']} ({s['starts']} starts)" for s in report["shims"])),
        ("wall seconds", report["wall_seconds"]),
        ("client calls", report["client_calls"]), ("actions sent", report["actions_sent"]),
        ("SDRS action POSTs", report["sdrs_action_posts"]),
        ("SDRS answers to them",
         ", ".join(f"{k}: {n}" for k, n in sorted(report["sdrs_action_posts_by_answer"].items()))),
        ("SDRS jobs", report["sdrs_jobs"]),
        ("legacy requests", report["legacy_requests"]),
        ("faults injected", report["faults_injected"]),
        ("faults by kind", ", ".join(f"{k} {n}" for k, n in sorted(report["faults_by_kind"].items()))),
        ("answers", ", ".join(f"{k}: {n}" for k, n in report["answers"].items())),
        ("DUPLICATE SDRS ACTIONS (must be 0)", v["duplicate_sdrs_actions"]),
        ("WRONG OWNER (must be 0)", v["wrong_owner"]),
        ("CONTRADICTING ANSWERS (must be 0)", v["contradicting_answers"]),
        ("pause/sync 200 with nothing sent (documented)", report["documented_noop_200"]),
        ("peak RSS MiB per shim", ", ".join(f"#{k} {m}" for k, m in report["peak_rss_mb"]["per_shim"].items())),
        ("peak RSS MiB all shims", report["peak_rss_mb"]["all_shims"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def config_from_args(argv: list[str] | None = None) -> ChaosConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="ci: ~1 minute; long: ~15 minutes")
    parser.add_argument("--seed", type=int, default=1919)
    parser.add_argument("--duration", type=float, help="seconds of load")
    parser.add_argument("--shims", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--store", choices=["redis", "redis-sentinel"], default="redis")
    parser.add_argument("--faults", help=f"comma-separated, of: {', '.join(FAULT_KINDS)} "
                                         f"(default: all but clock-skew and mode-flip)")
    parser.add_argument("--clock-skew", action="store_true", help="add clock-skew (a shim restarted under faketime)")
    parser.add_argument("--mode-flips", action="store_true", help="add mode-flip (mapping file + SIGHUP, shim by shim)")
    parser.add_argument("--fault-interval", type=float, help="mean seconds between faults")
    parser.add_argument("--workdir", help="keep configs and shim logs here (default: a temporary directory)")
    parser.add_argument("--json", help="write the JSON summary to this file")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(PRESETS.get(args.preset or "", {}))
    values["preset"] = args.preset or "custom"
    for name in ("duration", "shims", "clients", "fault_interval", "workdir"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    faults = list(args.faults.split(",")) if args.faults else list(DEFAULT_FAULTS)
    if args.clock_skew:
        faults.append("clock-skew")
    if args.mode_flips:
        faults.append("mode-flip")
    values["faults"] = tuple(dict.fromkeys(faults))
    config = ChaosConfig(seed=args.seed, store=args.store, **values)
    config_from_args.json_path = args.json  # type: ignore[attr-defined]
    return config


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    report = asyncio.run(run_campaign(config))
    print(table(report))
    json_path = getattr(config_from_args, "json_path", None)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    failed = any(report["violations"].values())
    if failed:
        print(json.dumps(report["details"], indent=2))
        preset = f" --preset {config.preset}" if config.preset != "custom" else ""
        print(f"replay: PYTHONPATH=$PWD python benchmarks/chaos.py --seed {config.seed} "
              f"--faults {','.join(config.faults)}{preset}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
