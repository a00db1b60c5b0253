"""The Terraform provider's AK/SK mode through the shim: a client that signs as golangsdk does (Host
unsigned, X-Project-Id added after signing; tests/golangsdk_signer.py) and the rules of the shim's AK/SK
surface (issue 18): re-signing exactly what the client signed, the signed Host, every spelling of a
signature, the bytes held before a signature is checked.

Upstreams check what reaches them: the SDRS simulator verifies every signature (no token gets in),
and the legacy stand-in (shim.legacy_sim) sits behind a gateway of this test's own that recomputes the
signature with the test's signer, for its own Host, before it passes the request on with a token.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from multidict import CIMultiDict
from yarl import URL

from conftest import GROUP, PROJECT, RCG, ShimFactory, start_server
from golangsdk_signer import GoSigner, expected_authorization, query_pairs, signed_headers_of
from shim.legacy_sim.server import LegacySimulator
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.translate.signing import SignatureRejected, comparable_host, headers_to_sign, signature_of
from shim.web.logs import configure_logging
from terraform_flows import DrsV2Client, GoError, NotFound, TerraformFlows, Timings, go_json

AK, SK = "GOLANGSDKACCESSKEY01", "golangsdk-test-secret-0123456789abcdef"
LEGACY_TOKEN = "gateway-to-legacy-token"
GO_SIGNED = ["accept", "user-agent", "x-sdk-date"]  # and content-type on writes
TIMINGS = Timings(timeout=15)
VOLUMES = f"/v2/{PROJECT}/volumes"
RCG_PATH = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"


# -- the client: golangsdk's drs/v2 calls, signed as golangsdk signs --------------------------------

class GoAkskClient(DrsV2Client):
    """DrsV2Client in AK/SK mode: no token; each request signed by golangsdk's signer over the headers
    it holds then (Accept, User-Agent, Content-Type on writes), X-Project-Id added after signing."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, signer: GoSigner) -> None:
        super().__init__(session, base_url, PROJECT, token="")
        self.signer = signer
        self.sent: list[CIMultiDict[str]] = []

    async def request(self, method: str, url: str, ok_codes: Any, body: Any = None
                      ) -> tuple[int, CIMultiDict[str], bytes]:
        parsed = URL(url, encoded=True)
        headers = [("Accept", "application/json"), ("User-Agent", self.user_agent)]
        data = None
        if body is not None:
            headers.append(("Content-Type", "application/json"))
            data = go_json(body)
        target, lines = self.signer.sign(method, parsed.raw_path, query_pairs(parsed.raw_query_string), headers,
                                         data or b"")
        lines += [("X-Project-Id", self.project_id), ("Accept-Encoding", "gzip")]  # after signing
        self.sent.append(CIMultiDict(lines))
        async with self.session.request(method, URL(self.base_url + target, encoded=True), data=data,
                                        headers=CIMultiDict(lines), allow_redirects=False) as response:
            raw = await response.read()
            answer_headers = response.headers.copy()
        if response.status not in ok_codes:
            error = NotFound if response.status == 404 else GoError
            raise error(method, url, response.status, ok_codes, raw, answer_headers.get("X-Request-Id", ""))
        return response.status, answer_headers, raw


async def go_send(base: str, method: str, path: str, *, body: bytes = b"", query: list[tuple[str, str]] | None = None,
                  extra: list[tuple[str, str]] | None = None, signer: GoSigner | None = None,
                  now: datetime | None = None) -> tuple[int, bytes, list[tuple[str, str]]]:
    """One golangsdk-signed request; `extra` headers are added after signing (not signed)."""
    headers = [("Accept", "application/json"), ("User-Agent", "golangsdk/2.0.0")]
    if body:
        headers.append(("Content-Type", "application/json"))
    target, lines = (signer or GoSigner(AK, SK)).sign(method, path, query or [], headers, body, now)
    lines += [("X-Project-Id", PROJECT), *(extra or [])]
    return await send_lines(base, method, target, lines, body)


