"""The state store's contract, held by every backend: memory, SQLite (a real file) and Redis (a real
redis-server). Leases are exclusive, expire, fence writes; documents survive a reopen (a restart)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conftest import RedisServer
from shim.state.action_guard import ActionGuard
from shim.state.records import GroupRecord, group_key
from shim.state.redis_store import RedisStore
from shim.state.sqlite_store import SqliteStore
from shim.state.store import LeaseLost, MemoryStore, StateStore, StoreUnavailable
from shim.translate.legacy import LegacyError

Factory = Callable[[], Awaitable[StateStore]]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Stores of one backend that share their data (two shims, or a shim and its restart)."""
    opened: list[StateStore] = []
    memory = MemoryStore()
    redis = None
    if request.param == "redis":
        redis = RedisServer(tmp_path)
        await redis.start()

    async def factory() -> StateStore:
        if request.param == "memory":
            return memory  # one process: "another store" is the same memory
        store: StateStore
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / "state" / "shim.sqlite3")
        else:
            assert redis is not None
            store = RedisStore(redis.url, "test:")
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()
    if redis is not None:
        await redis.stop()


async def test_a_lease_is_held_by_one_owner_at_a_time(make_store: Factory) -> None:
    first, second = await make_store(), await make_store()
    acquired = await first.acquire("group:a:b", ttl=30)
    assert acquired is not None
    assert await second.acquire("group:a:b", ttl=30) is None
    assert await second.acquire("group:a:other", ttl=30) is not None  # other keys are free
    await first.release(acquired[0])
    assert await second.acquire("group:a:b", ttl=30) is not None


async def test_concurrent_acquirers_get_exactly_one_lease(make_store: Factory) -> None:
    stores = [await make_store() for _ in range(4)]
    results = await asyncio.gather(*(store.acquire("group:x:y", ttl=30) for store in stores for _ in range(6)))
    assert sum(result is not None for result in results) == 1


async def test_a_crashed_holder_cannot_lock_a_key_forever(make_store: Factory) -> None:
    crashed, other = await make_store(), await make_store()
    assert await crashed.acquire("group:p:g", ttl=0.2) is not None  # never released
    assert await other.acquire("group:p:g", ttl=30) is None
    await asyncio.sleep(0.35)
    assert await other.acquire("group:p:g", ttl=30) is not None


async def test_a_fenced_write_is_refused_once_the_lease_is_lost(make_store: Factory) -> None:
    slow, fast = await make_store(), await make_store()
    acquired = await slow.acquire("group:p:g", ttl=0.2)
    assert acquired is not None
    lease, _ = acquired
    await slow.put("group:p:g", {"step": 1}, fence=lease)  # held: written
    await asyncio.sleep(0.35)
    taken = await fast.acquire("group:p:g", ttl=30)
    assert taken is not None and taken[1] == {"step": 1}
    with pytest.raises(LeaseLost):
        await slow.put("group:p:g", {"step": 2}, fence=lease)
    assert not await slow.renew(lease, ttl=30)
    await slow.release(lease)  # releasing a lost lease leaves the new holder's lease alone
    assert await fast.get("group:p:g") == {"step": 1}
    assert await slow.acquire("group:p:g", ttl=30) is None


async def test_release_writes_the_final_document_and_acquire_reads_it(make_store: Factory) -> None:
    store = await make_store()
    acquired = await store.acquire("group:p:g", ttl=30)
    assert acquired is not None and acquired[1] is None  # nothing written yet
    await store.release(acquired[0], {"job_ids": ["j1"], "jobs_pending": True})
    again = await store.acquire("group:p:g", ttl=30)
    assert again is not None and again[1] == {"job_ids": ["j1"], "jobs_pending": True}
    await store.put("meta:x", {"description": "kept"})
    assert await store.get("meta:x") == {"description": "kept"}
    await store.put("meta:x", None)
    assert await store.get("meta:x") is None


