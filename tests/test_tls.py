"""TLS where old clients expect it: the shim serving https under the legacy endpoint's name, https
upstreams verified against a CA bundle, the environment's proxy on request, and the listener's
certificate reloaded on SIGHUP. The CAs and certificates are made at test time (trustme)."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web

from conftest import GO_HEADERS, PROJECT, RCG, RecordingUpstream, call, write_mappings
from shim.cli import main as shim_main
from shim.simulator import SdrsSimulator, SimulatorSettings

LEGACY_NAME = "evs.eu-de.otc.t-systems.com"  # the name a client has built in
GROUP_ID = "2b7e4c1a-9d3f-4e2b-8a6c-5f1d0e9b7a34"
MAPPING = [{"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP_ID}]
RCG_PATH = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
GET_HEADERS = {k: v for k, v in GO_HEADERS.items() if k != "Content-Type"}
Record = dict[str, Any]


async def start_tls_server(app: web.Application, cert: trustme.LeafCert) -> tuple[web.AppRunner, str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"https://127.0.0.1:{port}"


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@dataclass
class Https:
    """An https-only client with its endpoint name built in: it connects wherever the name resolves
    (the shim, as with Kubernetes hostAliases) and checks the certificate for that name."""

    base: str
    ca: trustme.CA

    async def call(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(ssl=trusting(self.ca))  # a new connection every time
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.request(method, self.base + path, data=body, server_hostname=LEGACY_NAME,
                                       headers={**headers, "Host": LEGACY_NAME}) as response:
                raw = await response.read()
                return response.status, json.loads(raw) if raw else None


# -- the shim as `shim serve` runs it -------------------------------------------------------------

@dataclass
class ShimProcess:
    proc: asyncio.subprocess.Process
    records: list[Record] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    async def collect(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.raw.append(line.decode(errors="replace"))
            try:
                self.records.append(json.loads(line))
            except ValueError:
                pass

    async def wait_for(self, message: str, count: int = 1) -> Record:
        """The `count`th log record whose message starts with `message` (waits up to 15 s)."""
        for _ in range(1500):
            found = [record for record in self.records if record.get("message", "").startswith(message)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        raise AssertionError(f"{message!r} not logged; the shim wrote:\n" + "".join(self.raw))


Spawn = Callable[[Path], Awaitable[ShimProcess]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    started: list[tuple[ShimProcess, asyncio.Task[None]]] = []

    async def start(config: Path) -> ShimProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shim", "serve", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        shim = ShimProcess(proc)
        started.append((shim, asyncio.create_task(shim.collect())))
        await shim.wait_for("listening")
        return shim

    yield start
    for shim, reader in started:  # only the processes this test started, by pid
        if shim.proc.returncode is None:
            shim.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(shim.proc.wait(), 15)
            except TimeoutError:
                shim.proc.kill()
                await shim.proc.wait()
        await reader


def write_pems(directory: Path, cert: trustme.LeafCert) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    cert.private_key_pem.write_to_path(str(directory / "tls.key"))
    (directory / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))


def write_config(tmp_path: Path, **config: Any) -> Path:
    write_mappings(tmp_path / "mappings", MAPPING)
    path = tmp_path / "shim.yaml"
    path.write_text(yaml.safe_dump({"mappings": "./mappings", "lifecycle": {"readiness_grace_seconds": 0}, **config}))
    return path


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_sdrs(ca) -> AsyncIterator[tuple[SdrsSimulator, str]]:
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.3))
    sim.add_protection_group(PROJECT, GROUP_ID, status="protected", pair_count=2)
    runner, url = await start_tls_server(sim.app(), ca.issue_cert("127.0.0.1"))
    yield sim, url
    await runner.cleanup()


@pytest.fixture
async def tls_legacy(ca) -> AsyncIterator[tuple[RecordingUpstream, str]]:
    upstream = RecordingUpstream()
    runner, url = await start_tls_server(upstream.app(), ca.issue_cert("127.0.0.1"))
    yield upstream, url
    await runner.cleanup()


# -- the https-only client --------------------------------------------------------------------------

async def test_an_https_only_client_completes_the_reprotect_workflow_and_a_passthrough_call(
    tmp_path, spawn, ca, tls_sdrs, tls_legacy
):
    sim, sdrs_url = tls_sdrs
    upstream, legacy_url = tls_legacy
    write_pems(tmp_path / "tls", ca.issue_cert(LEGACY_NAME))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = write_config(
        tmp_path, listen={"host": "127.0.0.1", "port": 0,
                          "tls": {"certificate": "tls/tls.crt", "private_key": "tls/tls.key"}},
        upstreams={"sdrs": sdrs_url, "legacy": legacy_url, "ca_file": "ca.pem"})
    shim = await spawn(config)
    listening = await shim.wait_for("listening")
    client = Https(f"https://127.0.0.1:{listening['port']}", ca)

    async def read() -> tuple[str, str]:
        status, document = await client.call("GET", RCG_PATH, GET_HEADERS)
        assert status == 200, document
        group = document["replication_consistency_group"]
        return group["status"], group["replication_status"]

    async def until(wanted: tuple[str, str]) -> None:
        seen = []
        for _ in range(300):
            seen.append(await read())
            if seen[-1] == wanted:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never {wanted}: {seen}")

    failover = await client.call("POST", RCG_PATH + "/action", GO_HEADERS,
                                 b'{"os-failover-replication-consistency-group":null}\n')
    await until(("failovered", "active-stopped"))
    reprotect = await client.call("POST", RCG_PATH + "/action", GO_HEADERS,
                                  b'{"os-reprotect-replication-consistency-group":null}\n')
    after = await read()
    passthrough = await client.call("GET", f"/v2/{PROJECT}/volumes", GET_HEADERS)

    assert listening["scheme"] == "https"
    assert (failover, reprotect) == ((200, None), (200, None))
    assert after == ("available", "copying")
    assert [key for _, _, key in sim.action_calls] == ["failover-server-group", "start-server-group"]
    assert passthrough == (200, {"upstream": True})
    ((method, path, headers, _),) = upstream.requests
    assert (method, path, headers["X-Forwarded-Proto"]) == ("GET", f"/v2/{PROJECT}/volumes", "https")
    assert headers["X-Forwarded-Host"] == LEGACY_NAME


# -- upstream certificates --------------------------------------------------------------------------

async def test_https_upstreams_are_verified_and_trusted_through_ca_file(tmp_path, make_shim, ca, tls_sdrs, tls_legacy):
    sim, sdrs_url = tls_sdrs
    upstream, legacy_url = tls_legacy
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    untrusting = await make_shim(sdrs=sdrs_url, mapping=MAPPING, upstreams={"sdrs": sdrs_url, "legacy": legacy_url})
    ca_file = str(tmp_path / "ca.pem")
    trusting_ca = await make_shim(sdrs=sdrs_url, mapping=MAPPING,
                                  upstreams={"sdrs": sdrs_url, "legacy": legacy_url, "ca_file": ca_file})

    refused = [await call("GET", untrusting + path, headers=GET_HEADERS) for path in (RCG_PATH, "/v2/x/volumes")]
    reached_before = (len(sim.requests), len(upstream.requests))
    served = [await call("GET", trusting_ca + path, headers=GET_HEADERS) for path in (RCG_PATH, "/v2/x/volumes")]

    assert [reply.status for reply in refused] == [503, 503]
    assert reached_before == (0, 0)  # no request got past the handshake
    assert [reply.status for reply in served] == [200, 200]


@dataclass
class ConnectProxy:
    """An egress proxy: it tunnels CONNECT requests and notes where to."""

    tunnels: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def serve(self) -> tuple[asyncio.Server, str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy_env(monkeypatch) -> AsyncIterator[ConnectProxy]:
    """An egress proxy named by HTTPS_PROXY, and no other proxy setting."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    proxy = ConnectProxy()
    server, url = await proxy.serve()
    monkeypatch.setenv("HTTPS_PROXY", url)
    yield proxy
    server.close()


