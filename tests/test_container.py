"""The container image, checked by reading its files (CI builds it only where a Docker daemon is):
dependencies from the lock file before the code (layer caching, reproducible installs), a build
context without the virtual environment, and a built-in config that listens where the image says."""

from __future__ import annotations

import re
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


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per stage (FROM first), the ARGs before the first FROM left out."""
    result: list[list[tuple[str, str]]] = []
    for op, args in instructions():
        if op == "FROM":
            result.append([])
        if result:
            result[-1].append((op, args))
    return result


def test_dependencies_come_from_the_lock_file_before_the_code_is_copied():
    build, image = stages()
    copies = [(index, args) for index, (op, args) in enumerate(image) if op == "COPY"]
    runs = [(index, args) for index, (op, args) in enumerate(image) if op == "RUN"]
    (lock_install,) = [index for index, args in runs if "-r requirements.lock" in args]
    (project_install,) = [index for index, args in runs if "pip install --no-deps /tmp/dist/" in args]
    copied_before = [args for index, args in copies if index < lock_install]

    assert copied_before == ["requirements.lock ./"]  # nothing else invalidates the dependency layer
    assert "--require-hashes" in image[lock_install][1]  # every file checked against the lock's hashes
    assert lock_install < project_install and "pip check" in image[project_install][1]
    assert ("COPY", "--from=build /dist /tmp/dist") in image
    # The wheel is built in its own stage with the pinned, hashed build backend, never a fresh resolve.
    assert build[0][1].endswith(" AS build")
    (backend_install,) = [args for op, args in build if op == "RUN" and "requirements-build.lock" in args]
    assert "--require-hashes" in backend_install
    (wheel,) = [args for op, args in build if op == "RUN" and "pip wheel" in args]
    assert "--no-build-isolation" in wheel and "--no-deps" in wheel


def lock_pins(name: str) -> dict[str, tuple[str, list[str]]]:
    """normalized name -> (version, sha256 hashes) of a pip-compile --generate-hashes file."""
    text = (ROOT / name).read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        package, _, version = requirement.partition("==")
        assert version, f"{name}: not pinned: {line}"
        hashes = [option.removeprefix("--hash=sha256:") for option in options]
        assert all(len(digest) == 64 for digest in hashes), line
        pins[package.lower().replace("_", "-")] = (version, hashes)
    return pins


def test_the_lock_file_pins_every_runtime_dependency_within_pyproject_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins("requirements.lock")
    wanted = [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["fast"]]
    for requirement in wanted:
        version, _ = pins.get(requirement.name.lower().replace("_", "-"), (None, []))
        assert version is not None, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version} is not {requirement}"
    for package, (version, hashes) in pins.items():
        assert hashes, f"{package}=={version} has no hash: `pip install --require-hashes` would refuse the file"


def test_the_build_backend_is_pinned_the_same_in_pyproject_and_its_hashed_lock():
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    (requirement,) = [Requirement(text) for text in build_system["requires"]]
    pins = lock_pins("requirements-build.lock")
    assert str(requirement.specifier).startswith("==")  # pinned, not a range
    assert pins[requirement.name][0] == str(requirement.specifier).removeprefix("==")
    assert all(hashes for _, hashes in pins.values())


def test_the_image_carries_oci_labels_from_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    _, image = stages()
    labels = {}
    for op, args in image:
        if op == "LABEL":
            labels.update(re.findall(r'(\S+?)="([^"]*)"', args))
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE))
    prefix = "org.opencontainers.image."
    for key in ("title", "description", "version", "revision", "created", "source", "licenses", "base.name"):
        assert prefix + key in labels, key
    assert labels[prefix + "title"] == project["name"]
    assert labels[prefix + "licenses"] == project["license"]
    assert labels[prefix + "version"] == "${VERSION}" and args["VERSION"] == project["version"]
    assert labels[prefix + "description"] == project["description"]


def test_the_build_context_leaves_out_the_virtual_environment_and_the_repository():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "**/__pycache__"} <= ignored
    for needed in ("shim", "mappings", "examples", "README.md", "pyproject.toml", "requirements.lock",
                   "requirements-build.lock", "LICENSE"):
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
