"""`/migration` and `shim report` after SDRS finished the last action's job: without credentials they say
how old the state store's knowledge is (`recorded_at`); with a token they ask SDRS and show its answer.
Real shim, real simulator, real `shim report` process, over loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import yaml

from conftest import DEFAULT_MAPPING, GROUP, PROJECT, RCG, REPROTECT_BODY, action_url, call, write_mappings
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.runtime.server import start_site
from shim.simulator.faults import Fault
from shim.web.app import build_app

TOKEN = "report-token-0123456789abcdef"


def last_action(report: dict) -> dict:
    (group,) = [group for group in report["groups"] if group["rcg_id"] == RCG]
    return group["last_action"]


async def test_the_report_reads_the_last_actions_job_from_sdrs(tmp_path: Path, simulator):
    sim, sdrs = simulator
    write_mappings(tmp_path / "mappings", DEFAULT_MAPPING)
    data = {"upstreams": {"sdrs": sdrs}, "mappings": "./mappings",
            "state": {"backend": "sqlite", "path": "./state.sqlite3"}}
    (tmp_path / "shim.yaml").write_text(yaml.safe_dump(data))
    settings = settings_from_mapping(data, source="test", base_dir=tmp_path)
    runner, port = await start_site(build_app(settings, load_mappings(settings.mappings)), "127.0.0.1", 0,
                                    settings=settings)
    shim = f"http://127.0.0.1:{port}"
    try:
        reply = await call("POST", action_url(shim), body=REPROTECT_BODY,
                           headers={"X-Auth-Token": TOKEN, "Content-Type": "application/json"})
        assert reply.status == 200
        while sim.group(PROJECT, GROUP).status != "protected":  # SDRS finishes the job
            await asyncio.sleep(0.05)

        # The store alone still says running, and says since when it knows that.
        recorded = last_action((await call("GET", shim + "/migration")).json())
        assert recorded["outcome"] == "running" and recorded["sdrs"] is None
        assert recorded["recorded_at"] is not None and recorded["recorded_at"] >= recorded["started_at"]

        # With a token, SDRS's own answer.
        asked = last_action((await call("GET", shim + "/migration", headers={"X-Auth-Token": TOKEN})).json())
        assert asked["outcome"] == "succeeded"
        (job,) = asked["sdrs"]["jobs"]
        assert job["job_id"] == asked["job_ids"][0] and job["status"] == "SUCCESS"
        assert asked["sdrs"]["read_at"] >= asked["recorded_at"] and asked["sdrs"]["error"] is None

        # SDRS cannot be read: the record's outcome stays, and the report says why.
        sim.inject(Fault(method="GET", path_suffix=f"/jobs/{job['job_id']}", status=500,
                         body={"error": {"code": "SDRS.9999", "message": "down"}}, times=None))
        failed = last_action((await call("GET", shim + "/migration", headers={"X-Auth-Token": TOKEN})).json())
        sim.clear_faults()
        assert failed["outcome"] == "running" and failed["sdrs"]["jobs"] is None
        assert failed["sdrs"]["error"]

        # `shim report` does the same from the state file, with the token from --token-file.
        (tmp_path / "token").write_text(TOKEN + "\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shim", "report", "--config", str(tmp_path / "shim.yaml"),
            "--token-file", str(tmp_path / "token"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        (row,) = [line for line in out.decode().splitlines() if line.startswith(f"{PROJECT}  {RCG}")]
        assert f"reprotect succeeded (job {job['job_id']}) per SDRS at " in row
        assert TOKEN not in out.decode() + err.decode()

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shim", "report", "--config", str(tmp_path / "shim.yaml"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={name: value for name, value in os.environ.items() if name != "OS_TOKEN"})  # no token at all
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        (row,) = [line for line in out.decode().splitlines() if line.startswith(f"{PROJECT}  {RCG}")]
        assert f"reprotect running (job {job['job_id']}) as recorded {recorded['recorded_at']}" in row
    finally:
        await runner.cleanup()
