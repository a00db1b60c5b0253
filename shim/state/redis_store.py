"""The shared backend: Redis, for several shims (pods, machines) in front of the same groups.

Leases are Redis's own primitive: `SET lease NX PX ttl` with a random token as the fencing value;
release, renewal and fenced writes are Lua scripts that compare the token first (compare-and-delete,
compare-and-expire, compare-and-set), so two shims never both hold a group, and expiry is measured
by the Redis server's clock, not by the shims'. So is every other time the guard keeps: the server's
`TIME`, read in the lease script and the health check (no round trip of its own), is this process's
`now()` until the next reading, carried forward on its monotonic clock.

Replicas and Sentinel (`state.sentinels`): the client asks the Sentinels for the primary and follows a
failover (a connection to a demoted primary is dropped and the primary asked again). Replication is
asynchronous, so a write the primary answered may be lost in a failover: with `min_replicas`, each
write is followed on its own connection by `WAIT min_replicas timeout`, and one that not enough
replicas acknowledged in time is `NotDurable`, so the guard sends nothing on it (a legacy 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from shim.state.store import (
    Document,
    Lease,
    LeaseLost,
    NotDurable,
    Note,
    StateStore,
    StoreUnavailable,
    decode_document,
    encode_document,
    new_owner_token,
)

T = TypeVar("T")
_UPDATE_ATTEMPTS = 16

# KEYS[1] lease, KEYS[2] document; ARGV[1] token, ARGV[2] ttl ms -> {acquired, document, seconds, microseconds}
# (the server's clock: every time the guard keeps is measured on it)
_ACQUIRE = """
local now = redis.call('TIME')
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2]), now[1], now[2]}
end
return {0, false, now[1], now[2]}
"""
# KEYS[1] lease; ARGV[1] token, ARGV[2] ttl ms -> 1 renewed, 0 lost
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] lease, KEYS[2] document; ARGV[1] token, ARGV[2] document or '' -> 1 released, 0 taken by another
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if ARGV[2] == '' then return 1 end
  return 0
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('DEL', KEYS[1])
return 1
"""
# KEYS[1] lease, KEYS[2] document; ARGV[1] token, ARGV[2] document or '' (delete) -> 1 written, 0 lease lost
_FENCED_PUT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""
# KEYS[1] document; ARGV[1] the document as read ('' none), ARGV[2] the new one ('' delete) -> 1 written,
# 0 changed meanwhile (an optimistic update on one connection, so WAIT can follow it)
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"""


class RedisStore(StateStore):
    name = "redis"

    def __init__(
        self, url: str | None, key_prefix: str = "evs-sdrs-shim:", timeout: float = 2.0, *,
        sentinels: Sequence[tuple[str, int]] = (), master: str = "mymaster", min_replicas: int = 0,
        replica_ack_timeout: float = 0.5,
    ) -> None:
        self._url = url
        self._prefix = key_prefix
        self._timeout = timeout
        self._sentinels = tuple(sentinels)
        self._master = master
        self._min_replicas = min_replicas
        self._ack_millis = _millis(replica_ack_timeout)
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        # The server's clock as last read, and this process's monotonic clock at that moment.
        self._clock: tuple[float, float] | None = None

    async def open(self) -> None:
        # A WAIT blocks its connection for up to the acknowledgement's timeout: a read may take that longer.
        read_timeout = self._timeout + (self._ack_millis / 1000 if self._min_replicas else 0)
        options: dict[str, Any] = {"socket_timeout": read_timeout, "socket_connect_timeout": self._timeout,
                                   "retry_on_timeout": False, "decode_responses": True}
        if self._sentinels:
            # The url, when given, names the database and the credentials; the Sentinels name the host.
            address = parse_url(self._url) if self._url else {}
            options.update({name: address[name] for name in ("db", "username", "password") if name in address})
            sentinel = Sentinel(self._sentinels, sentinel_kwargs={
                "socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}, **options)
            self._client = sentinel.master_for(self._master, **options)
        else:
            assert self._url is not None
            self._client = aioredis.Redis.from_url(self._url, **options)
        for name, source in (("acquire", _ACQUIRE), ("renew", _RENEW), ("release", _RELEASE),
                             ("fenced_put", _FENCED_PUT), ("compare_and_set", _COMPARE_AND_SET)):
            self._scripts[name] = self._client.register_script(source)
        await self.ping()

    def now(self) -> float:
        if self._clock is None:
            return time.time()  # not read yet (no lease was taken on it)
        server, at = self._clock
        return server + (time.monotonic() - at)

    def _read_clock(self, seconds: Any, microseconds: Any) -> float:
        """The server's `TIME` answer: this process's clock until the next one."""
        now = int(seconds) + int(microseconds) / 1_000_000
        self._clock = (now, time.monotonic())
        return now

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _lease_key(self, key: str) -> str:
        return f"{self._prefix}lease:{key}"

    def _document_key(self, key: str) -> str:
        return f"{self._prefix}doc:{key}"

    def _connected(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreUnavailable("redis: the state store is not open")
        return self._client

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(operation, self._timeout * 2 + self._ack_millis / 1000)
        except (RedisError, OSError, TimeoutError) as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}: {err}") from None

    async def _written(self, queue: Callable[[Pipeline], Awaitable[object]]) -> list[Any]:
        """Commands on one connection (a pipeline, no transaction), then, with `min_replicas`, `WAIT`
        on that connection: their answers once enough replicas acknowledged them, else NotDurable."""
        async def run() -> list[Any]:
            async with self._connected().pipeline(transaction=False) as pipe:
                await queue(pipe)  # queued (a script's call is a coroutine even then)
                if self._min_replicas:
                    pipe.wait(self._min_replicas, self._ack_millis)
                return list(await pipe.execute())

        answers = await self._call(run())
        if not self._min_replicas:
            return answers
        acknowledged = int(answers.pop())
        if acknowledged < self._min_replicas:
            raise NotDurable(f"redis: {acknowledged} of {self._min_replicas} replicas acknowledged a write within "
                             f"{self._ack_millis} ms")
        return answers

    async def acquire(self, key: str, ttl: float, note: Note | None = None) -> tuple[Lease, Document | None] | None:
        self._connected()
        lease = Lease(key, new_owner_token())
        acquired, text, seconds, microseconds = await self._call(self._scripts["acquire"](
            keys=[self._lease_key(key), self._document_key(key)], args=[lease.token, _millis(ttl)]))
        now = self._read_clock(seconds, microseconds)
        if not acquired:
            return None
        document = decode_document(text)
        noted = None if note is None else note(document, lease.token, now)
        if noted is not None:
            # A second round trip, fenced by the lease just taken (a script cannot run the note); with
            # `min_replicas`, acknowledged by the replicas (the lease too: it was written before).
            try:
                await self.put(key, noted, fence=lease)
            except LeaseLost:
                return None  # expired already and taken by another owner: as if never acquired
            except NotDurable:
                # The note is on the primary only: put back what was there and give the lease up, so the
                # group need not wait (best effort: the primary has them whatever the replicas say).
                with contextlib.suppress(StoreUnavailable):
                    await self.release(lease, document if document is not None else {})
                raise
            except StoreUnavailable:
                with contextlib.suppress(StoreUnavailable):
                    await self.release(lease)  # nothing was noted: the group need not wait for the expiry
                raise
        return lease, document

    async def renew(self, lease: Lease, ttl: float) -> bool:
        renewed = await self._call(self._scripts["renew"](
            keys=[self._lease_key(lease.key)], args=[lease.token, _millis(ttl)]))
        return bool(renewed)

    async def release(self, lease: Lease, document: Document | None = None) -> bool:
        # A lease key expires in Redis itself: an expired lease is "not this lease's" here, and the
        # caller's merge (`update`) finds its own last fenced write and keeps its facts.
        (released,) = await self._written(lambda pipe: self._scripts["release"](
            keys=[self._lease_key(lease.key), self._document_key(lease.key)],
            args=[lease.token, _encode(document)], client=pipe))
        return bool(released)

    async def update(self, key: str, change: Callable[[Document | None], Document | None]) -> None:
        """Optimistic: read the document, compute, write it only if it is still what was read (a
        compare-and-set script, which WAIT can follow on its connection); again if it changed meanwhile."""
        client = self._connected()
        document_key = self._document_key(key)
        for _attempt in range(_UPDATE_ATTEMPTS):
            text = await self._call(client.get(document_key))
            changed = change(decode_document(text))
            args = [text or "", _encode(changed)]

            def queue(pipe: Pipeline, args: list[Any] = args) -> Awaitable[object]:
                return self._scripts["compare_and_set"](keys=[document_key], args=args, client=pipe)

            (written,) = await self._written(queue)
            if written:
                return
        raise StoreUnavailable(f"redis: {key} changed under every one of {_UPDATE_ATTEMPTS} updates")

    async def get(self, key: str) -> Document | None:
        return decode_document(await self._call(self._connected().get(self._document_key(key))))

    async def put(self, key: str, document: Document | None, *, fence: Lease | None = None) -> None:
        if fence is not None:
            (written,) = await self._written(lambda pipe: self._scripts["fenced_put"](
                keys=[self._lease_key(fence.key), self._document_key(key)], args=[fence.token, _encode(document)],
                client=pipe))
            if not written:
                raise LeaseLost(key)
            return
        if document is None:
            await self._written(lambda pipe: pipe.delete(self._document_key(key)))
        else:
            await self._written(lambda pipe: pipe.set(self._document_key(key), _encode(document)))

    async def ping(self) -> None:
        """`TIME`: the server answers, and this process learns its clock (the health check's period)."""
        seconds, microseconds = await self._call(self._connected().time())
        self._read_clock(seconds, microseconds)


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _encode(document: Document | None) -> str:
    """A script argument: '' stands for no document."""
    return "" if document is None else encode_document(document)
