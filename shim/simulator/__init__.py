"""An SDRS v1 simulator (the subset the shim uses) for tests, `shim demo` and `shim simulate`.

sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.2, job_run_seconds=1.0))
sim.add_protection_group(project_id, group_id, status="failed-over", pair_count=2)
sim.set_pair_state(project_id, sim.pair_ids(project_id, group_id)[0], status="error")
app = sim.app()  # aiohttp.web.Application; sim.write_calls records what reached it
"""

from shim.simulator.faults import Fault
from shim.simulator.server import DEMO_GROUP_ID, DEMO_PROJECT_ID, SdrsSimulator, seed_demo_group, serve
from shim.simulator.settings import SimulatorSettings

__all__ = [
    "DEMO_GROUP_ID",
    "DEMO_PROJECT_ID",
    "Fault",
    "SdrsSimulator",
    "SimulatorSettings",
    "seed_demo_group",
    "serve",
]
