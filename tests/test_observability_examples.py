"""examples/observability/: the Prometheus alert rules pass `promtool check rules` and their unit tests,
every expression there and in the Grafana dashboard names only metrics the shim exports, and a real
Prometheus (Debian's `prometheus`; `.ci/run` installs it when missing) scrapes a shim's management
listener and evaluates every rule without error."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from conftest import DEFAULT_MAPPING, call, write_mappings
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.runtime.server import start_management, start_site
from shim.web.app import build_app

ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITY = ROOT / "examples" / "observability"
RULES = OBSERVABILITY / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run .ci/run, which installs it (apt-get install prometheus)"
    return binary


def test_the_alert_rules_pass_promtool_check():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_fire_as_their_unit_tests_say():
    result = subprocess.run([promtool(), "test", "rules", "alerts.test.yaml"], capture_output=True, text=True,
                            timeout=60, cwd=OBSERVABILITY)
    assert result.returncode == 0, result.stdout + result.stderr


def rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    expressions = list(walk(dashboard["panels"]))
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and "label_values(" in query.get("query", ""):
            expressions.append(re.sub(r"label_values\((\w+),.*\)", r"\1", query["query"]))
    return expressions


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords, label
    names (inside {...}, by (...), on (...)), durations, strings or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # strings
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call_paren = match[1], match[2]
        if call_paren or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def test_the_name_extraction_sees_what_an_expression_reads():
    assert metric_names('sum by (le, route) (rate(shim_x_bucket{a="b", c=~"$d"}[5m])) > 0.1 unless on (i) '
                        'shim_y == 1') == {"shim_x_bucket", "shim_y"}
    assert metric_names("time() - shim_z > 120") == {"shim_z"}


def exported_names(exposition: str) -> set[str]:
    """Every sample name the exposition can hold, from its TYPE lines (a labelled metric with no
    series yet is declared all the same)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
    return names


async def get_json(url: str) -> Any:
    """Prometheus's API answer (gzip-encoded: this session decodes it, unlike a legacy client's)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def shim_with_management(tmp_path: Path, simulator) -> AsyncIterator[tuple[str, str]]:
    """A shim with its management listener, as `shim serve` runs both: -> (client URL, management URL)."""
    _, sdrs = simulator
    mappings_dir = write_mappings(tmp_path / "mappings", DEFAULT_MAPPING)
    data = {"upstreams": {"sdrs": sdrs}, "mappings": str(mappings_dir), "management": {"port": free_port()},
            "state": {"backend": "sqlite", "path": str(tmp_path / "state.sqlite3")}}
    settings = settings_from_mapping(data, source="test", base_dir=tmp_path)
    app = build_app(settings, load_mappings(settings.mappings))
    runner, port = await start_site(app, "127.0.0.1", 0, settings=settings)
    management = await start_management(app, settings)
    assert management is not None
    yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{settings.management.port}"
    await runner.cleanup()
    await management.cleanup()


async def test_every_expression_names_a_metric_the_shim_exports(shim_with_management):
    _, management = shim_with_management
    exported = exported_names((await call("GET", management + "/metrics")).body.decode())
    assert {"shim_requests_total", "shim_build_info", "process_cpu_seconds_total"} <= exported

    expressions = rule_expressions() + dashboard_expressions()
    assert len(rule_expressions()) >= 10 and len(dashboard_expressions()) >= 25
    for expression in expressions:
        names = metric_names(expression)
        assert names, expression
        assert names <= exported, (expression, names - exported)
    read = set().union(*(metric_names(expression) for expression in expressions))
    for name in ("shim_state_store_up", "shim_upstream_up", "shim_actions_refused_total",
                 "shim_shadow_comparisons_total"):
        assert name in read, name


async def test_a_real_prometheus_scrapes_the_management_port_and_evaluates_every_rule(
    tmp_path: Path, shim_with_management
):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run .ci/run, which installs it (apt-get install prometheus)"
    _, management = shim_with_management
    target = management.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "evs-sdrs-shim", "static_configs": [{"targets": [target]}]}],
    }))
    web_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{web_port}", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    api = f"http://127.0.0.1:{web_port}/api/v1"
    try:
        build = rules = None
        for _ in range(600):  # up to a minute on a loaded machine
            await asyncio.sleep(0.1)
            try:
                build = await get_json(api + "/query?query=shim_build_info")
                rules = await get_json(api + "/rules")
            except (aiohttp.ClientError, ValueError):
                continue
            evaluated = [rule for group in rules["data"]["groups"] for rule in group["rules"]
                         if not rule.get("lastEvaluation", "0001").startswith("0001")]  # 0001-...: not yet
            if build["data"]["result"] and len(evaluated) == len(rule_expressions()):
                break
        assert build is not None and rules is not None, "prometheus did not answer"
        (series,) = build["data"]["result"]
        assert series["metric"]["job"] == "evs-sdrs-shim" and series["metric"]["instance"] == target
        assert series["metric"]["version"]
        all_rules = [rule for group in rules["data"]["groups"] for rule in group["rules"]]
        assert len(all_rules) == len(rule_expressions())
        for rule in all_rules:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        store = (await get_json(api + "/query?query=shim_state_store_up"))["data"]["result"]
        assert store and store[0]["value"][1] == "1"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def test_the_dashboard_is_importable_json_with_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "evs-sdrs-shim"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


