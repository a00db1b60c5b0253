"""Build the configured state store (`state.backend`)."""

from __future__ import annotations

from shim.config import State
from shim.state.store import MemoryStore, StateStore


def build_store(settings: State) -> StateStore:
    if settings.backend == "memory":
        return MemoryStore()
    if settings.backend == "redis":
        from shim.state.redis_store import RedisStore  # imported only when used

        # The config validator guarantees a url or sentinels.
        return RedisStore(settings.url, settings.key_prefix, settings.timeout_seconds,
                          sentinels=settings.sentinel_addresses(), master=settings.sentinel_master,
                          min_replicas=settings.replicas_to_wait_for,
                          replica_ack_timeout=settings.replica_ack_timeout_seconds)
    from shim.state.sqlite_store import SqliteStore

    return SqliteStore(settings.path, settings.timeout_seconds)