async def test_a_note_given_to_acquire_is_written_with_the_lease(make_store: Factory) -> None:
    """The note is written under the new lease in the same step; acquire answers the document it found.
    A note of None writes nothing, and a key held by another owner runs no note."""
    store, other = await make_store(), await make_store()
    await store.put("group:p:g", {"step": 1})
    seen: list[tuple[object, str]] = []

    def note(document: dict[str, object] | None, token: str, now: float) -> dict[str, object] | None:
        seen.append((document, token))
        return {"step": 2, "holder": token}

    acquired = await store.acquire("group:p:g", ttl=30, note=note)
    assert acquired is not None
    lease, found = acquired
    assert found == {"step": 1} and seen == [({"step": 1}, lease.token)]
    assert await other.get("group:p:g") == {"step": 2, "holder": lease.token}
    assert await other.acquire("group:p:g", ttl=30, note=note) is None
    assert len(seen) == 1
    await store.release(lease)
    again = await other.acquire("group:p:g", ttl=30, note=lambda document, token, now: None)
    assert again is not None and again[1] == {"step": 2, "holder": lease.token}
    assert await store.get("group:p:g") == {"step": 2, "holder": lease.token}


async def test_a_post_the_claims_note_covers_needs_no_write_and_a_later_one_writes_its_own(
    make_store: Factory,
) -> None:
    """The claim notes "a POST is about to leave" with the lease, dated a little ahead. A POST leaving
    before that date is covered by it; one leaving later (after slow reads, or a wait for a previous
    job) is noted again at its own time, so a lost answer's settle window never starts before it left.
    A claim that sent nothing clears the note, so the next action need not wait for it."""
    store = await make_store()
    guard = ActionGuard(store, settle_seconds=60, lease_seconds=0.9)  # the note reaches 0.3 s ahead
    key = group_key("p", "g")
    claimed_at = store.now()  # the store's clock: the one every time in the record is on
    async with guard.claim("p", "g", "rcg") as claim:
        noted = GroupRecord.from_document(await store.get(key)).sending_since
        assert noted is not None and claimed_at < noted <= store.now() + 0.3
        await claim.before_post()  # at once: the claim's note covers it
        assert GroupRecord.from_document(await store.get(key)).sending_since == noted
        claim.job_started(REPROTECT, "job-1", first_of_action=True)
    async with guard.claim("p", "g", "rcg") as claim:
        await asyncio.sleep(0.4)  # past the note's reach (the lease's renewal keeps it held)
        leaving = store.now()
        await claim.before_post()
        assert (GroupRecord.from_document(await store.get(key)).sending_since or 0.0) >= leaving
        claim.job_started(REPROTECT, "job-2", first_of_action=False)
    async with guard.claim("p", "g", "rcg") as claim:
        pass  # sends nothing: its note is cleared when it ends
    record = GroupRecord.from_document(await store.get(key))
    assert record.sending_since is None and record.unsettled_for(store.now(), 60) == 0
    assert record.job_ids == ("job-1", "job-2")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_what_was_written_survives_a_restart(backend: str, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    if backend == "redis":
        await redis.start()

    def fresh() -> StateStore:
        return SqliteStore(tmp_path / "shim.sqlite3") if backend == "sqlite" else RedisStore(redis.url, "t:")

    before = fresh()
    await before.open()
    acquired = await before.acquire(group_key("P", "G"), ttl=30)
    assert acquired is not None
    await before.put(acquired[0].key, GroupRecord().about_to_send(1.0).to_document(), fence=acquired[0])
    await before.close()  # the process is gone, its lease with it after the ttl

    after = fresh()
    await after.open()
    try:
        record = GroupRecord.from_document(await after.get(group_key("p", "g")))
        assert record.sending_since == 1.0
    finally:
        await after.close()
        await redis.stop()


async def test_an_unreachable_store_says_so(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    store = RedisStore(redis.url, "t:", timeout=0.5)
    await store.open()
    await redis.stop()
    with pytest.raises(StoreUnavailable):
        await store.acquire("group:p:g", ttl=30)
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()
    unwritable = SqliteStore(Path("/proc/no-such-dir/shim.sqlite3"))
    with pytest.raises(StoreUnavailable):
        await unwritable.open()
    await unwritable.close()


def test_group_keys_do_not_depend_on_the_spelling_of_either_id() -> None:
    assert group_key("0970DD7A1300F5672FF2C003C60AE115", "40DF180B9FE2471A8C641B758DC84189") == group_key(
        "0970dd7a-1300-f567-2ff2-c003c60ae115", "40df180b-9fe2-471a-8c64-1b758dc84189")


def test_a_record_this_version_cannot_read_counts_as_an_action_on_its_way() -> None:
    record = GroupRecord.from_document({"sending_since": "garbage"})
    assert record.unsettled_for(now=10.0, settle_seconds=60) > 0


async def test_sqlite_waits_for_another_processs_lock_off_the_event_loop(tmp_path: Path) -> None:
    """A transaction first tries the event loop's connection, which never waits; while another
    connection (another worker) holds the write lock it waits on the store's thread instead, and the
    loop keeps serving meanwhile."""
    import sqlite3

    store = SqliteStore(tmp_path / "shim.sqlite3", timeout=5)
    await store.open()
    other = sqlite3.connect(tmp_path / "shim.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another worker in the middle of its transaction
        write = asyncio.create_task(store.put("group:p:g", {"written": True}))
        ticks = 0
        for _ in range(10):  # the loop is not blocked while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10 and not write.done()
        other.execute("COMMIT")
        await asyncio.wait_for(write, 5)
        assert await store.get("group:p:g") == {"written": True}
    finally:
        other.close()
        await store.close()


async def test_a_sqlite_file_of_the_two_table_layout_keeps_its_records_and_leases(tmp_path: Path) -> None:
    """A file written by an earlier version (documents and leases in two tables) is moved into one
    table when it is opened: its records read as before and a lease still held is still held."""
    import sqlite3

    path = tmp_path / "shim.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE documents (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)")
    old.execute("CREATE TABLE leases (key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL)")
    old.execute("INSERT INTO documents VALUES ('group:p:g', '{\"job_ids\":[\"j1\"]}', 1.0), "
                "('group:p:free', '{\"step\":1}', 1.0)")
    old.execute("INSERT INTO leases VALUES ('group:p:g', 'old-holder', ?), ('group:p:free', 'gone', 1.0)",
                (time.time() + 30,))
    old.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.get("group:p:g") == {"job_ids": ["j1"]}
        assert await store.acquire("group:p:g", ttl=30) is None  # still the earlier version's holder's
        taken = await store.acquire("group:p:free", ttl=30)  # its lease had expired
        assert taken is not None and taken[1] == {"step": 1}
    finally:
        await store.close()
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"records"}


def test_every_field_of_a_group_record_survives_its_document():
    """to_document names the fields one by one: a field added later and forgotten there fails here."""
    values = {"action": "os-reprotect-replication-consistency-group", "job_ids": ("j1", "j2"), "jobs_pending": True,
              "started_at": 1.5, "sending_since": 2.5, "settle_until": 3.5, "holder": "host/1/ab",
              "extra": {"later": [1]}}
    assert set(values) == {field.name for field in dataclasses.fields(GroupRecord)}
    record = GroupRecord(**values)
    assert GroupRecord.from_document(json.loads(json.dumps(record.to_document()))) == record


_OPEN_AT_ONCE = """
import asyncio, sys, time
from pathlib import Path
from shim.state.sqlite_store import SqliteStore

async def main() -> None:
    store = SqliteStore(Path(sys.argv[1]), timeout=5.0)
    while time.time() < float(sys.argv[2]):  # every process starts at the same moment
        pass
    await store.open()
    acquired = await store.acquire(sys.argv[3], 30)
    assert acquired is not None
    await store.release(acquired[0], {"by": sys.argv[3]})
    await store.close()
    print("ok")

asyncio.run(main())
"""


def test_workers_opening_a_new_sqlite_file_at_the_same_moment_all_get_the_store(tmp_path: Path) -> None:
    """`--workers N` start together: each makes the new file ready (WAL, tables) while the others do
    the same, which SQLite answers with "locked" at once; none of them may start without its store."""
    for round_number in range(4):
        path = tmp_path / f"round{round_number}.sqlite3"
        start_at = time.time() + 1.0
        processes = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(path), str(start_at), f"key{n}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
        outcomes = [process.communicate(timeout=60) for process in processes]
        assert all(out.strip() == "ok" for out, _ in outcomes), [err[-400:] for _, err in outcomes]


# -- a holder whose lease ran out while it was stalled ---------------------------------------------

REPROTECT = "os-reprotect-replication-consistency-group"


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
@pytest.mark.parametrize("another_claim_acts", [True, False])
async def test_a_stalled_holder_never_overwrites_what_a_newer_claim_recorded(
    backend: str, another_claim_acts: bool, tmp_path: Path,
) -> None:
    """A claim whose process froze past its lease (no renewal ran) while another claim took the group
    and started a job: releasing afterwards keeps the newer claim's job pending beside its own, so no
    later action is sent while either may run. With no other claim meanwhile, its own record stands."""
    redis = RedisServer(tmp_path)
    if backend == "redis":
        await redis.start()
    memory = MemoryStore()

    def fresh() -> StateStore:
        if backend == "memory":
            return memory
        return SqliteStore(tmp_path / "shim.sqlite3") if backend == "sqlite" else RedisStore(redis.url, "t:")

    async def another_claim_starts_a_job() -> None:  # another shim (or worker), on its own loop
        store = fresh()
        await store.open()
        try:
            async with ActionGuard(store, settle_seconds=0).claim("p", "g", "rcg") as claim:
                await claim.before_post()
                claim.job_started(REPROTECT, "job-of-the-newer-claim", first_of_action=True)
        finally:
            if store is not memory:
                await store.close()

    stalled = fresh()
    await stalled.open()
    try:
        async with ActionGuard(stalled, settle_seconds=0, lease_seconds=0.3).claim("p", "g", "rcg") as claim:
            await claim.before_post()
            claim.job_started(REPROTECT, "job-of-the-stalled-claim", first_of_action=True)
            time.sleep(0.5)  # frozen: the event loop runs nothing, so the lease runs out unrenewed
            if another_claim_acts:
                other = threading.Thread(target=asyncio.run, args=(another_claim_starts_a_job(),))
                other.start()
                other.join(timeout=30)
        record = GroupRecord.from_document(await stalled.get(group_key("p", "g")))
    finally:
        if stalled is not memory:
            await stalled.close()
        await redis.stop()

    expected = {"job-of-the-stalled-claim", "job-of-the-newer-claim"} if another_claim_acts else {
        "job-of-the-stalled-claim"}
    assert set(record.pending_jobs(time.time())) == expected
    assert record.sending_since is None  # both POSTs were answered: nothing is "on its way"


def test_a_record_absorbs_a_stalled_holders_facts_without_losing_its_own() -> None:
    newer = GroupRecord(action="os-sync-replication-consistency-group", job_ids=("b",), jobs_pending=True,
                        started_at=20.0, holder="B")
    stalled = GroupRecord(action=REPROTECT, job_ids=("a",), jobs_pending=True, started_at=10.0, settle_until=99.0,
                          holder="A")
    merged = newer.absorbing(stalled)
    assert merged.job_ids == ("b", "a") and merged.jobs_pending and merged.holder == "B"
    assert merged.action == newer.action and merged.started_at == 20.0 and merged.settle_until == 99.0
    # the newer claim's jobs were seen finished: the stalled holder's are what may still run
    finished = dataclasses.replace(newer, jobs_pending=False)
    assert finished.absorbing(stalled).pending_jobs(30.0) == ("a",)
    # a POST of the stalled holder whose answer it never got keeps its settle time
    on_its_way = dataclasses.replace(stalled, sending_since=15.0, settle_until=0.0)
    assert newer.absorbing(on_its_way).unsettled_for(16.0, settle_seconds=60) == 59
    # its own earlier write (no one else held the group meanwhile) is simply replaced
    assert dataclasses.replace(stalled, jobs_pending=False, holder="A").absorbing(stalled) == stalled


# -- Redis with a replica and Sentinel -----------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SentinelSet:
    """A primary, its replica and one Sentinel watching them: real processes on loopback, free ports."""

    def __init__(self, directory: Path, replicas: int = 1) -> None:
        self.directory = directory
        self.primary, self.replica = RedisServer(directory / "primary"), RedisServer(directory / "replica")
        self.others = [RedisServer(directory / f"replica{number}") for number in range(1, replicas)]
        self.sentinel_port = _free_port()
        self.sentinel: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import shutil

        binary = shutil.which("redis-sentinel")
        assert binary, "redis-sentinel is not installed: run .ci/run (apt-get install redis-sentinel)"
        for server in (self.primary, self.replica, *self.others):
            server.directory.mkdir()
        await self.primary.start()
        for replica in (self.replica, *self.others):
            replica.port = _free_port()
            replica.proc = await asyncio.create_subprocess_exec(
                "redis-server", "--port", str(replica.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(replica.directory), "--replicaof", "127.0.0.1", str(self.primary.port),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        config = self.directory / "sentinel.conf"
        config.write_text(f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.directory}\n"
                          f"sentinel monitor shim 127.0.0.1 {self.primary.port} 1\n"
                          "sentinel down-after-milliseconds shim 300\nsentinel failover-timeout shim 5000\n")
        self.sentinel = await asyncio.create_subprocess_exec(
            binary, str(config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await self._until(lambda info: info["replicas"] == 1 + len(self.others), "the Sentinel never saw the replicas")
        import redis.asyncio as aioredis

        primary = aioredis.Redis(port=self.primary.port, decode_responses=True)
        try:
            for _ in range(600):  # the replica has synced and acknowledges the stream
                replication = await primary.info("replication")
                if all(replication.get(f"slave{number}", {}).get("state") == "online"
                       for number in range(1 + len(self.others))):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the replica never came online")
        finally:
            await primary.aclose()

    async def _until(self, done: Callable[[dict[str, int]], bool], failure: str) -> None:
        import redis.asyncio as aioredis

        for _ in range(600):
            try:
                client = aioredis.Redis(port=self.sentinel_port, decode_responses=True)
                try:
                    master = await client.sentinel_master("shim")
                    replicas = [replica for replica in await client.sentinel_slaves("shim")
                                if "s_down" not in replica["flags"]]
                finally:
                    await client.aclose()
                if done({"port": int(master["port"]), "replicas": len(replicas)}):
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(failure)

    async def fail_over(self) -> None:
        """The primary dies; the Sentinel promotes the replica."""
        await self.primary.stop()
        await self._until(lambda info: info["port"] != self.primary.port, "no failover")

    async def stop(self) -> None:
        for proc in (self.sentinel, self.replica.proc, *(other.proc for other in self.others)):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await self.primary.stop()


@pytest.fixture
async def sentinel_set(tmp_path: Path) -> AsyncIterator[SentinelSet]:
    servers = SentinelSet(tmp_path)
    try:
        await servers.start()
        yield servers
    finally:
        await servers.stop()


def _sentinel_store(servers: SentinelSet) -> RedisStore:
    return RedisStore(None, "t:", timeout=2.0, sentinels=[("127.0.0.1", servers.sentinel_port)], master="shim",
                      min_replicas=1, replica_ack_timeout=2.0)  # generous: a loaded machine is slow, not failing


async def test_a_record_acknowledged_by_the_replica_survives_a_failover_and_the_store_follows(
    sentinel_set: SentinelSet,
) -> None:
    store = _sentinel_store(sentinel_set)
    await store.open()
    try:
        guard = ActionGuard(store, settle_seconds=60)
        async with guard.claim("p", "g", "rcg") as claim:
            await claim.before_post()
            claim.job_started(REPROTECT, "job-1", first_of_action=True)

        await sentinel_set.fail_over()
        for _ in range(100):  # the first call after the failover may meet the dead primary's connection
            try:
                record = GroupRecord.from_document(await store.get(group_key("p", "g")))
                break
            except StoreUnavailable:
                await asyncio.sleep(0.05)

        assert record.job_ids == ("job-1",) and record.pending_jobs(store.now()) == ("job-1",)
        # The new primary has no replica left (the old primary is dead): nothing it writes could survive
        # the next failover, so the next action fails closed rather than rely on it.
        with pytest.raises(LegacyError) as refused:
            async with guard.claim("p", "g", "rcg"):
                raise AssertionError("a claim no replica acknowledged was handed out")
        assert refused.value.status == 503 and refused.value.refusal == "state_store"
    finally:
        await store.close()


async def test_a_lease_no_replica_acknowledged_is_not_used_nothing_is_sent(sentinel_set: SentinelSet) -> None:
    """The replica is stopped: the claim's note reaches the primary only, so the claim fails closed (the
    guard's 503) and the group is given back; once the replica answers again, the claim goes through."""
    import signal

    store = _sentinel_store(sentinel_set)
    await store.open()
    guard = ActionGuard(store, settle_seconds=60)
    assert sentinel_set.replica.proc is not None
    try:
        sentinel_set.replica.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(LegacyError) as refused:
                async with guard.claim("p", "g", "rcg"):
                    raise AssertionError("a claim no replica acknowledged was handed out")
        finally:
            sentinel_set.replica.proc.send_signal(signal.SIGCONT)
        assert refused.value.status == 503 and refused.value.refusal == "state_store"
        async with guard.claim("p", "g", "rcg") as claim:
            await claim.before_post()
    finally:
        await store.close()


async def test_a_failover_during_load_sends_no_group_a_second_action(tmp_path: Path) -> None:
    """Two replicas, one Sentinel; guards (two stores: two shims) claim eight groups over and over and
    "send" an action when no job of the group is pending (its jobs never end here) while the primary
    dies and a replica takes over: every group got at most one action, and actions went on after."""
    servers = SentinelSet(tmp_path, replicas=2)
    stores: list[RedisStore] = []
    try:
        await servers.start()
        stores = [_sentinel_store(servers) for _ in range(2)]
        for store in stores:
            await store.open()
        guards = [ActionGuard(store, settle_seconds=3600) for store in stores]
        sent: dict[str, int] = {}
        after_failover: list[str] = []
        failed_over = stop = False

        async def client(guard: ActionGuard, number: int) -> None:
            round_ = 0
            while not stop:
                round_ += 1
                group = f"g{(number + round_) % (16 if failed_over else 8)}"  # new groups too, after it
                try:
                    async with guard.claim("p", group, group) as claim:
                        if claim.pending_jobs():
                            continue  # the previous action's job may run: nothing is sent
                        await claim.before_post()
                        sent[group] = sent.get(group, 0) + 1  # the POST leaves
                        if failed_over:
                            after_failover.append(group)
                        claim.job_started(REPROTECT, f"job-{group}-{round_}", first_of_action=True)
                except LegacyError:
                    pass  # 409 (held, settling) or 503 (the store, or no replica acknowledged)
                await asyncio.sleep(0.005)

        load = asyncio.gather(*(client(guard, number) for guard in guards for number in range(4)))
        while len(sent) < 4:  # some groups have had their action before the failover
            await asyncio.sleep(0.01)
        await servers.fail_over()
        failed_over = True
        for _ in range(600):  # the other replica follows the new primary, then actions go out again
            if len(after_failover) >= 4:
                break
            await asyncio.sleep(0.05)
        stop = True
        await load

        assert sent and all(count == 1 for count in sent.values()), sent
        assert after_failover, "no action went out after the failover: the stores did not follow it"
    finally:
        for store in stores:
            await store.close()
        await servers.stop()
