"""The legacy EVS v2 endpoint of `shim demo`: the stateful stand-in (shim/legacy_sim) with fixed data.

Project DEMO_PROJECT holds two replication consistency groups, each with one pair: a stale copy of
the demo's migrated group (the shim answers for it from SDRS), and one that has not moved to SDRS
(the shim passes its calls through). Both can be driven through every legacy call.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shim.legacy_sim import LegacySimSettings, LegacySimulator
from shim.legacy_sim.server import seed

DEMO_PROJECT = "0970dd7a1300f5672ff2c003c60ae115"
# The group the shipped mappings/consistency-groups.yaml maps, so the demo's curl lines line up.
DEMO_GROUP: dict[str, Any] = {
    "id": "bd35d31b-7ab9-47fc-84c6-3d326c6fa6cb",
    "name": "demo-rcg",
    "description": "legacy EVS stand-in group (demo)",
    "status": "available",
    "priority_station": "eu-de-01",
    "replication_model": "hypermetro",
    "replication_status": "active",
    "replication_ids": ["3f0b5a2e-6c1d-4e8a-9b7f-2d4c6e8a0b1c"],
    "created_at": "2017-09-28T05:08:32.839953",
    "updated_at": None,
    "failure_detail": None,
    "fault_level": "0",  # a string in the legacy API: a number breaks the Go client
}
# A group that has not moved to SDRS: the shim lists it beside the migrated one.
UNMIGRATED_GROUP: dict[str, Any] = {
    **DEMO_GROUP,
    "id": "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    "name": "legacy-rcg",
    "description": "a group still served by the legacy endpoint (demo)",
    "replication_ids": ["6e7f8091-2b3c-4d5e-9f0a-1b2c3d4e5f60"],
    "created_at": "2017-08-01T10:00:00.000000",
}


def legacy_stub(settings: LegacySimSettings | None = None) -> LegacySimulator:
    """A fresh stand-in holding the two demo groups and their pairs."""
    sim = LegacySimulator(settings)
    seed(sim, DEMO_PROJECT, [DEMO_GROUP, UNMIGRATED_GROUP])
    return sim


def legacy_stub_app() -> web.Application:
    """The demo's stand-in as an aiohttp Application."""
    return legacy_stub().app()


async def serve(host: str, port: int, settings: LegacySimSettings, seed_demo: bool) -> None:
    """`shim legacy-sim`: the stand-in on host:port (loopback only: it accepts any token) until
    cancelled; with `seed_demo`, the demo's two groups."""
    import logging

    from shim.simulator.server import is_loopback, serve_until_cancelled

    if not is_loopback(host):
        raise ValueError(f"the legacy EVS stand-in only listens on loopback addresses, not {host!r}")
    sim = legacy_stub(settings) if seed_demo else LegacySimulator(settings)
    await serve_until_cancelled(sim.app(), host, port, logging.getLogger("shim.legacy_sim"), "legacy EVS stand-in")