async def send_lines(base: str, method: str, target: str, lines: list[tuple[str, str]], body: bytes = b""
                     ) -> tuple[int, bytes, list[tuple[str, str]]]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.request(method, URL(base + target, encoded=True), data=body or None,
                                   headers=CIMultiDict(lines), allow_redirects=False) as response:
            return response.status, await response.read(), lines


# -- the legacy side: a gateway that checks signatures, in front of the legacy stand-in -------------

@dataclass
class Gateway:
    """The API gateway in front of the legacy EVS stand-in: verifies each request's signature for its
    own Host with the test's signer (401 otherwise, as the gateway answers), then passes it on with a
    token (volumes it answers itself). Records the header names each verified request had signed."""

    backend: str
    secret: str = SK
    verified: list[tuple[str, str, list[str], CIMultiDict[str]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        values = request.headers.getall("Authorization", [])
        if len(values) != 1 or values[0] != expected_authorization(
                self.secret, request.method, request.raw_path.partition("?")[0], request.rel_url.raw_query_string,
                CIMultiDict(request.headers), body):
            self.refused.append(request.raw_path)
            return web.json_response({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication"},
                                     status=401)
        self.verified.append((request.method, request.raw_path, signed_headers_of(values[0]),
                              CIMultiDict(request.headers)))
        if request.path.startswith(VOLUMES):  # the rest of EVS, which the legacy stand-in does not model
            return web.json_response({"volumes": []})
        forward = {name: value for name, value in request.headers.items()
                   if name.lower() not in ("host", "authorization", "content-length", "transfer-encoding")}
        forward["X-Auth-Token"] = LEGACY_TOKEN
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, URL(self.backend + request.raw_path, encoded=True),
                                       data=body or None, headers=forward) as answer:
                payload = await answer.read()
                kept = {name: value for name, value in answer.headers.items()
                        if name.lower() not in ("content-length", "transfer-encoding", "date", "server")}
                return web.Response(status=answer.status, body=payload, headers=kept)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass
class World:
    shim: str
    sim: SdrsSimulator
    legacy: LegacySimulator
    gateway: Gateway
    legacy_url: str  # the gateway's
    sdrs_pair_ids: list[str]


@pytest.fixture
async def make_world(make_shim: ShimFactory, monkeypatch) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    monkeypatch.setenv("TEST_GO_AK", AK)
    monkeypatch.setenv("TEST_GO_SK", SK)

    async def factory(**config: Any) -> World:
        sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.15, sync_seconds=0.1,
                                              tokens={"no-client-has-this"}, credentials={AK: SK}))
        sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=2, name="pg-migrated")
        legacy = LegacySimulator()
        legacy.add_group(PROJECT, group_id=RCG, name="stale-copy", pair_count=2)
        sim_runner, sdrs_url = await start_server(sim.app())
        legacy_runner, backend = await start_server(legacy.app())
        gateway = Gateway(backend)
        gateway_runner, legacy_url = await start_server(gateway.app())
        runners.extend((sim_runner, legacy_runner, gateway_runner))
        shim = await make_shim(
            sdrs=sdrs_url, legacy=legacy_url,
            mapping=[{"project_id": PROJECT, "replication_consistency_group_id": RCG, "protection_group_id": GROUP}],
            aksk=[{"access_key_env": "TEST_GO_AK", "secret_key_env": "TEST_GO_SK"}],
            actions={"poll_initial_seconds": 0.02, "poll_max_seconds": 0.05}, **config)
        legacy.requests.clear()
        return World(shim, sim, legacy, gateway, legacy_url, sim.pair_ids(PROJECT, GROUP))

    yield factory
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def world(make_world) -> World:
    return await make_world()


@pytest.fixture
async def go_client(world: World) -> AsyncIterator[GoAkskClient]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield GoAkskClient(session, world.shim, GoSigner(AK, SK))


