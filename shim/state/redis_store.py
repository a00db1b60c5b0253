"""The shared backend: Redis, for several shims (pods, machines) in front of the same groups.

Leases are Redis's own primitive: `SET lease NX PX ttl` with a random token as the fencing value;
release, renewal and fenced writes are Lua scripts that compare the token first (compare-and-delete,
compare-and-expire, compare-and-set), so two shims never both hold a group, and expiry is measured
by the Redis server's clock, not by the shims'.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

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
_UPDATE_ATTEMPTS = 16

# KEYS[1] lease, KEYS[2] document; ARGV[1] token, ARGV[2] ttl ms -> {acquired, document}
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2])}
end
return {0, false}
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


class RedisStore(StateStore):
    name = "redis"

    def __init__(self, url: str, key_prefix: str = "evs-sdrs-shim:", timeout: float = 2.0) -> None:
        self._url = url
        self._prefix = key_prefix
        self._timeout = timeout
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
            retry_on_timeout=False, decode_responses=True,
        )
        for name, source in (("acquire", _ACQUIRE), ("renew", _RENEW), ("release", _RELEASE),
                             ("fenced_put", _FENCED_PUT)):
            self._scripts[name] = self._client.register_script(source)
        await self.ping()

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
            return await asyncio.wait_for(operation, self._timeout * 2)
        except (RedisError, OSError, TimeoutError) as err:
            raise StoreUnavailable(f"redis: {type(err).__name__}: {err}") from None

    async def acquire(self, key: str, ttl: float, note: Note | None = None) -> tuple[Lease, Document | None] | None:
        self._connected()
        lease = Lease(key, new_owner_token())
        acquired, text = await self._call(self._scripts["acquire"](
            keys=[self._lease_key(key), self._document_key(key)], args=[lease.token, _millis(ttl)]))
        if not acquired:
            return None
        document = decode_document(text)
        noted = None if note is None else note(document, lease.token)
        if noted is not None:
            # A second round trip, fenced by the lease just taken (a script cannot run the note).
            try:
                await self.put(key, noted, fence=lease)
            except LeaseLost:
                return None  # expired already and taken by another owner: as if never acquired
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
        released = await self._call(self._scripts["release"](
            keys=[self._lease_key(lease.key), self._document_key(lease.key)],
            args=[lease.token, _encode(document)]))
        return bool(released)

    async def update(self, key: str, change: Callable[[Document | None], Document | None]) -> None:
        """Optimistic: WATCH the document, compute, write in MULTI/EXEC; again if it changed meanwhile."""
        client = self._connected()
        document_key = self._document_key(key)

        async def attempt() -> bool:
            async with client.pipeline(transaction=True) as pipe:
                await pipe.watch(document_key)
                changed = change(decode_document(await pipe.get(document_key)))
                pipe.multi()
                if changed is None:
                    pipe.delete(document_key)
                else:
                    pipe.set(document_key, _encode(changed))
                try:
                    await pipe.execute()
                except WatchError:
                    return False
                return True

        for _attempt in range(_UPDATE_ATTEMPTS):
            if await self._call(attempt()):
                return
        raise StoreUnavailable(f"redis: {key} changed under every one of {_UPDATE_ATTEMPTS} updates")

    async def get(self, key: str) -> Document | None:
        return decode_document(await self._call(self._connected().get(self._document_key(key))))

    async def put(self, key: str, document: Document | None, *, fence: Lease | None = None) -> None:
        if fence is not None:
            written = await self._call(self._scripts["fenced_put"](
                keys=[self._lease_key(fence.key), self._document_key(key)], args=[fence.token, _encode(document)]))
            if not written:
                raise LeaseLost(key)
            return
        client = self._connected()
        if document is None:
            await self._call(client.delete(self._document_key(key)))
        else:
            await self._call(client.set(self._document_key(key), _encode(document)))

    async def ping(self) -> None:
        await self._call(self._connected().ping())


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _encode(document: Document | None) -> str:
    """A script argument: '' stands for no document."""
    return "" if document is None else encode_document(document)
