"""Never a duplicate SDRS action, across restarts and across shims (the state store behind the guard).

Real `shim serve` processes, a real SQLite file or a real redis-server, the SDRS simulator in the test:
a restart (SIGTERM or SIGKILL), a new worker set after its parent was killed, a second shim sharing
Redis, a job read that fails, two spellings of one project id: every time, one SDRS action POST.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import (
    GO_HEADERS,
    GROUP,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    RedisServer,
    Reply,
    action_url,
    call,
    start_server,
)
from processes import Spawn, spawner, write_config
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.simulator.faults import Fault

REPROTECT_CALL = (PROJECT, GROUP, "start-server-group")
GROUP_URL = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
DASHED_PROJECT = f"{PROJECT[:8]}-{PROJECT[8:12]}-{PROJECT[12:16]}-{PROJECT[16:20]}-{PROJECT[20:]}"


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start


async def simulator_with(init_seconds: float, run_seconds: float = 0.2) -> tuple[SdrsSimulator, web.AppRunner, str]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=init_seconds, job_run_seconds=run_seconds))
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=1)
    runner, url = await start_server(sim.app())
    return sim, runner, url


@pytest.fixture
async def slow_jobs() -> AsyncIterator[tuple[SdrsSimulator, str]]:
    """Jobs stay INIT for a minute: SDRS itself would accept a second action all that time."""
    sim, runner, url = await simulator_with(init_seconds=60.0)
    yield sim, url
    await runner.cleanup()


async def reprotect(shim: str, project: str = PROJECT) -> Reply:
    return await call("POST", action_url(shim, project), body=REPROTECT_BODY, headers=GO_HEADERS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def confirmed(drain: float) -> dict[str, Any]:
    return {"actions": {"completion": "confirmed", "confirm_timeout_seconds": 30, "poll_initial_seconds": 0.05,
                        "poll_max_seconds": 0.1},
            "lifecycle": {"drain_seconds": drain, "readiness_grace_seconds": 0}}


# -- restarts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_restart_during_a_confirmed_action_never_sends_it_twice(tmp_path, spawn, slow_jobs, kill):
    """The client's confirmed reprotect is cut by the restart; it retries against the new process
    while SDRS's job is still INIT: no second POST."""
    sim, sdrs = slow_jobs
    config = write_config(tmp_path, sdrs, None, **confirmed(drain=0.3))
    first_shim = await spawn(config)
    attempt = asyncio.create_task(reprotect(first_shim.url))
    while not sim.action_calls:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the shim is polling the job now
    first_shim.proc.send_signal(kill)
    await first_shim.proc.wait()
    with pytest.raises(Exception):  # noqa: B017 - the connection is cut, however the client library says it
        await attempt

    second_shim = await spawn(config)
    retry = await reprotect(second_shim.url)

    assert retry.status == 409, retry.body
    # SIGTERM released the lease and the retry reads the INIT job; SIGKILL left the lease to expire
    # (state.lease_seconds), and until then the group is held.
    expected = "still INIT" if kill == signal.SIGTERM else "is in progress"
    assert expected in retry.fault()[1]["message"]
    assert sim.action_calls == [REPROTECT_CALL]


async def test_sigkill_while_the_post_is_on_its_way_leaves_the_outcome_unknown_not_forgotten(tmp_path, spawn):
    """Killed after the POST left but before SDRS's answer was recorded: the next process knows an
    action may have started (the record written before the POST) and sends nothing until it settles."""
    sim, runner, sdrs = await simulator_with(init_seconds=60.0)
    try:
        sim.inject(Fault(method="POST", hang=True))  # SDRS never answers this POST
        config = write_config(tmp_path, sdrs, None, actions={"settle_seconds": 30}, state={
            "backend": "sqlite", "path": "./state.sqlite3", "lease_seconds": 0.5})
        first_shim = await spawn(config)
        attempt = asyncio.create_task(reprotect(first_shim.url))
        while not sim.action_calls:
            await asyncio.sleep(0.01)
        first_shim.proc.send_signal(signal.SIGKILL)
        await first_shim.proc.wait()
        attempt.cancel()
        await asyncio.sleep(0.6)  # the dead holder's lease has expired: only the record speaks now

        second_shim = await spawn(config)
        retry = await reprotect(second_shim.url)

        assert retry.status == 409, retry.body
        assert "not known yet" in retry.fault()[1]["message"]
        assert 0 < int(retry.headers["Retry-After"]) <= 30
        assert len(sim.action_calls) == 1
    finally:
        await runner.cleanup()


