"""The durable default: a SQLite file (WAL mode), shared by every worker of one `shim serve`.

Each operation is one short transaction (`BEGIN IMMEDIATE`, or a single statement on its own); a
committed write survives SIGKILL of the process (WAL, `synchronous=NORMAL`: only a power loss can
drop the last commits). Leases expire by wall-clock time, which every process of the host shares.

Where it runs: a transaction takes tens of microseconds, while handing it to a thread and back costs
more than that, so it is tried first on the event loop's own connection, which never waits for a
lock (busy timeout 0). Only when another process holds the write lock at that moment does it go to
a dedicated thread whose connection waits for the lock (up to `timeout`): the loop never blocks on
another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from shim.state.store import (
    Document,
    Lease,
    LeaseLost,
    Note,
    StateStore,
    StoreUnavailable,
    decode_document,
    encode_document,
    new_owner_token,
)

T = TypeVar("T")
_LOOP_ATTEMPTS = 8  # tries on the event loop's connection before the waiting thread takes over

# One row per key holds its document and its lease (either may be absent), so a transaction changes
# one b-tree page, not one per table (a reprotect's two transactions: 25 us of CPU instead of 34).
# WITHOUT ROWID: the row lives in its key's b-tree only. `token` stays after a lease expires, until
# another owner takes the key or the holder releases it: a late release must tell "expired, not taken
# since" from "taken by another" (see StateStore.release).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value TEXT, token TEXT, "
    "expires_at REAL NOT NULL DEFAULT 0, updated_at REAL NOT NULL DEFAULT 0) WITHOUT ROWID",
)
# A file made by an earlier version kept documents and leases in two tables: moved into `records`
# once, under the write lock, when the file is made ready.
_FROM_TWO_TABLES = (
    "INSERT INTO records (key, value, updated_at) SELECT key, value, updated_at FROM documents WHERE true "
    "ON CONFLICT (key) DO NOTHING",
    "INSERT INTO records (key, token, expires_at) SELECT key, token, expires_at FROM leases WHERE true "
    "ON CONFLICT (key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at",
    "DROP TABLE documents",
    "DROP TABLE leases",
)


class SqliteStore(StateStore):
    name = "sqlite"

    def __init__(self, path: Path, timeout: float = 2.0) -> None:
        self.path = path
        self._timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._waiting: sqlite3.Connection | None = None  # the thread's: waits for the lock
        self._loop_connection: sqlite3.Connection | None = None  # the event loop's: never waits

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shim-sqlite")
        # The file, WAL mode and the tables are made on the thread's connection, which waits for the
        # lock: the workers of `--workers N` all open the file at the same moment.
        await self._in_thread(self._waiting_connection)
        try:
            self._loop_connection = self._connect(busy_timeout=0.0, prepare=False)
        except (sqlite3.Error, OSError) as err:
            raise StoreUnavailable(f"{self.path}: {type(err).__name__}: {err}") from None

    async def close(self) -> None:
        if self._loop_connection is not None:
            self._loop_connection.close()
            self._loop_connection = None
        if self._executor is None:
            return
        try:
            await self._in_thread(self._disconnect)
        except StoreUnavailable:
            pass
        self._executor.shutdown(wait=False)
        self._executor = None

    def _connect(self, busy_timeout: float, prepare: bool = True) -> sqlite3.Connection:
        """A connection; with `prepare`, the file is also made ready (WAL, tables), which takes the
        write lock: only on a connection that waits for it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA synchronous=NORMAL")  # this connection's setting: no lock needed
            if prepare:
                connection.execute("PRAGMA journal_mode=WAL")  # the file's setting, kept in it
                _transaction(connection, _make_tables)
        except BaseException:
            connection.close()
            raise
        return connection

    def _disconnect(self) -> None:
        if self._waiting is not None:
            self._waiting.close()
            self._waiting = None

    async def _transact(self, body: Callable[[sqlite3.Connection], T], single: bool = False) -> T:
        """One transaction: on the loop's connection when the lock is free, else on the thread's.
        `single`: `body` runs one statement, a transaction by itself (no BEGIN and COMMIT around it)."""
        if self._executor is None:
            raise StoreUnavailable(f"{self.path}: the state store is not open")
        for _attempt in range(_LOOP_ATTEMPTS):
            try:
                if self._loop_connection is None:
                    self._loop_connection = self._connect(busy_timeout=0.0, prepare=False)
                return _transaction(self._loop_connection, body, single)
            except sqlite3.OperationalError as err:
                if not _busy(err):
                    raise StoreUnavailable(f"{self.path}: {type(err).__name__}: {err}") from None
            except (sqlite3.Error, OSError) as err:
                raise StoreUnavailable(f"{self.path}: {type(err).__name__}: {err}") from None
            # Another worker's transaction (tens of microseconds) holds the lock: let this loop's
            # other tasks run once, then try again, before paying for the thread (and SQLite's
            # busy handler, which sleeps a whole millisecond at least).
            await asyncio.sleep(0)
        return await self._in_thread(lambda: _transaction(self._waiting_connection(), body, single))

    def _waiting_connection(self) -> sqlite3.Connection:
        if self._waiting is None:
            deadline = time.monotonic() + self._timeout
            while True:
                try:
                    self._waiting = self._connect(busy_timeout=self._timeout)
                    break
                except sqlite3.OperationalError as err:
                    # Switching a new file to WAL while another worker does the same answers
                    # "locked" at once (SQLite's busy handler is not asked): try again shortly.
                    if not _busy(err) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
        return self._waiting

    async def _in_thread(self, operation: Callable[[], T]) -> T:
        """Run one operation on the store's thread; any failure or a slow file is StoreUnavailable."""
        if self._executor is None:
            raise StoreUnavailable(f"{self.path}: the state store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, operation), self._timeout * 2)
        except (sqlite3.Error, OSError, TimeoutError) as err:
            raise StoreUnavailable(f"{self.path}: {type(err).__name__}: {err}") from None

    async def acquire(self, key: str, ttl: float, note: Note | None = None) -> tuple[Lease, Document | None] | None:
        def body(db: sqlite3.Connection) -> tuple[Lease, Document | None] | None:
            now = time.time()
            lease = Lease(key, new_owner_token())
            # Taken when free, released or expired, in one statement that answers the document.
            taken = db.execute(_TAKE, (key, lease.token, now + ttl, now)).fetchone()
            if taken is None:
                return None
            document = decode_document(taken[0])
            noted = None if note is None else note(document, lease.token, now)
            if noted is not None:
                db.execute("UPDATE records SET value = ?, updated_at = ? WHERE key = ?",
                           (encode_document(noted), now, key))
            return lease, document

        return await self._transact(body)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        def body(db: sqlite3.Connection) -> bool:
            now = time.time()
            updated = db.execute("UPDATE records SET expires_at = ? WHERE key = ? AND token = ? AND expires_at > ?",
                                 (now + ttl, lease.key, lease.token, now))
            return updated.rowcount == 1

        return await self._transact(body, single=True)

    async def release(self, lease: Lease, document: Document | None = None) -> bool:
        if document is None:
            def give_up(db: sqlite3.Connection) -> bool:
                db.execute("UPDATE records SET token = NULL, expires_at = 0 WHERE key = ? AND token = ?",
                           (lease.key, lease.token))
                db.execute(_DROP_IF_EMPTY, (lease.key,))
                return True

            return await self._transact(give_up)

        def write_and_give_up(db: sqlite3.Connection) -> bool:
            # Written only while the key is still this lease's (held or expired, not taken since).
            released = db.execute("UPDATE records SET value = ?, updated_at = ?, token = NULL, expires_at = 0 "
                                  "WHERE key = ? AND token = ?",
                                  (encode_document(document), time.time(), lease.key, lease.token))
            return released.rowcount == 1

        return await self._transact(write_and_give_up, single=True)

    async def update(self, key: str, change: Callable[[Document | None], Document | None]) -> None:
        def body(db: sqlite3.Connection) -> None:
            _write(db, key, change(_read(db, key)))

        await self._transact(body)

    async def get(self, key: str) -> Document | None:
        return await self._transact(lambda db: _read(db, key), single=True)

    async def put(self, key: str, document: Document | None, *, fence: Lease | None = None) -> None:
        def body(db: sqlite3.Connection) -> None:
            if fence is not None:
                # Written only while the lease is held, in one statement (the lease's key is the key).
                now = time.time()
                held = db.execute("UPDATE records SET value = ?, updated_at = ? WHERE key = ? AND token = ? "
                                  "AND expires_at > ?", (None if document is None else encode_document(document),
                                                         now, key, fence.token, now))
                if held.rowcount != 1:
                    raise LeaseLost(fence.key)
                return
            _write(db, key, document)

        await self._transact(body, single=fence is not None or document is not None)

    async def ping(self) -> None:
        await self._transact(lambda db: db.execute("SELECT 1").fetchone(), single=True)


def _transaction(connection: sqlite3.Connection, body: Callable[[sqlite3.Connection], T], single: bool = False) -> T:
    """`body` as one transaction; `single`: its one statement is a transaction of its own already."""
    if single:
        return body(connection)
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = body(connection)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


def _busy(err: sqlite3.OperationalError) -> bool:
    """Another connection holds the write lock (SQLITE_BUSY / SQLITE_LOCKED)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) if code is not None else "locked" in str(err)


def _make_tables(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)
    old = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if {"documents", "leases"} <= old:
        for statement in _FROM_TWO_TABLES:
            db.execute(statement)


# ?1 key, ?2 token, ?3 expires_at, ?4 now: the lease when free (none, released or expired) -> (value,)
_TAKE = ("INSERT INTO records (key, token, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE "
         "SET token = excluded.token, expires_at = excluded.expires_at "
         "WHERE records.token IS NULL OR records.expires_at <= ?4 RETURNING value")
# A row with neither a document nor a lease (held or expired) is dropped.
_DROP_IF_EMPTY = "DELETE FROM records WHERE key = ? AND value IS NULL AND token IS NULL"


def _read(db: sqlite3.Connection, key: str) -> Document | None:
    row = db.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
    return None if row is None else decode_document(row[0])


def _write(db: sqlite3.Connection, key: str, document: Document | None) -> None:
    """Write (None: remove) the key's document; its lease, if any, stays."""
    if document is None:
        db.execute("UPDATE records SET value = NULL, updated_at = ? WHERE key = ?", (time.time(), key))
        db.execute(_DROP_IF_EMPTY, (key,))
    else:
        db.execute("INSERT INTO records (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                   "SET value = excluded.value, updated_at = excluded.updated_at",
                   (key, encode_document(document), time.time()))
