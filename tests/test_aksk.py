"""AK/SK-signed clients through the shim: verified as the API gateway would, then signed again for
each hop (SDRS on translated calls, the legacy endpoint's own host on the passthrough).

The client signs with the cloud's own SDK (huaweicloudsdkcore). The SDRS simulator accepts only valid
signatures (no token works), and the legacy stand-in recomputes, with the SDK's signer, the signature
the request it received must carry for its own host.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest
from aiohttp import web
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from multidict import CIMultiDict
from yarl import URL

from conftest import PROJECT, RCG, Reply, call, start_server, write_mappings
from shim.cli import main as shim_main
from shim.config import load_settings
from shim.mappings import load_mappings
from shim.runtime.reload import reload_config
from shim.runtime.server import start_site
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.translate.signing import KeyPair, SignatureRejected, SignedRequest, authorization, verify
from shim.web.app import build_app
from shim.web.logs import configure_logging
from shim.web.shim_state import STATE

AK, SK = "SHIMTESTACCESSKEY001", "shim-test-secret-0123456789abcdefghij"
OTHER_AK, OTHER_SK = "SOMEONEELSESKEY00002", "someone-else-secret-0123456789abcdef"
SECURITY_TOKEN = "sts-token-7c1e-never-log-me"
GROUP_ID = "2b7e4c1a-9d3f-4e2b-8a6c-5f1d0e9b7a34"
MAPPING = [{"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP_ID}]
RCG_PATH = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
ACTION_PATH = RCG_PATH + "/action"
VOLUMES_PATH = f"/v2/{PROJECT}/volumes"


# -- the client side: the SDK's signer ------------------------------------------------------------

def sdk_signed(
    method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
    query: list[tuple[str, str]] | None = None, ak: str = AK, sk: str = SK, sdk_date: str | None = None,
) -> tuple[str, dict[str, str]]:
    """Sign as an SDK client does (X-Project-Id, X-Security-Token, then the signature): the URL to
    send to and the headers."""
    parts = urlsplit(url)
    params = {"Content-Type": "application/json"} if body else {}
    params.update(headers or {})
    if sdk_date is not None:
        params["X-Sdk-Date"] = sdk_date
    request = SdkRequest(method=method, schema=parts.scheme, host=parts.netloc, resource_path=parts.path,
                         query_params=list(query or []), header_params=params, body=body)
    signed = BasicCredentials(ak, sk, PROJECT).with_security_token(SECURITY_TOKEN).sign_request(request)
    return f"{parts.scheme}://{parts.netloc}{signed.uri}", dict(signed.header_params)


def sdk_authorization(
    method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes, key: KeyPair
) -> str:
    """The Authorization the SDK's signer computes for a request as it arrived, over the headers its
    own Authorization names: what a gateway in front of that host would expect."""
    names = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    query = [(unquote(k), unquote(v)) for k, _, v in (item.partition("=") for item in raw_query.split("&") if item)]
    request = SdkRequest(method=method, schema="http", host=headers["Host"], resource_path=raw_path,
                         query_params=query, header_params={name: headers[name] for name in names}, body=body)
    return Signer(BasicCredentials(key.access_key, key.secret_key)).sign(request).header_params["Authorization"]


async def send(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> Reply:
    return await call(method, url, body=body, headers=headers)


# -- the upstreams ----------------------------------------------------------------------------------

@dataclass
class Arrived:
    method: str
    raw_path: str
    raw_query: str
    headers: CIMultiDict[str]
    body: bytes
    expected_authorization: str | None  # what the SDK's signer computes for it; None: not signed


@dataclass
class SigCheckingLegacy:
    """A legacy EVS stand-in behind an API gateway: it checks each request's signature with the SDK's
    own signer, for its own host, and answers 401 as the gateway would when it does not match."""

    key: KeyPair
    requests: list[Arrived] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = None
        if request.headers.get("Authorization", "").startswith("SDK-HMAC-SHA256 "):
            expected = sdk_authorization(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                                         request.headers, body, self.key)
        arrived = Arrived(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                          CIMultiDict(request.headers), body, expected)
        self.requests.append(arrived)
        if expected is None or expected != request.headers["Authorization"]:
            return web.json_response({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication"},
                                     status=401)
        return web.json_response({"upstream": True, "replication_consistency_groups": [], "replications": []})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def legacy() -> AsyncIterator[tuple[SigCheckingLegacy, str]]:
    upstream = SigCheckingLegacy(KeyPair(AK, SK))
    runner, url = await start_server(upstream.app())
    yield upstream, url
    await runner.cleanup()


@pytest.fixture
async def sdrs() -> AsyncIterator[tuple[SdrsSimulator, str]]:
    """SDRS that no token gets into: only a valid signature with the client's key pair."""
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.3,
                                          tokens={"no-client-has-this"}, credentials={AK: SK}))
    sim.add_protection_group(PROJECT, GROUP_ID, status="protected", pair_count=2,
                             source_availability_zone="eu-de-01", target_availability_zone="eu-de-02",
                             priority_station="source")
    runner, url = await start_server(sim.app())
    yield sim, url
    await runner.cleanup()