async def test_after_a_restart_an_accepted_reprotect_still_reads_and_guards_as_running(tmp_path, spawn):
    # The job stays INIT long enough for two process starts on a loaded machine.
    sim, runner, sdrs = await simulator_with(init_seconds=6.0, run_seconds=0.3)
    try:
        config = write_config(tmp_path, sdrs, None, lifecycle={"drain_seconds": 0.2, "readiness_grace_seconds": 0})
        first_shim = await spawn(config)
        assert (await reprotect(first_shim.url)).status == 200
        first_shim.proc.send_signal(signal.SIGTERM)
        await first_shim.proc.wait()

        second_shim = await spawn(config)
        read = await call("GET", second_shim.url + GROUP_URL, headers=GO_HEADERS)
        again = await reprotect(second_shim.url)
        group = read.json()["replication_consistency_group"]

        assert (group["status"], group["replication_status"]) == ("available", "copying")  # not failovered
        assert again.status == 409 and "still INIT" in again.fault()[1]["message"]
        while sim.group(PROJECT, GROUP).status != "protected":  # SDRS finishes the job
            await asyncio.sleep(0.1)
        after = await reprotect(second_shim.url)
        assert after.status == 400 and "'protected'" in after.fault()[1]["message"]
        assert sim.action_calls == [REPROTECT_CALL]
    finally:
        await runner.cleanup()


# -- the job read -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    Fault(method="GET", path_contains="/jobs/", status=404, body=b"", times=None),
    Fault(method="GET", path_contains="/jobs/", status=404,
          body={"error_code": "APIGW.0101", "error_msg": "The API does not exist"}, times=None),
    Fault(method="GET", path_contains="/jobs/", status=500, body=b"", times=None),
    Fault(method="GET", path_contains="/jobs/", hang=True, times=None),
], ids=["gateway-404", "apigw-404", "500", "timeout"])
async def test_only_sdrs_saying_the_job_does_not_exist_ends_a_pending_job(slow_jobs, make_shim, fault):
    sim, sdrs = slow_jobs
    shim = await make_shim(sdrs=sdrs, timeouts={"sdrs": {"connect": 1, "read": 0.5, "total": 1}})
    assert (await reprotect(shim)).status == 200
    sim.inject(fault)

    again = await reprotect(shim)

    assert again.status == 503, again.body
    assert "no new action is sent" in again.fault()[1]["message"]
    assert again.headers["Retry-After"]
    assert sim.action_calls == [REPROTECT_CALL]


# -- one key per group, whatever the spelling ---------------------------------------------------


@pytest.mark.parametrize("concurrent", [True, False], ids=["concurrent", "sequential"])
async def test_two_spellings_of_one_project_id_are_one_group(slow_jobs, make_shim, concurrent):
    sim, sdrs = slow_jobs
    shim = await make_shim(sdrs=sdrs)
    projects = [PROJECT, DASHED_PROJECT, PROJECT.upper(), DASHED_PROJECT.upper()] * 4
    if concurrent:
        replies = await asyncio.gather(*(reprotect(shim, project) for project in projects))
    else:
        replies = [await reprotect(shim, project) for project in projects]

    assert sorted(reply.status for reply in replies) == [200] + [409] * (len(projects) - 1)
    assert sim.action_calls == [REPROTECT_CALL]  # SDRS saw the canonical project id once


# -- workers die with their parent --------------------------------------------------------------


async def test_a_new_worker_set_after_the_parent_was_killed_sends_one_post(tmp_path, spawn, slow_jobs):
    sim, sdrs = slow_jobs
    port = free_port()
    config = write_config(tmp_path, sdrs, None, listen={"host": "127.0.0.1", "port": port},
                          lifecycle={"drain_seconds": 5, "readiness_grace_seconds": 0.5})
    old = await spawn(config, "--workers", "2", ready_message="workers started")
    await old.wait_for(lambda record: record.get("message") == "listening", count=2)
    (started,) = old.messages("workers started")
    old_workers = started["worker_pids"]
    old.proc.send_signal(signal.SIGKILL)  # the parent only: its workers must not live on alone
    await old.proc.wait()

    new = await spawn(config, "--workers", "2", ready_message="workers started")
    await new.wait_for(lambda record: record.get("message") == "listening", count=2)
    replies = await asyncio.gather(*(reprotect(new.url) for _ in range(16)))

    assert sorted(reply.status for reply in replies) == [200] + [409] * 15
    assert sim.action_calls == [REPROTECT_CALL]
    for _ in range(200):  # the orphans got SIGTERM from the kernel and drained away
        alive = [pid for pid in old_workers if _alive(pid)]
        if not alive:
            break
        await asyncio.sleep(0.05)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# -- nothing sent, nothing locked ---------------------------------------------------------------


