"""The state store: small JSON documents by key, and leases, behind one interface.

Everything that must outlive a request (or the process) goes through a `StateStore`: the duplicate-
action guard's per-group records and leases, and later features' records. Three backends:
- `MemoryStore`: this process only (tests, the demo);
- `SqliteStore` (`shim.state.sqlite_store`): a file, shared by every worker of one `shim serve`,
  surviving SIGKILL and restarts (the default);
- `RedisStore` (`shim.state.redis_store`): shared by shims on several machines.

A lease is held by one owner until it is released or expires (`ttl`, wall-clock on the backend), so a
crashed holder cannot lock a key forever; its `token` is a fencing value: a write fenced by a lease is
refused (`LeaseLost`) once another owner holds the key, and a release writes nothing once another
owner took it. Any backend failure is `StoreUnavailable`.

One clock: every time the guard writes or compares (a POST leaving, a settle deadline, a job's start)
is the store's clock, `now()`, never each shim's own: shims whose clocks disagree (a skewed host, a
stepped clock) still agree on every deadline. Redis: the server's `TIME`, read inside the calls that
are made anyway (taking a lease, the health check) and carried forward on this process's monotonic
clock; SQLite and memory: the host's clock, which every process sharing them shares.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]
# Written with a new lease, in the same step: (the key's current document, the lease's token, the
# store's clock when the lease was taken) -> the document to write, or None to write nothing. It must
# not change the document it is given.
Note = Callable[[Document | None, str, float], Document | None]

# Documents as stored text, the same for every backend (one encoder: json.dumps with an option
# builds a new one per call).
encode_document = json.JSONEncoder(separators=(",", ":")).encode


def decode_document(text: str | bytes | None) -> Document | None:
    """A stored document; None for none (or an empty value)."""
    return None if not text else json.loads(text)


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time: fail closed."""


class NotDurable(StoreUnavailable):
    """A write was made but not acknowledged by the replicas the store must have (`WAIT`): a failover
    could lose it, so nothing may rely on it (fail closed)."""


class LeaseLost(Exception):
    """A fenced write found the lease gone (expired and taken by another owner)."""


@dataclass(frozen=True)
class Lease:
    key: str
    token: str  # unique per acquisition: the fencing value


def new_owner_token() -> str:
    """Who holds a lease, readable in the store: host, pid and a random part (unique, not secret:
    it fences, it does not authenticate)."""
    return f"{_owner}/{_tokens.getrandbits(64):016x}"


def _learn_owner() -> None:
    """This process's host/pid, and a random source of its own (after a fork, the child's)."""
    global _owner, _tokens
    _owner, _tokens = f"{socket.gethostname()}/{os.getpid()}", random.Random()  # seeded from os.urandom


_owner, _tokens = "", random.Random()
_learn_owner()
os.register_at_fork(after_in_child=_learn_owner)


class StateStore(ABC):
    """Documents by key, and one lease per key (fenced writes go to the lease's own key)."""

    name: str = "store"

    def now(self) -> float:
        """The store's clock (seconds since the epoch), without a round trip: the one clock every shim
        sharing the store measures the guard's times on. Here the host's."""
        return time.time()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; may raise StoreUnavailable (the shim still starts: actions fail closed)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""

    @abstractmethod
    async def acquire(self, key: str, ttl: float, note: Note | None = None) -> tuple[Lease, Document | None] | None:
        """The lease on `key` and its current document, or None while another owner holds it. With
        `note`, what it returns is written to the key under the new lease in the same step (one
        transaction where the backend has them)."""

    @abstractmethod
    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend a held lease; False when it was lost."""

    @abstractmethod
    async def release(self, lease: Lease, document: Document | None = None) -> bool:
        """Give the lease up, first writing `document` to its key when one is given. The write happens
        only while the key is still this lease's (held, or expired with no one else holding it since):
        False when another owner took it meanwhile, and then nothing is written, so a newer holder's
        record is never overwritten; the caller merges its facts in with `update`."""

    @abstractmethod
    async def update(self, key: str, change: Callable[[Document | None], Document | None]) -> None:
        """Read-modify-write one document atomically (no lease): `change` gets the current document
        and returns the new one (None deletes); it may be called more than once."""

    @abstractmethod
    async def get(self, key: str) -> Document | None: ...

    @abstractmethod
    async def put(self, key: str, document: Document | None, *, fence: Lease | None = None) -> None:
        """Write (None deletes). With `fence`, only while that lease is held: else LeaseLost."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""


class MemoryStore(StateStore):
    """One process's memory: for tests and the demo (never shared by workers or shims)."""

    name = "memory"

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # key -> (token, expires_at)

    def _held(self, lease: Lease) -> bool:
        current = self._leases.get(lease.key)
        return current is not None and current[0] == lease.token and current[1] > time.time()

    async def acquire(self, key: str, ttl: float, note: Note | None = None) -> tuple[Lease, Document | None] | None:
        now = time.time()
        current = self._leases.get(key)
        if current is not None and current[1] > now:
            return None
        lease = Lease(key, new_owner_token())
        self._leases[key] = (lease.token, now + ttl)
        document = _copy(self._documents.get(key))
        noted = None if note is None else note(document, lease.token, now)
        if noted is not None:
            self._documents[key] = _copy(noted) or {}
        return lease, document

    async def renew(self, lease: Lease, ttl: float) -> bool:
        if not self._held(lease):
            return False
        self._leases[lease.key] = (lease.token, time.time() + ttl)
        return True

    async def release(self, lease: Lease, document: Document | None = None) -> bool:
        if self._leases.get(lease.key, ("",))[0] != lease.token:
            return document is None
        if document is not None:
            self._documents[lease.key] = _copy(document) or {}
        del self._leases[lease.key]
        return True

    async def update(self, key: str, change: Callable[[Document | None], Document | None]) -> None:
        changed = change(_copy(self._documents.get(key)))
        if changed is None:
            self._documents.pop(key, None)
        else:
            self._documents[key] = _copy(changed) or {}

    async def get(self, key: str) -> Document | None:
        return _copy(self._documents.get(key))

    async def put(self, key: str, document: Document | None, *, fence: Lease | None = None) -> None:
        if fence is not None and not self._held(fence):
            raise LeaseLost(key)
        if document is None:
            self._documents.pop(key, None)
        else:
            self._documents[key] = _copy(document) or {}

    async def ping(self) -> None:
        return None


def _copy(document: Document | None) -> Document | None:
    """Documents are JSON: a deep copy keeps callers from changing what is stored."""
    return None if document is None else json.loads(json.dumps(document))