def assert_sdrs_got_only_the_clients_signed_headers(world: World) -> None:
    """Every SDRS request was signed (the simulator verified it: no token gets in) over the names the
    golangsdk client signed that it carries: no host, no X-Project-Id, which the client did not sign."""
    assert world.sim.requests
    for method, path_qs, sent in world.sim.requests:
        names = signed_headers_of(sent["Authorization"])
        if method == "GET":  # no body to know: checked with the test's own signer too
            path, _, query = path_qs.partition("?")
            assert sent["Authorization"] == expected_authorization(SK, method, path, query, sent, b"")
        assert sent["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, ")
        assert set(names) <= {*GO_SIGNED, "content-type"} and "x-sdk-date" in names, names
        assert sent["X-Project-Id"] == PROJECT and "X-Auth-Token" not in sent


# -- the provider's calls ---------------------------------------------------------------------------

async def test_golangsdk_signed_reads_lists_and_every_action_of_a_mapped_group(world, go_client):
    flows = TerraformFlows(go_client, TIMINGS)
    group = await go_client.get_group(RCG)
    listed = await go_client.list_groups(limit=10)
    pairs = await go_client.list_pairs(replication_consistency_group_id=RCG)
    pair = await go_client.get_pair(world.sdrs_pair_ids[0])
    await go_client.stop(RCG)
    await flows.wait(flows.group_refresh(RCG), ["available", "stopping"], ["available"])
    await go_client.sync(RCG)
    await flows.wait(flows.group_refresh(RCG), ["available", "syncing"], ["available"])
    await go_client.reverse(RCG)
    await flows.wait(flows.group_refresh(RCG), ["available", "reversing"], ["available"])
    await go_client.failover(RCG)
    await flows.wait(flows.group_refresh(RCG), ["available", "failovering"], ["failovered"])
    await go_client.reprotect(RCG)
    await flows.wait(flows.group_refresh(RCG), ["failovered", "reprotecting"], ["available"])
    await go_client.extend(RCG, world.sdrs_pair_ids[0], 20)

    assert group["id"] == RCG and RCG in [item["id"] for item in listed]
    assert sorted(item["id"] for item in pairs) == sorted(world.sdrs_pair_ids) and pair["id"] in world.sdrs_pair_ids
    assert [call[2] for call in world.sim.action_calls] == [
        "stop-server-group", "start-server-group", "reverse-server-group", "failover-server-group",
        "start-server-group"]
    assert world.sim.state.pairs[(PROJECT, world.sdrs_pair_ids[0])].volume_size == 20
    for sent in go_client.sent:  # the client signed as golangsdk does: never host, never X-Project-Id
        assert signed_headers_of(sent["Authorization"]) in (GO_SIGNED, sorted([*GO_SIGNED, "content-type"]))
    assert_sdrs_got_only_the_clients_signed_headers(world)
    # The merged lists read the legacy side through its gateway, re-signed; nothing else went there.
    assert world.gateway.refused == [] and world.gateway.verified
    assert all(method == "GET" for method, *_ in world.gateway.verified)


async def test_golangsdk_signed_terraform_update_and_destroy_of_a_mapped_group(world, go_client):
    flows = TerraformFlows(go_client, TIMINGS)
    kept, removed = world.sdrs_pair_ids

    updated = await flows.update_group(RCG, name="pg-renamed", replication_ids=[kept])
    await flows.delete_replication(removed)
    await flows.delete_group(RCG)
    await flows.delete_replication(kept)

    assert updated is not None and (updated["name"], updated["replication_ids"]) == ("pg-renamed", [kept])
    with pytest.raises(KeyError):
        world.sim.group(PROJECT, GROUP)
    assert await flows.read_group(RCG) is None
    assert_sdrs_got_only_the_clients_signed_headers(world)
    assert world.legacy.requests == [] and world.gateway.refused == []