@pytest.mark.parametrize(("trust_env", "no_proxy", "via_proxy"), [
    (False, None, False), (True, None, True), (True, "127.0.0.1", False),
], ids=["default-direct", "trust-env-via-proxy", "no-proxy-direct"])
async def test_trust_env_sends_upstream_traffic_through_the_environment_proxy(
    tmp_path, make_shim, monkeypatch, ca, tls_sdrs, tls_legacy, proxy_env, trust_env, no_proxy, via_proxy
):
    sim, sdrs_url = tls_sdrs
    _, legacy_url = tls_legacy
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    shim = await make_shim(sdrs=sdrs_url, mapping=MAPPING, upstreams={
        "sdrs": sdrs_url, "legacy": legacy_url, "ca_file": str(tmp_path / "ca.pem"), "trust_env": trust_env})

    group = await call("GET", shim + RCG_PATH, headers=GET_HEADERS)
    volumes = await call("GET", shim + "/v2/x/volumes", headers=GET_HEADERS)

    assert (group.status, volumes.status) == (200, 200)
    expected = {sdrs_url.removeprefix("https://"), legacy_url.removeprefix("https://")} if via_proxy else set()
    assert set(proxy_env.tunnels) == expected


# -- SIGHUP ------------------------------------------------------------------------------------------

async def test_sighup_puts_a_new_certificate_into_the_running_listener(tmp_path, spawn, tls_sdrs, ca):
    _, sdrs_url = tls_sdrs
    old_ca, new_ca = trustme.CA(), trustme.CA()
    old_cert, new_cert = old_ca.issue_cert(LEGACY_NAME), new_ca.issue_cert(LEGACY_NAME)
    write_pems(tmp_path / "tls", old_cert)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = write_config(
        tmp_path, listen={"host": "127.0.0.1", "port": 0,
                          "tls": {"certificate": "tls/tls.crt", "private_key": "tls/tls.key"}},
        upstreams={"sdrs": sdrs_url, "ca_file": "ca.pem"})
    shim = await spawn(config)
    base = f"https://127.0.0.1:{(await shim.wait_for('listening'))['port']}"
    before = await Https(base, old_ca).call("GET", "/healthz", {})

    write_pems(tmp_path / "tls", new_cert)  # a rotated Secret: same paths, new files
    shim.proc.send_signal(signal.SIGHUP)
    await shim.wait_for("reloaded config and mappings")
    after = await Https(base, new_ca).call("GET", "/healthz", {})
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await Https(base, old_ca).call("GET", "/healthz", {})

    old_cert.private_key_pem.write_to_path(str(tmp_path / "tls" / "tls.key"))  # does not fit the certificate
    shim.proc.send_signal(signal.SIGHUP)
    failed = await shim.wait_for("reload failed")
    still = await Https(base, new_ca).call("GET", "/healthz", {})

    assert before[0] == after[0] == still[0] == 200
    assert "listen.tls.private_key" in failed["message"]