def key_files(directory: Path, ak: str = AK, sk: str = SK) -> dict[str, str]:
    """The pair as a Kubernetes Secret mounts it: one file each, ending in a newline."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ak").write_text(ak + "\n")
    (directory / "sk").write_text(sk + "\n")
    return {"access_key_file": str(directory / "ak"), "secret_key_file": str(directory / "sk")}


@pytest.fixture
async def signing_shim(tmp_path, make_shim, sdrs, legacy, monkeypatch) -> str:
    """A shim with two key pairs: the client's from files, another project's from the environment."""
    monkeypatch.setenv("TEST_OTHER_AK", OTHER_AK)
    monkeypatch.setenv("TEST_OTHER_SK", OTHER_SK)
    pairs = [key_files(tmp_path / "secret"), {"access_key_env": "TEST_OTHER_AK", "secret_key_env": "TEST_OTHER_SK"}]
    return await make_shim(sdrs=sdrs[1], legacy=legacy[1], mapping=MAPPING, aksk=pairs)


# -- the reprotect workflow -------------------------------------------------------------------------

async def read_group(shim: str) -> dict[str, Any]:
    url, headers = sdk_signed("GET", shim + RCG_PATH)
    reply = await send("GET", url, headers)
    assert reply.status == 200, reply.body
    return reply.json()["replication_consistency_group"]


async def poll_group(shim: str, wanted: tuple[str, str]) -> dict[str, Any]:
    seen = []
    for _ in range(300):
        group = await read_group(shim)
        seen.append((group["status"], group["replication_status"]))
        if seen[-1] == wanted:
            return group
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {wanted}: {seen}")


async def act(shim: str, action: str) -> Reply:
    body = b'{"' + action.encode() + b'":null}\n'
    url, headers = sdk_signed("POST", shim + ACTION_PATH, body=body)
    return await send("POST", url, headers, body)


async def test_a_signing_client_completes_the_reprotect_workflow_and_a_passthrough_call(signing_shim, sdrs, legacy):
    sim, sdrs_url = sdrs
    upstream, legacy_url = legacy
    shim = signing_shim

    assert (await act(shim, "os-failover-replication-consistency-group")).status == 200
    failed_over = await poll_group(shim, ("failovered", "active-stopped"))
    assert (await act(shim, "os-reprotect-replication-consistency-group")).status == 200
    after = await read_group(shim)
    url, headers = sdk_signed("GET", shim + VOLUMES_PATH, query=[("limit", "2"), ("name", "data disk/ü")])
    passthrough = await send("GET", url, headers)

    assert failed_over["priority_station"] == "eu-de-02"
    assert (after["status"], after["replication_status"]) == ("available", "copying")
    assert [key for _, _, key in sim.action_calls] == ["failover-server-group", "start-server-group"]
    for _, _, sent in sim.requests:  # every SDRS request was signed with the client's pair
        assert sent["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
        assert "X-Auth-Token" not in sent
        assert (sent["X-Security-Token"], sent["X-Project-Id"]) == (SECURITY_TOKEN, PROJECT)
        assert "x-security-token" in sent["Authorization"]
    assert (passthrough.status, passthrough.json()["upstream"]) == (200, True)
    (arrived,) = upstream.requests
    assert arrived.headers["Host"] == URL(legacy_url).raw_authority  # the legacy endpoint's own
    assert arrived.headers["Authorization"] == arrived.expected_authorization != headers["Authorization"]
    assert (arrived.raw_path, unquote(arrived.raw_query)) == (VOLUMES_PATH, "limit=2&name=data disk/ü")
    assert arrived.headers["X-Security-Token"] == SECURITY_TOKEN


async def test_the_sdrs_reads_are_signed_as_the_sdk_signs_them(signing_shim, sdrs):
    sim, _ = sdrs
    await read_group(signing_shim)

    reads = [(method, path_qs, sent) for method, path_qs, sent in sim.requests if method == "GET"]
    assert any("?" in path_qs for _, path_qs, _ in reads)  # a read with a query (the pairs) was among them
    for _, path_qs, sent in reads:
        path, _, query = path_qs.partition("?")
        assert sent["Authorization"] == sdk_authorization("GET", path, query, sent, b"", KeyPair(AK, SK))


# -- passthrough bodies -----------------------------------------------------------------------------

async def test_a_json_body_is_checked_then_relayed_and_re_signed(signing_shim, legacy):
    upstream, _ = legacy
    body = b'{"volume": {"name": "v1", "size": 10}}'
    url, headers = sdk_signed("POST", signing_shim + VOLUMES_PATH, body=body)

    reply = await send("POST", url, headers, body)

    assert reply.status == 200, reply.body
    (arrived,) = upstream.requests
    assert arrived.body == body
    assert arrived.headers["Authorization"] == arrived.expected_authorization
    assert "x-sdk-content-sha256" not in arrived.headers["Authorization"]  # the body's own hash is signed


async def test_an_unsigned_payload_streams_through_and_is_re_signed_as_unsigned(signing_shim, legacy):
    upstream, _ = legacy
    chunks = [b"x" * 300_000, b"y" * 300_000, b"z" * 600_000]  # more than limits.signed_body_bytes
    url, headers = sdk_signed("PUT", signing_shim + VOLUMES_PATH + "/backup-blob", body=b"".join(chunks),
                              headers={"Content-Type": "application/octet-stream"})
    assert headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"  # what the SDK does for a non-JSON body

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async with aiohttp.ClientSession() as session:
        async with session.put(URL(url, encoded=True), data=stream(), headers=headers) as response:
            status = response.status

    assert status == 200
    (arrived,) = upstream.requests
    assert arrived.body == b"".join(chunks)
    assert arrived.headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert arrived.headers["Authorization"] == arrived.expected_authorization


async def test_a_declared_body_hash_that_matches_goes_through(signing_shim, legacy):
    upstream, _ = legacy
    body = b'{"volume": {"name": "v2"}}'
    url, headers = sdk_signed("POST", signing_shim + VOLUMES_PATH, body=body,
                              headers={"X-Sdk-Content-Sha256": hashlib.sha256(body).hexdigest()})

    reply = await send("POST", url, headers, body)

    assert reply.status == 200, reply.body
    assert upstream.requests[0].headers["Authorization"] == upstream.requests[0].expected_authorization


async def test_a_signed_body_over_the_limit_is_400_and_not_forwarded(tmp_path, make_shim, sdrs, legacy):
    upstream, legacy_url = legacy
    shim = await make_shim(sdrs=sdrs[1], legacy=legacy_url, mapping=MAPPING, aksk=[key_files(tmp_path / "s")],
                           limits={"signed_body_bytes": 1024})
    body = json.dumps({"volume": {"metadata": {"k": "v" * 2000}}}).encode()
    url, headers = sdk_signed("POST", shim + VOLUMES_PATH, body=body)

    reply = await send("POST", url, headers, body)

    assert reply.status == 400
    assert "1024" in reply.fault()[1]["message"]
    assert upstream.requests == []


async def test_a_merged_list_reads_the_legacy_side_re_signed(signing_shim, legacy):
    upstream, _ = legacy
    url, headers = sdk_signed("GET", signing_shim + f"/v2/{PROJECT}/os-vendor-replication-consistency-groups",
                              query=[("limit", "5")])

    reply = await send("GET", url, headers)

    assert reply.status == 200, reply.body
    assert [group["id"] for group in reply.json()["replication_consistency_groups"]] == [RCG]
    (arrived,) = upstream.requests  # the shim's own GET of the legacy list, with its own query
    assert arrived.headers["Authorization"] == arrived.expected_authorization


# -- what is refused --------------------------------------------------------------------------------

def stale_date() -> str:
    return (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")


def tampered(headers: dict[str, str]) -> dict[str, str]:
    value = headers["Authorization"]
    last = value[-1]
    return {**headers, "Authorization": value[:-1] + ("0" if last != "0" else "1")}


BODY = b'{"os-reprotect-replication-consistency-group":null}\n'
OTHER_BODY = b'{"os-failover-replication-consistency-group":null}\n'


def refused_case(case: str, url: str) -> tuple[str, dict[str, str], bytes]:
    """A signed request that must not verify: the URL, headers and body to send."""
    if case == "tampered signature":
        signed_url, headers = sdk_signed("POST", url, body=BODY)
        return signed_url, tampered(headers), BODY
    if case == "replayed old X-Sdk-Date":
        signed_url, headers = sdk_signed("POST", url, body=BODY, sdk_date=stale_date())
        return signed_url, headers, BODY
    if case == "unknown access key":
        signed_url, headers = sdk_signed("POST", url, body=BODY, ak="NOBODYKNOWSTHISKEY01", sk="whatever-secret")
        return signed_url, headers, BODY
    if case == "wrong body hash":
        signed_url, headers = sdk_signed("POST", url, body=BODY)
        return signed_url, headers, OTHER_BODY  # the signature covers BODY's hash
    if case == "declared hash of another body":
        signed_url, headers = sdk_signed("POST", url, body=OTHER_BODY,
                                         headers={"X-Sdk-Content-Sha256": hashlib.sha256(BODY).hexdigest()})
        return signed_url, headers, OTHER_BODY
    if case == "signed for another host":
        split = urlsplit(url)
        signed_url, headers = sdk_signed("POST", f"http://evs.example.test{split.path}", body=BODY)
        return url, {**headers, "Host": split.netloc}, BODY
    raise AssertionError(case)


REFUSED = ["tampered signature", "replayed old X-Sdk-Date", "unknown access key", "wrong body hash",
           "declared hash of another body", "signed for another host"]


@pytest.mark.parametrize("path", [ACTION_PATH, VOLUMES_PATH], ids=["translated", "passthrough"])
@pytest.mark.parametrize("case", REFUSED)
async def test_a_request_that_does_not_verify_is_401_and_goes_nowhere(signing_shim, sdrs, legacy, case, path):
    sim, _ = sdrs
    upstream, _ = legacy
    url, headers, body = refused_case(case, signing_shim + path)

    reply = await send("POST", url, headers, body)

    assert reply.status == 401, reply.body
    assert reply.fault()[0] == "unauthorized"
    assert reply.fault()[1]["code"] == "EVS.5401"
    assert sim.requests == [] and sim.action_calls == []
    assert upstream.requests == []


async def test_the_simulator_refuses_a_body_that_does_not_match_its_declared_hash(sdrs):
    sim, sdrs_url = sdrs
    path = f"/v1/{PROJECT}/server-groups/{GROUP_ID}/action"
    body = b'{"stop-server-group": {}}'
    url, headers = sdk_signed("POST", sdrs_url + path, body=body,
                              headers={"X-Sdk-Content-Sha256": hashlib.sha256(body).hexdigest()})

    tampered_body = await send("POST", url, headers, b'{"failover-server-group": {}}')
    untouched = await send("POST", url, headers, body)

    assert (tampered_body.status, tampered_body.json()["error_code"]) == (401, "APIGW.0301")
    assert untouched.status == 200  # the group is protected: SDRS takes the stop
    assert [job.job_type for job in sim.state.jobs.values()] == ["stopProtectionGroupNoCG"]


# -- our signer is the SDK's ------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "query", "content_type", "body"), [
    ("GET", [("server_group_id", GROUP_ID), ("name", "a b/ü~+&="), ("limit", "1000")], None, b""),
    ("POST", [], "application/json", b'{"start-server-group": {}}'),
    ("PUT", [("part", "1")], "application/octet-stream", b"\x00\x01binary"),
], ids=["get-with-query", "post-json", "put-unsigned-payload"])
def test_the_shim_signs_exactly_as_the_sdk_signer(method, query, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    headers.update({"X-Sdk-Date": "20261128T101500Z", "X-Project-Id": PROJECT})
    request = SdkRequest(method=method, schema="https", host="sdrs.eu-de.example.test",
                         resource_path=f"/v1/{PROJECT}/server-groups", query_params=query,
                         header_params=headers, body=body)
    sdk = Signer(BasicCredentials(AK, SK)).sign(request)
    sent = CIMultiDict(sdk.header_params)
    raw_path, _, raw_query = sdk.uri.partition("?")
    payload = sent.get("X-Sdk-Content-Sha256") or hashlib.sha256(body).hexdigest()
    names = sent["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")

    ours = authorization(KeyPair(AK, SK), SignedRequest(method, raw_path, raw_query, sent, payload), names)

    assert ours == sent["Authorization"]
    verify(SignedRequest(method, raw_path, raw_query, sent, payload), {AK: KeyPair(AK, SK)},
           datetime(2026, 11, 28, 10, 20, tzinfo=UTC).timestamp())
    with pytest.raises(SignatureRejected, match="expired"):
        verify(SignedRequest(method, raw_path, raw_query, sent, payload), {AK: KeyPair(AK, SK)},
               datetime(2026, 11, 28, 10, 31, tzinfo=UTC).timestamp())


# -- secrets stay secret ----------------------------------------------------------------------------

@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


async def test_no_secret_reaches_a_log_line(signing_shim, legacy, log_buffer):
    upstream, _ = legacy
    signatures = []
    for path in (ACTION_PATH, VOLUMES_PATH):
        url, headers = sdk_signed("POST", signing_shim + path, body=OTHER_BODY)  # a failover: SDRS takes it
        signatures.append(headers["Authorization"].rsplit("=", 1)[1])
        assert (await send("POST", url, headers, OTHER_BODY)).status == 200
        refused_url, refused_headers, body = refused_case("tampered signature", signing_shim + path)
        assert (await send("POST", refused_url, refused_headers, body)).status == 401
    signatures += [arrived.headers["Authorization"].rsplit("=", 1)[1] for arrived in upstream.requests]

    text = log_buffer.getvalue()
    assert "translated call" in text and "rejected an AK/SK-signed request" in text  # lines were written
    for secret in (SK, OTHER_SK, SECURITY_TOKEN, *signatures):
        assert secret not in text
    assert SK not in repr(KeyPair(AK, SK))


# -- configuration ----------------------------------------------------------------------------------

def write_config(tmp_path: Path, aksk: list[dict[str, str]]) -> Path:
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "consistency-groups.yaml").write_text("consistency_groups: []\n")
    path = tmp_path / "shim.yaml"
    path.write_text(json.dumps({"upstreams": {"sdrs": "http://127.0.0.1:8777"}, "aksk": aksk}))
    return path


def test_validate_reads_the_key_pairs_from_files_and_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEST_OTHER_AK", OTHER_AK)
    monkeypatch.setenv("TEST_OTHER_SK", OTHER_SK)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "ak").write_text(AK)
    (tmp_path / "secret" / "sk").write_text(SK + "\n")
    config = write_config(tmp_path, [
        {"access_key_file": "secret/ak", "secret_key_file": "secret/sk"},  # relative to the config file
        {"access_key_env": "TEST_OTHER_AK", "secret_key_env": "TEST_OTHER_SK"},
    ])

    status = shim_main(["validate", "--config", str(config)])

    out = capsys.readouterr().out
    assert status == 0
    assert "2 AK/SK key pair(s)" in out
    assert SK not in out and OTHER_SK not in out


@pytest.mark.parametrize(("entry", "says"), [
    ({"access_key_file": "missing-ak", "secret_key_env": "TEST_SK"}, "aksk[0].access_key_file: cannot read"),
    ({"access_key_env": "TEST_AK", "secret_key_file": "empty"}, "aksk[0].secret_key_file:"),
    ({"access_key_env": "TEST_AK", "secret_key_env": "TEST_UNSET"},
     "aksk[0].secret_key_env: the environment variable TEST_UNSET is not set"),
    ({"access_key_env": "TEST_AK"}, "aksk[0]: Value error, give exactly one of secret_key_file and secret_key_env"),
    ({"access_key_env": "TEST_AK", "access_key_file": "x", "secret_key_env": "TEST_SK"},
     "give exactly one of access_key_file and access_key_env"),
    ({"access_key_env": "TEST_SK", "secret_key_env": "TEST_SK"}, "aksk[0].access_key: not an access key"),
], ids=["unreadable", "empty", "unset", "incomplete", "two-sources", "malformed"])
def test_a_bad_key_pair_is_one_line_naming_the_key_and_never_the_secret(tmp_path, monkeypatch, capsys, entry, says):
    monkeypatch.setenv("TEST_AK", AK)
    monkeypatch.setenv("TEST_SK", "sk with spaces " + SK)
    monkeypatch.delenv("TEST_UNSET", raising=False)
    (tmp_path / "empty").write_text("\n")
    config = write_config(tmp_path, [entry])

    status = shim_main(["validate", "--config", str(config)])

    err = capsys.readouterr().err
    assert status == 2
    assert says in err and err.count("\n") == 1, err
    assert SK not in err


def test_the_same_access_key_twice_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEST_AK", AK)
    monkeypatch.setenv("TEST_SK", SK)
    pair = {"access_key_env": "TEST_AK", "secret_key_env": "TEST_SK"}

    status = shim_main(["validate", "--config", str(write_config(tmp_path, [pair, pair]))])

    err = capsys.readouterr().err
    assert status == 2 and "aksk[1]: the same access key as an earlier entry" in err
    assert SK not in err


async def test_a_reload_reads_rotated_key_files(tmp_path, sdrs, legacy_upstream):
    upstream, legacy_url = legacy_upstream
    write_mappings(tmp_path / "mappings", MAPPING)
    config = tmp_path / "shim.yaml"
    config.write_text(json.dumps({"upstreams": {"sdrs": sdrs[1], "legacy": legacy_url}, "mappings": "./mappings",
                                  "aksk": [{"access_key_file": "secret/ak", "secret_key_file": "secret/sk"}]}))
    key_files(tmp_path / "secret")
    settings = load_settings(config)
    app = build_app(settings, load_mappings(settings.mappings))
    runner, port = await start_site(app, "127.0.0.1", 0)
    shim = f"http://127.0.0.1:{port}"
    try:
        before = await send("GET", *sdk_signed("GET", shim + VOLUMES_PATH))
        key_files(tmp_path / "secret", OTHER_AK, OTHER_SK)  # the Secret was rotated
        reloaded = reload_config(app[STATE], config)
        old_key = await send("GET", *sdk_signed("GET", shim + VOLUMES_PATH))
        new_key = await send("GET", *sdk_signed("GET", shim + VOLUMES_PATH, ak=OTHER_AK, sk=OTHER_SK))
    finally:
        await runner.cleanup()

    assert reloaded
    assert (before.status, old_key.status, new_key.status) == (200, 401, 200)
    assert len(upstream.requests) == 2