class ClosingListener:
    """The simulator behind a listener the test opens and closes: an SDRS that answers the group read
    and then refuses every new connection (the POST never leaves the shim)."""

    def __init__(self, sim: SdrsSimulator) -> None:
        self.port = free_port()
        self.server: asyncio.AbstractServer | None = None
        self.close_after_group_read = False
        app = sim.app()
        app.middlewares.insert(0, self._close_after)
        self.runner = web.AppRunner(app, access_log=None)

    @web.middleware
    async def _close_after(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if self.close_after_group_read and request.method == "GET" and request.path.endswith(GROUP):
            response.force_close()  # this connection ends with this answer...
            assert self.server is not None
            self.server.close()  # ...and no new one is accepted
        return response

    async def open(self) -> None:
        assert self.runner.server is not None
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.runner.server, "127.0.0.1", self.port, reuse_address=True)


async def test_an_action_post_that_never_left_locks_nothing(make_shim):
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2))
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=1)
    listener = ClosingListener(sim)
    await listener.runner.setup()
    await listener.open()
    try:
        shim = await make_shim(sdrs=f"http://127.0.0.1:{listener.port}", actions={"settle_seconds": 600})
        listener.close_after_group_read = True
        refused = await reprotect(shim)
        listener.close_after_group_read = False
        await listener.open()
        retry = await reprotect(shim)

        assert refused.status == 503, refused.body
        assert "nothing was sent" in refused.fault()[1]["message"]
        assert retry.status == 200, retry.body  # no settle lock: the retry went out
        assert sim.action_calls == [REPROTECT_CALL]
    finally:
        if listener.server is not None:
            listener.server.close()
        await listener.runner.cleanup()


async def test_no_free_pooled_connection_in_time_means_nothing_was_sent():
    """The SDRS client's own account of a pool wait that timed out: no byte left, SdrsNotSent."""
    from shim.config import Timeouts
    from shim.translate.sdrs_models import SdrsNotSent
    from shim.upstreams.sdrs_client import SdrsClient

    sim = SdrsSimulator()
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=1)
    sim.inject(Fault(method="GET", hang=True))
    runner, url = await start_server(sim.app())
    client = SdrsClient(url, Timeouts(connect=0.3, read=5, total=10), pool_connections=1)
    await client.start()
    try:
        holder = asyncio.create_task(client.request("GET", f"/v1/{PROJECT}/server-groups/{GROUP}", {}))
        await asyncio.sleep(0.1)  # the only pooled connection is now busy
        with pytest.raises(SdrsNotSent):
            await client.request("POST", f"/v1/{PROJECT}/server-groups/{GROUP}/action", {"X-Auth-Token": "t"},
                                 {"start-server-group": {}})
        holder.cancel()
        assert sim.action_calls == []
    finally:
        await client.close()
        await runner.cleanup()


# -- several shims: Redis ------------------------------------------------------------------------


def redis_config(tmp_path: Path, name: str, sdrs: str, redis: RedisServer, **extra: Any) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return write_config(directory, sdrs, None, state={"backend": "redis", "url": redis.url, "timeout_seconds": 0.5},
                        **extra)


def clock_ahead(offset: str) -> tuple[str, ...]:
    """Run a shim with its clock `offset` ahead (libfaketime, Debian's `faketime`: .ci/run installs it);
    its monotonic clock is left alone, as a skewed host's is."""
    assert shutil.which("faketime"), "faketime is not installed: run .ci/run (apt-get install faketime)"
    library = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    # The library itself, not the `faketime` command, which forks: the shim's pid is the one signalled.
    return ("env", f"LD_PRELOAD={library}", f"FAKETIME={offset}", "FAKETIME_DONT_FAKE_MONOTONIC=1")


