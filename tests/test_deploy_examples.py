"""The Kubernetes examples as deployed: each one's config validates with the files laid out as the kubelet
mounts them (its state store opened on the volume it mounts), the state store sits on a writable volume
(or Redis), the probes are the kubelet's httpGet on the management listener, and Prometheus is told
where to scrape. And `shim validate` refuses a state store that cannot be opened, naming it."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from conftest import DEFAULT_MAPPING, write_mappings
from shim.cli import main as shim_main
from shim.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))


def documents(example: Path) -> dict[str, Any]:
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(example.read_text())}
    assert {"ConfigMap", "Pod"} <= set(docs)
    return docs


def shim_container(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    (shim,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "evs-sdrs-shim"]
    return shim


def lay_out(example: Path, root: Path) -> Path:
    """The shim container's files as the example mounts them, under `root`: the ConfigMap's items, the
    Secrets' files (a certificate for the listen name, a key pair), and its other volumes as empty
    directories; every mounted path in the config is moved under `root`. -> the config file."""
    docs = documents(example)
    config_map, pod = docs["ConfigMap"], docs["Pod"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = shim_container(pod)["volumeMounts"]
    moved = "|".join(re.escape(mount["mountPath"]) for mount in mounts)
    text = re.sub(f" ({moved})/", lambda match: f" {root}{match[1]}/", config_map["data"]["shim.yaml"])
    config_file = None
    for mount in mounts:
        volume, directory = volumes[mount["name"]], root / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for item in volume["configMap"]["items"]:
                target = directory / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(config_map["data"][item["key"]])
                if item["key"] == "shim.yaml":
                    config_file = target
    assert config_file is not None
    config_file.write_text(text)
    data = yaml.safe_load(text)
    tls = data["listen"].get("tls")
    if tls:  # the Secret the example names: a certificate for the name the clients use
        name = data["upstreams"]["legacy"].removeprefix("https://")
        cert = trustme.CA().issue_cert(name)
        cert.private_key_pem.write_to_path(tls["private_key"])
        cert.cert_chain_pems[0].write_to_path(tls["certificate"])
    for pair in data.get("aksk", []):
        Path(pair["access_key_file"]).write_text("EXAMPLEACCESSKEY0001")
        Path(pair["secret_key_file"]).write_text("example-secret-key")
    return config_file


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_each_kubernetes_example_validates_with_its_state_on_a_writable_volume(example, tmp_path, capsys):
    pod = documents(example)["Pod"]
    shim = shim_container(pod)
    config_file = lay_out(example, tmp_path / "pod")

    status = shim_main(["validate", "--config", str(config_file)])

    out, err = capsys.readouterr()
    assert status == 0, err
    settings = load_settings(config_file)
    state = settings.state
    assert state.backend in ("sqlite", "redis")
    if state.backend == "sqlite":
        assert state.path.exists()  # opened (made) on the mounted volume, not the image's filesystem
        volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
        (mount,) = [m for m in shim["volumeMounts"] if str(state.path).startswith(str(tmp_path / "pod") + m["mountPath"]
                                                                                   + "/")]
        assert not mount.get("readOnly")
        assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[mount["name"]])
        if "emptyDir" in volumes[mount["name"]]:
            assert volumes[mount["name"]]["emptyDir"].get("medium") != "Memory"  # survives a container restart
    assert shim["securityContext"]["readOnlyRootFilesystem"] is True
    assert "ok (1 mapped consistency groups" in out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_each_kubernetes_example_probes_and_exposes_the_management_listener(example, tmp_path):
    pod = documents(example)["Pod"]
    shim = shim_container(pod)
    settings = load_settings(lay_out(example, tmp_path / "pod"))

    management = settings.management
    assert management is not None and management.host == "0.0.0.0"  # the kubelet probes the pod IP
    ports = {port["name"]: port["containerPort"] for port in shim["ports"]}
    assert ports["management"] == management.port != settings.listen.port
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert shim[probe]["httpGet"] == {"path": path, "port": "management"}, probe
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(management.port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_sidecar_example_has_a_pod_monitor_for_the_management_port():
    monitor = documents(ROOT / "examples/kubernetes/sidecar-pod.yaml")["PodMonitor"]
    pod = documents(ROOT / "examples/kubernetes/sidecar-pod.yaml")["Pod"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "management"


# -- shim validate and the state store ------------------------------------------------------------


def write_config(tmp_path: Path, state: dict[str, Any]) -> Path:
    write_mappings(tmp_path / "mappings", DEFAULT_MAPPING)
    path = tmp_path / "shim.yaml"
    path.write_text(yaml.safe_dump({"upstreams": {"sdrs": "http://127.0.0.1:8777"}, "mappings": "./mappings",
                                    "state": state}))
    return path


def test_validate_fails_naming_a_sqlite_file_that_cannot_be_made(tmp_path, capsys):
    (tmp_path / "not-a-directory").write_text("a file where the state directory should be")
    path = tmp_path / "not-a-directory" / "state.sqlite3"
    config = write_config(tmp_path, {"backend": "sqlite", "path": str(path)})

    status = shim_main(["validate", "--config", str(config)])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("shim: config error: state.path: the state store sqlite ")
    assert str(path) in err and "cannot be opened" in err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_validate_fails_naming_a_redis_that_does_not_answer_without_its_password(tmp_path, capsys):
    port = closed_port()
    config = write_config(tmp_path, {"backend": "redis", "url": f"redis://shim:s3cr3t-pw@127.0.0.1:{port}/0",
                                     "timeout_seconds": 0.5})

    status = shim_main(["validate", "--config", str(config)])

    out, err = capsys.readouterr()
    assert status == 2
    assert err.startswith("shim: config error: state.url: the state store redis redis://127.0.0.1:")
    assert f":{port}/0 cannot be opened" in err
    assert "s3cr3t-pw" not in out + err


async def test_validate_passes_with_a_redis_that_answers(tmp_path, redis_server, capsys):
    config = write_config(tmp_path, {"backend": "redis", "url": redis_server.url})

    import asyncio

    status = await asyncio.to_thread(shim_main, ["validate", "--config", str(config)])

    assert status == 0, capsys.readouterr().err
