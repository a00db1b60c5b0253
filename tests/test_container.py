"""The container image, checked by reading its files (CI builds it only where a Docker daemon is):
dependencies from the lock file before the code (layer caching, reproducible installs), a build
context without the virtual environment, and a built-in config that listens where the image says."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from shim.config import load_settings
from shim.mappings import load_mappings

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dependencies_come_from_the_lock_file_before_the_code_is_copied():
    steps = instructions()
    copies = [(index, args) for index, (op, args) in enumerate(steps) if op == "COPY"]
    runs = [(index, args) for index, (op, args) in enumerate(steps) if op == "RUN"]
    (lock_install,) = [index for index, args in runs if "-r requirements.lock" in args]
    (project_install,) = [index for index, args in runs if "pip install --no-deps ." in args]
    copied_before = [args for index, args in copies if index < lock_install]

    assert copied_before == ["requirements.lock ./"]  # nothing else invalidates the dependency layer
    assert all(index > lock_install for index, args in copies if args.startswith(("shim", "pyproject.toml")))
    assert lock_install < project_install and "pip check" in steps[project_install][1]


def test_the_lock_file_pins_every_runtime_dependency_within_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[name.lower().replace("_", "-")] = version
    wanted = [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["fast"]]
    for requirement in wanted:
        version = pins.get(requirement.name.lower().replace("_", "-"))
        assert version is not None, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} is not {requirement}"


def test_the_build_context_leaves_out_the_virtual_environment_and_the_repository():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "**/__pycache__"} <= ignored
    for needed in ("shim", "mappings", "examples", "README.md", "pyproject.toml", "requirements.lock"):
        assert needed not in ignored


def test_the_built_in_config_listens_on_the_exposed_and_probed_port(tmp_path):
    """Lay out /etc/shim as the COPY lines do, load it as `shim serve` would, and compare."""
    steps = instructions()
    for op, args in steps:
        *sources, target = args.split() if op == "COPY" else ("",)
        if target.startswith("/etc/shim"):
            (source,) = sources
            destination = tmp_path / target.lstrip("/")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, destination)
    (command,) = [args for op, args in steps if op == "CMD" and args.startswith("[\"serve\"")]
    config_path = command.split('"--config", "')[1].split('"')[0]
    settings = load_settings(tmp_path / config_path.lstrip("/"))
    (exposed,) = [int(args) for op, args in steps if op == "EXPOSE"]
    (healthcheck,) = [args for op, args in steps if op == "HEALTHCHECK"]

    assert len(load_mappings(settings.mappings).groups) == 1
    assert settings.listen.host == "0.0.0.0"  # reachable through the container's published port
    assert settings.listen.port == exposed
    assert f"http://127.0.0.1:{exposed}/healthz" in healthcheck  # inside the container, 0.0.0.0 includes loopback
    assert ("USER", "10001:10001") in steps