async def test_golangsdk_signed_terraform_lifecycle_of_an_unmapped_group_passes_through_re_signed(world, go_client):
    """Create pairs and a group, update, destroy: all passthrough, each request re-signed for the
    legacy endpoint's Host over exactly the names the client signed; the gateway verified each."""
    flows = TerraformFlows(go_client, TIMINGS)
    volumes = [[f"{n:08x}-0000-4000-8000-00000000000{k}" for k in (1, 2)] for n in (1, 2)]
    first = await flows.create_replication(volume_ids=volumes[0], priority_station="eu-de-01", name="p1")
    second = await flows.create_replication(volume_ids=volumes[1], priority_station="eu-de-01", name="p2")
    assert first is not None and second is not None
    group = await flows.create_group(replication_ids=[first["id"], second["id"]], priority_station="eu-de-01",
                                     name="still-legacy")
    assert group is not None
    updated = await flows.update_group(group["id"], name="renamed-legacy", replication_ids=[first["id"]])
    await flows.delete_group(group["id"])
    for pair in (first, second):
        await flows.delete_replication(pair["id"])

    assert updated is not None and updated["name"] == "renamed-legacy"
    assert await flows.read_group(group["id"]) is None
    assert world.gateway.refused == []
    assert len(world.gateway.verified) == len(world.legacy.requests) > 10
    for method, _, names, headers in world.gateway.verified:
        assert names == (sorted([*GO_SIGNED, "content-type"]) if method in ("POST", "PUT") else GO_SIGNED), names
        assert headers["Host"] == URL(world.legacy_url).raw_authority  # re-signed for the legacy endpoint's
        assert headers["X-Project-Id"] == PROJECT  # carried on, unsigned as the client sent it
    assert world.sim.write_calls == [] and world.sim.action_calls == []


async def test_the_sdrs_simulator_accepts_a_signature_without_host_as_the_gateway_does():
    sim = SdrsSimulator(SimulatorSettings(tokens={"no-client-has-this"}, credentials={AK: SK}))
    sim.add_protection_group(PROJECT, GROUP, status="protected", pair_count=1)
    runner, url = await start_server(sim.app())
    try:
        path = f"/v1/{PROJECT}/server-groups/{GROUP}"
        status, body, _ = await go_send(url, "GET", path)
        lowered = await go_send(url, "GET", path, signer=LowerCaseSigner(AK, SK))
    finally:
        await runner.cleanup()

    assert status == 200, body
    assert lowered[0] == 401  # only SDK-HMAC-SHA256 as the SDKs spell it


class LowerCaseSigner(GoSigner):
    """Signs correctly, then writes the algorithm in lower case."""

    def sign(self, *args: Any, **kwargs: Any) -> tuple[str, list[tuple[str, str]]]:
        target, lines = super().sign(*args, **kwargs)
        return target, [(name, value.replace("SDK-HMAC-SHA256", "sdk-hmac-sha256") if name == "Authorization"
                         else value) for name, value in lines]


# -- re-signing exactly what the client signed -------------------------------------------------------

ADDED_UNSIGNED = [("X-Security-Token", "sts-added-by-someone"), ("X-Domain-Id", "d0m41n"),
                  ("Content-Type", "application/x-added")]


@pytest.mark.parametrize("client", ["golangsdk", "huaweicloudsdkcore"])
async def test_a_header_the_client_did_not_sign_is_not_signed_for_the_next_hop(world, client):
    """A captured GET replayed with X-Security-Token, X-Domain-Id and Content-Type added: they go on
    as the client sent them, but no signature vouches for them. Each hop is signed over exactly the
    names the client signed (host among them only when the client signed it)."""
    async def signed_get(path: str) -> tuple[int, bytes, list[str]]:
        if client == "golangsdk":
            status, body, lines = await go_send(world.shim, "GET", path, extra=ADDED_UNSIGNED)
            return status, body, signed_headers_of(dict(lines)["Authorization"])
        target, headers = sdk_signed_for(URL(world.shim).raw_authority, "GET", path)
        status, body, _ = await send_lines(world.shim, "GET", target, [*headers.items(), *ADDED_UNSIGNED])
        return status, body, signed_headers_of(headers["Authorization"])

    status, body, client_signed = await signed_get(VOLUMES)
    read = await signed_get(RCG_PATH)

    assert (status, read[0]) == (200, 200), (body, read[1])
    (_, _, names, headers) = world.gateway.verified[0]
    assert names == client_signed
    assert ("host" in names) == (client == "huaweicloudsdkcore")
    assert (headers["X-Domain-Id"], headers["X-Security-Token"]) == ("d0m41n", "sts-added-by-someone")
    for _, _, sent in world.sim.requests:
        names = signed_headers_of(sent["Authorization"])
        assert set(names) <= {*client_signed, "content-type"} and "x-sdk-date" in names, names
        assert not {"x-security-token", "x-domain-id"} & set(names), names
        assert sent.get("X-Security-Token") == "sts-added-by-someone"