# -- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("problem", "says"), [
    ("certificate", "listen.tls.certificate: "),
    ("private_key", "listen.tls.private_key: "),
    ("ca_file", "upstreams.ca_file: cannot load"),
])
def test_validate_names_the_tls_file_that_cannot_be_loaded(tmp_path, capsys, ca, problem, says):
    write_pems(tmp_path / "tls", ca.issue_cert(LEGACY_NAME))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "junk.pem").write_text("-----BEGIN NOTHING-----\n")
    tls = {"certificate": "tls/tls.crt", "private_key": "tls/tls.key"}
    upstreams = {"sdrs": "https://127.0.0.1:8777", "ca_file": "ca.pem"}
    if problem == "ca_file":
        upstreams["ca_file"] = "junk.pem"
    else:
        tls[problem] = "junk.pem"
    config = write_config(tmp_path, listen={"tls": tls}, upstreams=upstreams)
    good = write_config(tmp_path / "good", listen={"tls": {"certificate": str(tmp_path / "tls/tls.crt"),
                                                           "private_key": str(tmp_path / "tls/tls.key")}},
                        upstreams={"sdrs": "https://127.0.0.1:8777", "ca_file": str(tmp_path / "ca.pem")})

    status = shim_main(["validate", "--config", str(config)])
    err = capsys.readouterr().err
    good_status = shim_main(["validate", "--config", str(good)])

    assert status == 2 and says in err and err.count("\n") == 1, err
    assert good_status == 0
    assert "https://127.0.0.1:8080" in capsys.readouterr().out


# -- the Kubernetes example -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_the_fixed_endpoint_kubernetes_example_serves_tls_under_the_legacy_name(tmp_path, capsys, ca):
    config_map, pod = yaml.safe_load_all((ROOT / "examples/kubernetes/fixed-endpoint-pod.yaml").read_text())
    spec = pod["spec"]
    (shim,) = [c for c in spec["initContainers"] if c["name"] == "evs-sdrs-shim"]
    (client,) = spec["containers"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in shim["volumeMounts"]}
    root = tmp_path / "pod"  # the shim container's filesystem, as far as the example mounts it
    text = config_map["data"]["shim.yaml"]
    for path, volume in mounts.items():
        if "secret" in volume or (path != "/tmp" and "emptyDir" in volume):  # the Secrets, the state volume
            text = text.replace(f" {path}/", f" {root}{path}/")
            if "emptyDir" in volume:
                (root / path.lstrip("/")).mkdir(parents=True)
    config_dir = root / "etc/shim"
    write_mappings(config_dir / "mappings", [])
    (config_dir / "shim.yaml").write_text(text)
    legacy_name = yaml.safe_load(text)["upstreams"]["legacy"].removeprefix("https://")
    write_pems(root / "etc/shim-tls", ca.issue_cert(legacy_name))  # the Secret evs-sdrs-shim-tls
    (root / "var/run/secrets/shim/aksk").mkdir(parents=True)  # the Secret evs-sdrs-shim-aksk
    (root / "var/run/secrets/shim/aksk/ak").write_text("EXAMPLEACCESSKEY0001")
    (root / "var/run/secrets/shim/aksk/sk").write_text("example-secret-key\n")

    status = shim_main(["validate", "--config", str(config_dir / "shim.yaml")])

    assert status == 0, capsys.readouterr().err
    assert "1 AK/SK key pair(s); listen https://127.0.0.1:443" in capsys.readouterr().out
    assert {"ip": "127.0.0.1", "hostnames": [legacy_name]} in spec["hostAliases"]
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "443"} in spec["securityContext"]["sysctls"]
    for kind, volume in (("tls", "shim-tls"), ("aksk", "shim-aksk")):
        assert any(v is volumes[volume] and "secret" in v for v in mounts.values()), kind
    env = {item["name"]: item.get("value") for item in shim["env"]}
    assert env["HTTPS_PROXY"] and "127.0.0.1" in env["NO_PROXY"].split(",")  # the shim's way to the real EVS
    command = shim["startupProbe"]["exec"]["command"][-1]  # the others: httpGet on the management port
    assert f"https://{legacy_name}/" in command and "ProxyHandler({})" in command
    client_env = {item["name"]: item.get("value") for item in client["env"]}
    assert client_env["SSL_CERT_FILE"] == client_env["REQUESTS_CA_BUNDLE"] == "/etc/ssl/shim/ca-bundle.crt"