async def test_two_shims_sharing_redis_send_one_post(tmp_path, spawn, slow_jobs, redis_server):
    sim, sdrs = slow_jobs
    first = await spawn(redis_config(tmp_path, "a", sdrs, redis_server))
    second = await spawn(redis_config(tmp_path, "b", sdrs, redis_server))

    replies = await asyncio.gather(*(reprotect(shim.url) for shim in [first, second] * 12))

    assert sorted(reply.status for reply in replies) == [200] + [409] * 23
    assert sim.action_calls == [REPROTECT_CALL]


async def test_with_redis_down_actions_fail_closed_and_reads_go_on(tmp_path, spawn, redis_server):
    sim, runner, sdrs = await simulator_with(init_seconds=0.05, run_seconds=0.1)
    try:
        shim = await spawn(redis_config(tmp_path, "a", sdrs, redis_server))
        await redis_server.stop()

        action = await reprotect(shim.url)
        read = await call("GET", shim.url + GROUP_URL, headers=GO_HEADERS)
        for _ in range(100):  # the store watcher notices within its period
            ready = await call("GET", shim.url + "/readyz")
            metrics = (await call("GET", shim.url + "/metrics")).body.decode()
            if ready.json().get("state_store") == "unavailable" and "shim_state_store_up 0.0" in metrics:
                break
            await asyncio.sleep(0.05)

        assert action.status == 503 and action.headers["Retry-After"], action.body
        assert "state store" in action.fault()[1]["message"]
        assert read.status == 200
        assert read.json()["replication_consistency_group"]["status"] == "failovered"
        assert ready.json()["state_store"] == "unavailable"
        assert "shim_state_store_up 0.0" in metrics
        assert sim.action_calls == []  # no POST without the lease

        await redis_server.start()  # same port: the store comes back, so do actions
        for _ in range(100):
            back = await reprotect(shim.url)
            if back.status != 503:
                break
            await asyncio.sleep(0.1)
        assert back.status == 200, back.body
        assert sim.action_calls == [REPROTECT_CALL]
    finally:
        await runner.cleanup()


# -- shims whose clocks disagree: one clock, the store's ------------------------------------------


async def test_a_shim_two_hours_ahead_still_reads_the_job_another_shim_started(tmp_path, spawn, slow_jobs,
                                                                                redis_server):
    """The job memory (an hour) is measured on the store's clock: a shim whose clock is two hours ahead
    does not take a job started a moment ago for an old one, so it reads it (INIT) and sends nothing."""
    sim, sdrs = slow_jobs
    on_time = await spawn(redis_config(tmp_path, "a", sdrs, redis_server))
    ahead = await spawn(redis_config(tmp_path, "b", sdrs, redis_server), wrapper=clock_ahead("+2h"))

    first = await reprotect(on_time.url)
    second = await reprotect(ahead.url)

    assert first.status == 200, first.body
    assert second.status == 409, second.body
    assert "still INIT" in second.fault()[1]["message"]
    assert sim.action_calls == [REPROTECT_CALL]


async def test_a_shim_90_s_ahead_waits_out_the_settle_time_of_an_unknown_outcome(tmp_path, spawn, redis_server):
    """SDRS never answers the first POST (its outcome is unknown: 60 s of settle time from then, on the
    store's clock); a shim whose clock is 90 s ahead must not think that time has passed."""
    sim, runner, sdrs = await simulator_with(init_seconds=60.0)
    try:
        sim.inject(Fault(method="POST", hang=True))  # the first POST only
        settings = {"actions": {"settle_seconds": 60},
                    "timeouts": {"sdrs": {"connect": 1, "read": 0.5, "total": 1}}}
        on_time = await spawn(redis_config(tmp_path, "a", sdrs, redis_server, **settings))
        ahead = await spawn(redis_config(tmp_path, "b", sdrs, redis_server, **settings), wrapper=clock_ahead("+90s"))

        first = await reprotect(on_time.url)
        second = await reprotect(ahead.url)

        assert first.status == 504, first.body  # SDRS did not answer: it may have started
        assert second.status == 409, second.body
        assert "not known yet" in second.fault()[1]["message"]
        assert 50 <= int(second.headers["Retry-After"]) <= 60  # the store's clock, not the shim's
        assert len(sim.action_calls) == 1
    finally:
        await runner.cleanup()


def test_memory_state_cannot_back_several_workers(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = write_config(tmp_path, "http://127.0.0.1:9", None, state={"backend": "memory"})
    done = subprocess.run([sys.executable, "-m", "shim", "serve", "--config", str(config), "--workers", "2"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "state.backend: memory cannot be shared by 2 workers" in done.stderr