async def test_a_signed_header_given_twice_is_signed_with_both_values_as_golangsdk_does(world):
    """golangsdk writes one canonical line per value, sorted: the shim verifies and signs again the same
    way, so a value added to a signed header breaks the signature instead of riding along."""
    headers = [("Accept", "application/json"), ("X-Trace", "b-second"), ("X-Trace", "a-first")]
    target, lines = GoSigner(AK, SK).sign("GET", VOLUMES, [], headers)

    status, body, _ = await send_lines(world.shim, "GET", target, lines)
    added = await send_lines(world.shim, "GET", target, [*lines, ("X-Trace", "c-added")])

    assert status == 200, body
    assert added[0] == 401, added[1]
    ((_, _, names, arrived),) = world.gateway.verified
    assert "x-trace" in names and arrived.getall("X-Trace") == ["b-second", "a-first"]


# -- the signed Host --------------------------------------------------------------------------------

def sdk_signed_for(host: str, method: str, path: str, body: bytes = b"") -> tuple[str, dict[str, str]]:
    """Signed by huaweicloudsdkcore (which signs host) for `host`: the target and headers."""
    request = SdkRequest(method=method, schema="http", host=host, resource_path=path, query_params=[],
                         header_params={"Content-Type": "application/json"} if body else {}, body=body)
    signed = BasicCredentials(AK, SK, PROJECT).sign_request(request)
    assert "host" in signed_headers_of(signed.header_params["Authorization"])
    return signed.uri, {**signed.header_params, "Host": host}


@pytest.mark.parametrize("path", [VOLUMES, RCG_PATH], ids=["passthrough", "translated"])
async def test_a_signature_for_another_endpoints_host_is_refused(world, path):
    """A request captured on its way to another region's endpoint, replayed here with its own Host:
    the signature is genuine, but it was never meant for this endpoint."""
    target, headers = sdk_signed_for("evs.other-region.example.com", "GET", path)

    status, body, _ = await send_lines(world.shim, "GET", target, list(headers.items()))

    assert status == 401, body
    assert b"signed for another host" in body
    assert world.gateway.verified == [] and world.gateway.refused == [] and world.sim.requests == []


@pytest.mark.parametrize("host", ["shim", "legacy", "alias", "alias-default-port"])
async def test_a_signed_host_that_names_the_shim_or_the_legacy_endpoint_is_accepted(make_world, host):
    world = await make_world(aksk_host_aliases=["evs-shim.svc.example", "Front.Example:8443"])
    name = {"shim": URL(world.shim).raw_authority, "legacy": URL(world.legacy_url).raw_authority,
            "alias": "front.example:8443", "alias-default-port": "evs-shim.svc.example:80"}[host]
    target, headers = sdk_signed_for(name, "GET", VOLUMES)

    status, body, _ = await send_lines(world.shim, "GET", target, list(headers.items()))

    assert status == 200, body
    (_, _, names, arrived) = world.gateway.verified[-1]
    assert "host" in names and arrived["Host"] == URL(world.legacy_url).raw_authority


# -- every spelling of a signature ------------------------------------------------------------------

def forged(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value[:-1] + ("0" if value[-1] != "0" else "1") if name == "Authorization" else value)
            for name, value in lines]


@pytest.mark.parametrize("spelling", ["second header before it", "second header after it", "lower case",
                                      "mixed case", "two in one header"])
