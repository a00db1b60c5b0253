"""`shim config-schema` (the config's JSON Schema), `shim legacy-sim` (the legacy stand-in alone, over a
real socket), and the README's Commands table naming every command and flag the parser has."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import call
from shim.cli import build_parser
from shim.runtime.legacy_stub import DEMO_GROUP, DEMO_PROJECT

ROOT = Path(__file__).resolve().parent.parent


def schema() -> dict:
    result = subprocess.run([sys.executable, "-m", "shim", "config-schema"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_schema_accepts_the_example_configs_and_refuses_bad_ones():
    document = schema()
    jsonschema.Draft202012Validator.check_schema(document)
    validator = jsonschema.Draft202012Validator(document)

    examples = [yaml.safe_load((ROOT / "examples/shim.yaml").read_text()),
                yaml.safe_load((ROOT / "examples/container/shim.yaml").read_text())]
    for example in sorted((ROOT / "examples/kubernetes").glob("*.yaml")):
        (config_map,) = [doc for doc in yaml.safe_load_all(example.read_text()) if doc["kind"] == "ConfigMap"]
        examples.append(yaml.safe_load(config_map["data"]["shim.yaml"]))
    for config in examples:
        validator.validate(config)

    assert set(document["properties"]) >= {"listen", "management", "upstreams", "state", "limits"}
    assert document["required"] == ["upstreams"]
    bad = [{"listen": {"port": 8080}},  # upstreams missing
           {"upstreams": {"sdrs": "http://sdrs"}, "listen": {"port": 70000}},
           {"upstreams": {"sdrs": "http://sdrs"}, "lisen": {"port": 8080}},  # a misspelt key
           {"upstreams": {"sdrs": "http://sdrs"}, "management": {"host": "0.0.0.0"}},  # its port is required
           {"upstreams": {"sdrs": "http://sdrs"}, "state": {"backend": "etcd"}}]
    for config in bad:
        assert not validator.is_valid(config), config


async def test_legacy_sim_runs_the_stand_in_alone():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", "legacy-sim", "--port", "0", "--seed-demo", "--transition-seconds", "0.01",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        found = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        base = found[1].decode()
        url = f"{base}/v2/{DEMO_PROJECT}/os-vendor-replication-consistency-groups/{DEMO_GROUP['id']}"

        assert (await call("GET", url)).status == 401  # a token is required, as the legacy endpoint's
        reply = await call("GET", url, headers={"X-Auth-Token": "any"})
        assert reply.status == 200
        assert reply.json()["replication_consistency_group"]["name"] == DEMO_GROUP["name"]
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 15)


def test_legacy_sim_refuses_a_non_loopback_address():
    result = subprocess.run([sys.executable, "-m", "shim", "legacy-sim", "--host", "0.0.0.0"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "only listens on loopback" in result.stderr


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_the_readme_commands_table_lists_every_command_and_flag(command):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Commands\n"):readme.index("\n## Operations\n")]
    rows = [line for line in section.splitlines() if line.startswith(f"| `shim {command} ") or
            line.startswith(f"| `shim {command}`")]
    assert len(rows) == 1, f"no row for shim {command}"
    for action in subcommands()[command]._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert re.search(re.escape(flag) + r"\b", rows[0]), f"shim {command}: {flag} missing"
        if not action.option_strings:
            assert action.metavar in rows[0], f"shim {command}: {action.metavar} missing"
