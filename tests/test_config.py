"""Configuration and mapping files: validated at load, one clear line naming file, key and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import GROUP, PROJECT, RCG, write_mappings
from shim.config import load_settings
from shim.mappings import load_mappings
from shim.validation import ConfigError


def write_config(tmp_path: Path, data: object, mapping: list[dict[str, str]] | None = None) -> Path:
    write_mappings(tmp_path / "mappings", mapping if mapping is not None else [
        {"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP}])
    path = tmp_path / "shim.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def run_shim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "shim", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


GOOD = {"listen": {"host": "127.0.0.1", "port": 8080},
        "upstreams": {"legacy": "http://127.0.0.1:8776", "sdrs": "http://127.0.0.1:8777"},
        "mappings": "./mappings"}


def test_the_documented_example_config_validates(tmp_path):
    path = write_config(tmp_path, GOOD)
    result = run_shim("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "1 mapped consistency groups" in result.stdout


def test_a_spool_directory_that_cannot_hold_files_stops_the_shim_at_start(tmp_path):
    path = write_config(tmp_path, {**GOOD, "passthrough": {"spool_directory": str(tmp_path / "missing")}})
    for command in ("validate", "serve"):
        result = run_shim(command, "--config", str(path))
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert f"passthrough.spool_directory: {tmp_path / 'missing'} cannot hold temporary files" in line


def test_relative_mappings_path_is_relative_to_the_config_file(tmp_path):
    settings = load_settings(write_config(tmp_path, GOOD))
    assert settings.mappings == (tmp_path / "mappings").resolve()


@pytest.mark.parametrize(("data", "says"), [
    ({"upstreams": {"legacy": "http://127.0.0.1:8776"}}, "upstreams.sdrs: required key is missing"),
    ({"upstreams": {"sdrs": "ftp://127.0.0.1"}}, "upstreams.sdrs: Value error, must be an http"),
    ({"upstreams": {"sdrs": "http://127.0.0.1:8777/v1/x"}},
     "upstreams.sdrs: Value error, must be scheme://host[:port] only"),
    ({**GOOD, "listen": {"port": 70000}}, "listen.port: Input should be less than or equal to 65535"),
    ({**GOOD, "listen": {"prot": 1}}, "listen.prot: unknown key"),
    ({**GOOD, "upstream": {}}, "upstream: unknown key"),
    ({**GOOD, "timeouts": {"sdrs": {"read": -1}}}, "timeouts.sdrs.read: Input should be greater than 0"),
    ("listen: [1, 2", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_bad_config_exits_non_zero_with_one_line_naming_the_key(tmp_path, data, says):
    path = write_config(tmp_path, data)
    for command in ("validate", "serve"):
        result = run_shim(command, "--config", str(path))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0]
        assert says in lines[0]
        assert "Traceback" not in result.stderr


def test_missing_config_file_is_one_line(tmp_path):
    result = run_shim("validate", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = write_config(tmp_path, GOOD)
    monkeypatch.setenv("SHIM_UPSTREAMS__SDRS", "http://127.0.0.2:9000")
    monkeypatch.setenv("SHIM_LISTEN__PORT", "9090")
    monkeypatch.setenv("SHIM_LIMITS__ACTION_BODY_BYTES", "100")
    settings = load_settings(path)
    assert settings.upstreams.sdrs == "http://127.0.0.2:9000"
    assert settings.upstreams.legacy == "http://127.0.0.1:8776"  # untouched keys keep the file's value
    assert settings.listen.port == 9090 and settings.listen.host == "127.0.0.1"
    assert settings.limits.action_body_bytes == 100


def test_bad_environment_value_names_the_key(tmp_path):
    path = write_config(tmp_path, GOOD)
    result = run_shim("validate", "--config", str(path), env={"SHIM_LISTEN__PORT": "eighty"})
    assert result.returncode == 2
    assert "listen.port" in result.stderr


@pytest.mark.parametrize(("env", "says"), [
    ({"SHIM_LISTEN__PORT": "eighty"}, "environment variable SHIM_LISTEN__PORT: listen.port: Input should be a valid"),
    ({"SHIM_LIMITS__MAX_HEADRES": "64"}, "environment variable SHIM_LIMITS__MAX_HEADRES: limits.max_headres: unknown"),
    ({"SHIM_LIMITS": "{not json"}, "environment variable SHIM_LIMITS: not a valid JSON object"),
])
def test_a_bad_environment_variable_is_blamed_not_the_file(tmp_path, env, says):
    path = write_config(tmp_path, GOOD)
    for command in ("validate", "serve"):
        result = run_shim(command, "--config", str(path), env=env)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("shim: config error: " + says), line
        assert str(path) not in line  # the file is fine


def test_problems_in_the_file_and_the_environment_are_each_named(tmp_path):
    path = write_config(tmp_path, {**GOOD, "listen": {"port": 70000}})
    result = run_shim("validate", "--config", str(path), env={"SHIM_LIMITS__MAX_HEADERS": "many"})
    (line,) = result.stderr.strip().splitlines()
    assert f"{path}: listen.port: Input should be less than or equal to 65535" in line
    assert "environment variable SHIM_LIMITS__MAX_HEADERS: limits.max_headers: Input should be a valid integer" in line


@pytest.mark.parametrize(("file_name", "text", "says"), [
    ("shim.yaml", "listen: {port: 8080}\nupstreams: {sdrs: 'http://127.0.0.1:8777'}\nmappings: ./mappings\n"
     "listen: {port: 9090}\n", "duplicate key 'listen' (first given at line 1) at line 4"),
    ("shim.yaml", "upstreams: {sdrs: 'http://127.0.0.1:8777', sdrs: 'http://127.0.0.1:9'}\nmappings: ./mappings\n",
     "duplicate key 'sdrs' (first given at line 1) at line 1"),
    ("mappings/consistency-groups.yaml", f"consistency_groups:\n  - project_id: {PROJECT}\n"
     f"    replication_consistency_group_id: {RCG}\n    protection_group_id: {GROUP}\n"
     f"    protection_group_id: 11111111-2222-3333-4444-555555555555\n",
     "duplicate key 'protection_group_id' (first given at line 4) at line 5"),
])
def test_a_yaml_key_given_twice_is_refused_with_file_and_line(tmp_path, file_name, text, says):
    path = write_config(tmp_path, GOOD)
    (tmp_path / file_name).write_text(text)
    result = run_shim("validate", "--config", str(path))
    assert result.returncode == 2, result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert str(tmp_path / file_name) in line and says in line, line


ENTRY = {"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP}


@pytest.mark.parametrize(("entries", "says"), [
    ([ENTRY, {**ENTRY, "protection_group_id": "11111111-2222-3333-4444-555555555555"}],
     f"consistency_groups[1].replication_consistency_group_id: {RCG} is already mapped by consistency_groups[0]"),
    ([ENTRY, {**ENTRY, "replication_consistency_group_id": RCG.upper()}],
     "consistency_groups[1].replication_consistency_group_id"),
    ([ENTRY, {**ENTRY, "replication_consistency_group_id": RCG.replace("-", "")}],
     "consistency_groups[1].replication_consistency_group_id"),
    ([ENTRY, {**ENTRY, "replication_consistency_group_id": "11111111-2222-3333-4444-555555555555"}],
     "consistency_groups[1].protection_group_id"),
    ([{**ENTRY, "protection_group_id": "../../etc"}],
     "consistency_groups[0].protection_group_id: Value error, must be a UUID"),
    ([{**ENTRY, "project_id": "tenant-1"}], "consistency_groups[0].project_id"),
    ([{k: v for k, v in ENTRY.items() if k != "protection_group_id"}],
     "consistency_groups[0].protection_group_id: required key is missing"),
    ([{**ENTRY, "rcg": "x"}], "consistency_groups[0].rcg: unknown key"),
])
def test_bad_mapping_is_refused_naming_file_entry_and_field(tmp_path, entries, says):
    directory = write_mappings(tmp_path / "m", entries)
    with pytest.raises(ConfigError) as caught:
        load_mappings(directory)
    message = str(caught.value)
    assert message.startswith(str(directory / "consistency-groups.yaml") + ": ")
    assert says in message
    assert "\n" not in message


def test_same_group_id_in_another_project_is_a_different_mapping(tmp_path):
    other = {**ENTRY, "project_id": "1f2e3d4c5b6a79880123456789abcdef"}
    mappings = load_mappings(write_mappings(tmp_path / "m", [ENTRY, other]))
    assert len(mappings.groups) == 2


def test_bad_error_table_is_refused_naming_the_field(tmp_path):
    directory = write_mappings(tmp_path / "m", [ENTRY])
    (directory / "sdrs-errors.yaml").write_text(yaml.safe_dump({
        "legacy_faults": {}, "by_sdrs_status": {}, "by_sdrs_class": {"4xx": 400, "5xx": 502},
        "codes": {"SDRS.0001": {"sdrs": 400, "legacy": 413, "message": "x"}}}))
    with pytest.raises(ConfigError) as caught:
        load_mappings(directory)
    assert "sdrs-errors.yaml: codes.SDRS.0001.legacy" in str(caught.value)


@pytest.mark.parametrize("command", ["serve", "validate", "front-config", "demo", "simulate", "report", "explain",
                                     "discover", "config-schema", "legacy-sim"])
def test_every_subcommand_has_help(command):
    result = run_shim(command, "--help")
    assert result.returncode == 0
    assert "usage: shim " + command in result.stdout


ROOT = Path(__file__).resolve().parent.parent


def shim_in_repository_root(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`shim ...` as the README prints it: from the repository root, no SHIM_* variable set."""
    import os

    clean = {name: value for name, value in os.environ.items() if not name.upper().startswith("SHIM_")}
    script = Path(sys.executable).parent / "shim"  # the console script `pip install -e .` put there
    command = [str(script)] if script.exists() else [sys.executable, "-m", "shim"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**clean, **(env or {})})


def test_the_readme_validate_command_works_as_printed_from_the_repository_root():
    readme = (ROOT / "README.md").read_text()
    assert "    .venv/bin/shim validate --config examples/shim.yaml\n" in readme

    result = shim_in_repository_root("validate", "--config", "examples/shim.yaml")

    assert result.returncode == 0, result.stderr
    assert "examples/shim.yaml: ok (1 mapped consistency groups" in result.stdout


def test_the_example_config_lists_valid_keys_with_their_defaults():
    from shim.config import Settings

    example = ROOT / "examples" / "shim.yaml"
    data = yaml.safe_load(example.read_text())
    defaults = Settings(upstreams={"sdrs": "http://127.0.0.1:8777"}).model_dump(mode="json")
    assert set(data) == set(defaults)  # every key, none unknown
    for section in ("timeouts", "passthrough", "limits", "actions", "lifecycle", "shadow", "tracing"):
        assert data[section] == defaults[section], section
    defaults["state"].pop("path")  # environment-dependent: the example names the rule in a comment
    assert data["state"] == defaults["state"]
    for key in ("listen", "workers", "log_level", "log_format"):
        assert data[key] == defaults[key], key
    assert data["mappings"] == "./mappings"  # the default, resolved beside the file: examples/mappings