@pytest.mark.parametrize("path", [VOLUMES, RCG_PATH], ids=["passthrough", "translated"])
async def test_every_spelling_of_a_signature_is_verified_or_refused(world, spelling, path):
    target, lines = GoSigner(AK, SK).sign("GET", path, [], [("Accept", "application/json")])
    lines = forged(lines)  # a wrong signature: anything that verifies it refuses it
    auth = next(value for name, value in lines if name == "Authorization")
    rest = [(name, value) for name, value in lines if name != "Authorization"]
    headers = {
        "second header before it": [*rest, ("Authorization", "Basic dXNlcjpwYXNz"), ("Authorization", auth)],
        "second header after it": [*rest, ("Authorization", auth), ("Authorization", "Basic dXNlcjpwYXNz")],
        "lower case": [*rest, ("Authorization", auth.replace("SDK-HMAC-SHA256", "sdk-hmac-sha256"))],
        "mixed case": [*rest, ("Authorization", auth.replace("SDK-HMAC-SHA256", "Sdk-Hmac-Sha256"))],
        "two in one header": [*rest, ("Authorization", "Basic dXNlcjpwYXNz, " + auth)],
    }[spelling]

    status, body, _ = await send_lines(world.shim, "GET", target, headers + [("X-Auth-Token", "a-token")])

    assert status == 401, body
    assert world.legacy.requests == [] and world.gateway.verified == [] and world.gateway.refused == []
    assert world.sim.requests == []


async def test_a_lower_case_algorithm_is_refused_even_when_the_signature_is_right(world):
    status, body, _ = await go_send(world.shim, "GET", VOLUMES, signer=LowerCaseSigner(AK, SK))

    assert status == 401 and b"unsupported signing algorithm" in body
    assert world.gateway.verified == [] and world.gateway.refused == []


# -- bytes held before a signature is checked ---------------------------------------------------------

async def test_unverified_signed_bodies_are_bounded_across_connections(make_world):
    """Someone who knows only an access key id opens connections and sends signed bodies that are
    never finished: at most limits.unverified_signed_bytes are held for them, all together; the
    next one is refused at once (503, Retry-After) instead of being held too."""
    world = await make_world(limits={"signed_body_bytes": 1048576}, timeouts={"request_body_idle": 5})
    url = URL(world.shim)
    size = 1048576 - 1000
    held: list[asyncio.StreamWriter] = []
    try:
        for _ in range(16):  # 16 MiB (the default limit) in nearly 1 MiB bodies that never end
            reader, writer = await asyncio.open_connection(url.host, url.port)
            writer.write(stalled_signed_post(url.raw_authority, size, sent=size - 1))
            await writer.drain()
            held.append(writer)
        await asyncio.sleep(0.3)  # the shim has read what was sent
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(stalled_signed_post(url.raw_authority, size, sent=size - 1))
        await writer.drain()
        head = await asyncio.wait_for(reader.read(65536), 3)
        writer.close()
    finally:
        for writer in held:
            writer.close()

    assert head.startswith(b"HTTP/1.1 503 "), head[:200]
    assert b"Retry-After: 1" in head
    assert world.gateway.verified == [] and world.legacy.requests == []


