"""A stateful stand-in for the legacy EVS v2 replication API (pairs and consistency groups), for tests
and `shim demo`: what the shim passes through for groups that have not moved to SDRS.

sim = LegacySimulator(LegacySimSettings(transition_seconds=0.05, copy_seconds=0.1))
group = sim.add_group(project_id, pair_count=2, replication_status="active")
app = sim.app()  # aiohttp.web.Application; sim.requests records what reached it
"""

from shim.legacy_sim.server import LegacySimulator, RecordedRequest
from shim.legacy_sim.settings import LegacySimSettings

__all__ = ["LegacySimSettings", "LegacySimulator", "RecordedRequest"]
