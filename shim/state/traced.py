"""A state store whose operations are spans (tracing on only: off, the store is used as it is)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from shim.state.store import Document, Lease, LeaseLost, Note, StateStore, StoreUnavailable
from shim.tracing import Tracing

T = TypeVar("T")


def traced_store(store: StateStore, tracing: Tracing) -> StateStore:
    """`store` itself with tracing off; with it on, the same store with a span per operation."""
    return TracedStore(store, tracing) if tracing.enabled else store


class TracedStore(StateStore):
    """Each operation made while a request is handled is a `store {operation}` span: backend,
    operation and key (ids only; documents and lease tokens are not attributes)."""

    def __init__(self, inner: StateStore, tracing: Tracing) -> None:
        self.inner = inner
        self.name = inner.name
        self._tracing = tracing

    async def _traced(self, operation: str, key: str | None, work: Callable[[], Awaitable[T]]) -> T:
        span = self._tracing.store_span(self.name, operation, key)
        try:
            result = await work()
        except StoreUnavailable:
            span.end(error="unavailable")
            raise
        except LeaseLost:
            span.end(error="lease_lost")
            raise
        except BaseException:
            span.end(error="cancelled")
            raise
        span.end()
        return result

    def now(self) -> float:
        return self.inner.now()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def acquire(self, key: str, ttl: float, note: Note | None = None) -> tuple[Lease, Document | None] | None:
        span = self._tracing.store_span(self.name, "acquire", key)
        try:
            acquired = await self.inner.acquire(key, ttl, note)
        except BaseException as err:
            span.end(error="unavailable" if isinstance(err, StoreUnavailable) else "cancelled")
            raise
        span.set("shim.store.acquired", acquired is not None)
        span.end()
        return acquired

    async def renew(self, lease: Lease, ttl: float) -> bool:
        return await self._traced("renew", lease.key, lambda: self.inner.renew(lease, ttl))

    async def release(self, lease: Lease, document: Document | None = None) -> bool:
        return await self._traced("release", lease.key, lambda: self.inner.release(lease, document))

    async def update(self, key: str, change: Callable[[Document | None], Document | None]) -> None:
        await self._traced("update", key, lambda: self.inner.update(key, change))

    async def get(self, key: str) -> Document | None:
        return await self._traced("get", key, lambda: self.inner.get(key))

    async def put(self, key: str, document: Document | None, *, fence: Lease | None = None) -> None:
        await self._traced("put", key, lambda: self.inner.put(key, document, fence=fence))

    async def ping(self) -> None:
        await self._traced("ping", None, self.inner.ping)