def stalled_signed_post(host: str, size: int, sent: int) -> bytes:
    """A POST signed with a known access key and a made-up signature, announcing `size` bytes of body
    and carrying `sent` of them."""
    target, lines = GoSigner(AK, "not-the-secret").sign(
        "POST", VOLUMES, [], [("Host", host), ("Content-Type", "application/json")], b"x" * size)  # host signed too
    head = [f"POST {target} HTTP/1.1", f"Content-Length: {size}"]
    head += [f"{name}: {value}" for name, value in lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + b"x" * sent


# -- secrets ----------------------------------------------------------------------------------------

@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


async def test_no_secret_or_signature_reaches_a_log_line(world, log_buffer):
    token = [("X-Security-Token", "sts-never-log-this-token")]
    ok = await go_send(world.shim, "GET", RCG_PATH, extra=token)
    passed = await go_send(world.shim, "GET", VOLUMES, extra=token)
    refused = await send_lines(world.shim, "GET", VOLUMES, forged(ok[2]))
    target, headers = sdk_signed_for("evs.elsewhere.example", "GET", VOLUMES)
    other_host = await send_lines(world.shim, "GET", target, list(headers.items()))
    signatures = [value.rsplit("=", 1)[1] for name, value in [*ok[2], *passed[2], *refused[2], *other_host[2]]
                  if name == "Authorization"]
    signatures += [headers["Authorization"].rsplit("=", 1)[1] for *_, headers in world.gateway.verified]
    signatures += [sent["Authorization"].rsplit("=", 1)[1] for *_, sent in world.sim.requests]

    assert (ok[0], passed[0], refused[0], other_host[0]) == (200, 200, 401, 401)
    text = log_buffer.getvalue()
    assert "rejected an AK/SK-signed request" in text
    for secret in (SK, "sts-never-log-this-token", *signatures):
        assert secret not in text


def test_the_test_signer_agrees_with_the_sdk_when_host_is_signed_the_same_way():
    """The test's golangsdk signer is not the shim's module: checked against huaweicloudsdkcore over
    the same headers (host included, which huaweicloudsdkcore always signs)."""
    uri, headers = sdk_signed_for("evs.example.test", "POST", VOLUMES, b'{"a": 1}')
    expected = expected_authorization(SK, "POST", uri.partition("?")[0], "", CIMultiDict(headers), b'{"a": 1}')
    assert expected == headers["Authorization"]


# -- the rules themselves (shim/translate/signing.py, pure) -------------------------------------------

def test_the_next_hop_signs_exactly_the_clients_names_and_the_shims_own_requests_the_sdk_set():
    headers = CIMultiDict([("Host", "sdrs.example"), ("X-Sdk-Date", "20261208T000000Z"), ("Accept", "a"),
                           ("X-Project-Id", PROJECT), ("X-Security-Token", "t"), ("Content-Length", "0")])

    assert headers_to_sign(headers, ("accept", "user-agent", "x-sdk-date")) == ("accept", "x-sdk-date")
    assert headers_to_sign(headers, ("host", "accept", "content-length")) == ("accept", "host", "x-sdk-date")
    assert headers_to_sign(headers, None) == ("host", "x-project-id", "x-sdk-date", "x-security-token")


@pytest.mark.parametrize(("values", "outcome"), [
    ([], None), (["Basic dXNlcjpwYXNz"], None), (["Bearer abc"], None),
    (["SDK-HMAC-SHA256 Access=a, SignedHeaders=x-sdk-date, Signature=s"], "signature"),
    (["sdk-hmac-sha256 Access=a, SignedHeaders=x-sdk-date, Signature=s"], "signature"),
    (["Basic x, SDK-HMAC-SHA256 Access=a"], "signature"), (["Whatever signature=abc"], "signature"),
    (["Basic x", "Basic y"], "refused"), (["SDK-HMAC-SHA256 Access=a", "Basic y"], "refused"),
])
def test_which_authorization_values_are_a_signature(values, outcome):
    if outcome == "refused":
        with pytest.raises(SignatureRejected, match="more than one Authorization header"):
            signature_of(values)
    else:
        assert (signature_of(values) is not None) == (outcome == "signature")


def test_a_signed_host_is_compared_without_case_and_default_ports():
    assert comparable_host(" EVS.Example:443") == comparable_host("evs.example:80") == "evs.example"
    assert comparable_host("[::1]:8080") == "[::1]:8080" and comparable_host("evs.example:8443") != "evs.example"


@pytest.mark.parametrize("ending", ["stalls", "disconnects"])
async def test_a_signed_body_that_never_ends_gives_its_bytes_back(make_world, ending):
    """Its bytes count against limits.unverified_signed_bytes only while it is being read: after a
    stall (408) or a client that went away, the shim holds none of them."""
    world = await make_world(timeouts={"request_body_idle": 0.5})
    url = URL(world.shim)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(stalled_signed_post(url.raw_authority, 900_000, sent=500_000))
    await writer.drain()
    if ending == "stalls":
        head = await asyncio.wait_for(reader.read(65536), 5)
        assert head.startswith(b"HTTP/1.1 408 "), head[:100]
    writer.close()
    held = None
    for _ in range(100):
        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session, session.get(world.shim + "/metrics") as response:
            metrics = await response.text()
        held = next(line for line in metrics.splitlines() if line.startswith("shim_unverified_body_bytes "))
        if held.endswith(" 0.0"):
            break

    assert held == "shim_unverified_body_bytes 0.0"
