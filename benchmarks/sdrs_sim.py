"""The SDRS simulator for the reprotect rows: instant jobs, and groups that fail over again by themselves.

A translated reprotect is stateful: SDRS re-protects a `failed-over` group once, after which the
group is `protected` and a second reprotect is (rightly) refused with 400. To measure a throughput
of genuine 200s, this benchmark-only subclass of `shim.simulator.SdrsSimulator`:

- runs jobs instantly (`job_init_seconds=0`, `job_run_seconds=0`): a re-protect job is SUCCESS as
  soon as it is accepted, so the shim's next pending-job check finds it finished;
- puts a group whose re-protect has succeeded straight back to `failed-over` (as if a failover had
  happened in between), so every reprotect of it is valid again;
- keeps only each group's last KEPT_JOBS jobs (the shim reads the latest; the test simulator keeps
  them all, which makes every read O(jobs) and grows without bound). More than one: a shim asks for
  the job *it* started last, and with several shims on one simulator that may not be the latest;
  a job the simulator has forgotten reads as 404 SDRS.0408, which the shim maps to a 500;
- records no request log (the test simulator keeps every request's headers for assertions).

Everything else (routing, auth, status gate, job shapes, the JSON it renders) is the test simulator's.

    python benchmarks/sdrs_sim.py --project P --groups-file FILE [--port 0]

FILE holds one protection group id a line; each is seeded `failed-over` with one replication pair.
Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from serving import run, serve_until_signalled  # noqa: E402

from shim.simulator import SdrsSimulator, SimulatorSettings  # noqa: E402
from shim.simulator.server import Handler  # noqa: E402
from shim.simulator.state import ProtectionGroup, SdrsState  # noqa: E402

KEPT_JOBS = 8


class RefailingState(SdrsState):
    """SdrsState whose groups go back to `failed-over` once a job on them has ended."""

    def _refresh(self, group: ProtectionGroup) -> None:
        super()._refresh(group)
        if group.jobs and all(job.applied for job in group.jobs):
            for job in group.jobs[:-KEPT_JOBS]:
                self.jobs.pop(job.job_id, None)
            del group.jobs[:-KEPT_JOBS]
            if group.settled_status != "failed-over":
                group.settled_status = group.status = "failed-over"
                for pair in group.pairs:
                    pair.status = "failed-over"
                    pair.replication_status = "active-stopped"


class BenchSimulator(SdrsSimulator):
    def __init__(self) -> None:
        super().__init__(SimulatorSettings(job_init_seconds=0, job_run_seconds=0))
        self.state = RefailingState(self.settings, self.now, self.state._new_job_id)

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)


async def main(host: str, port: int, project: str, group_ids: list[str]) -> None:
    sim = BenchSimulator()
    for group_id in group_ids:
        sim.add_protection_group(project, group_id, status="failed-over", priority_station="target")
    await serve_until_signalled(web.AppRunner(sim.app(), access_log=None, shutdown_timeout=1.0), host, port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--project", required=True)
    parser.add_argument("--groups-file", type=Path, required=True)
    args = parser.parse_args()
    groups = [line.strip() for line in args.groups_file.read_text().splitlines() if line.strip()]
    run(main(args.host, args.port, args.project, groups))
