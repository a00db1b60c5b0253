"""/healthz, /readyz, /metrics, the JSON access and audit logs (no secret in any line), the bound on
concurrent translated calls and the request-header limits; over real loopback sockets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    DEFAULT_MAPPING,
    GROUP,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    UNMAPPED_RCG,
    action_url,
    call,
    raw_exchange,
    start_server,
    write_mappings,
)
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.runtime.server import start_site
from shim.simulator.faults import Fault
from shim.web.app import build_app
from shim.web.logs import configure_logging

GROUP_URL_SUFFIX = f"/server-groups/{GROUP}"
StartShim = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_shim(tmp_path: Path) -> AsyncIterator[StartShim]:
    """A shim run as `shim serve` runs it (access logger, parser limits, drain time): -> base URL."""
    runners: list[web.AppRunner] = []

    async def start(*, sdrs: str, legacy: str | None = None, **config: Any) -> str:
        mappings_dir = write_mappings(tmp_path / f"mappings{len(runners)}", DEFAULT_MAPPING)
        data = {"upstreams": {"sdrs": sdrs, "legacy": legacy}, "mappings": str(mappings_dir),
                "state": {"backend": "sqlite", "path": str(tmp_path / f"state{len(runners)}.sqlite3")}, **config}
        settings = settings_from_mapping(data, source="test", base_dir=tmp_path)
        app = build_app(settings, load_mappings(settings.mappings))
        runner, port = await start_site(app, "127.0.0.1", 0, settings=settings)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """Every log line the shim writes, at DEBUG, through its own formatter."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def log_records(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = buffer.getvalue().splitlines()
    return [json.loads(line) for line in lines]  # one JSON document per line, or this fails


async def metric_samples(shim: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = await call("GET", f"{shim}/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= sample_labels)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- management endpoints -------------------------------------------------------------------------


async def test_health_and_readiness_answer_outside_the_legacy_url_space(simulator, legacy_upstream, start_shim):
    _, sdrs = simulator
    upstream, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)

    health = await call("GET", f"{shim}/healthz")
    ready = await call("GET", f"{shim}/readyz")

    assert health.status == 200 and isinstance(health.json()["pid"], int)
    assert ready.status == 200 and ready.json()["status"] == "ready"
    assert ready.json()["mapped_groups"] == 1
    assert upstream.requests == []  # the legacy endpoint never saw them


async def test_management_routes_are_not_counted_as_legacy_traffic(simulator, legacy_upstream, start_shim):
    _, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)
    for path in ("/healthz", "/readyz", "/metrics", "/healthz"):
        assert (await call("GET", shim + path)).status == 200

    before = await metric_samples(shim)
    assert (await call("GET", f"{shim}/v2/{PROJECT}/volumes")).status == 200
    after = await metric_samples(shim)

    assert total(before, "shim_requests_total") == 0
    assert total(after, "shim_requests_total") == 1
    assert total(after, "shim_requests_total", route="passthrough", legacy_status="200", upstream_status="200") == 1


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/migration"])
async def test_other_methods_on_management_paths_are_405_never_passed_through(
    simulator, legacy_upstream, start_shim, path, method
):
    """GET only, as the README says: any other method is the shim's own 405 (with Allow), never relayed
    to the legacy endpoint and never counted as passthrough."""
    _, sdrs = simulator
    upstream, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)

    reply = await call(method, shim + path, body=b"{}")

    assert reply.status == 405, reply.body
    assert reply.headers["Allow"] == "GET, HEAD"
    assert reply.fault()[0] == "badMethod"
    assert reply.headers["X-Request-Id"] == reply.headers["X-Openstack-Request-Id"]
    assert upstream.requests == []
    assert total(await metric_samples(shim), "shim_requests_total") == 0
    assert (await call("HEAD", shim + path)).status in (200, 503)  # HEAD stays a GET without a body


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_count_routes_statuses_and_stages(simulator, legacy_upstream, start_shim):
    _, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)
    headers = {"X-Auth-Token": "token", "Content-Type": "application/json"}

    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)).status == 200
    assert (await call("POST", action_url(shim, rcg=UNMAPPED_RCG), body=REPROTECT_BODY, headers=headers)).status == 200
    assert (await call("POST", action_url(shim), body=b"not json", headers=headers)).status == 400
    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers={})).status == 401
    assert (await call("GET", f"{shim}/v2/{PROJECT}/volumes/detail?limit=5")).status == 200
    samples = await metric_samples(shim)

    # One definition: a call about a group SDRS owns is translated, whether or not SDRS was asked
    # (a bad body, a missing token); a call the legacy endpoint answers is passthrough.
    assert total(samples, "shim_requests_total", route="translated", legacy_status="200", upstream_status="200") == 1
    assert total(samples, "shim_requests_total", route="translated", legacy_status="400", upstream_status="none") == 1
    assert total(samples, "shim_requests_total", route="translated", legacy_status="401", upstream_status="none") == 1
    # An action on an unmapped group is the legacy endpoint's: relayed.
    assert total(samples, "shim_requests_total", route="passthrough", legacy_status="200", upstream_status="200") == 2
    for stage in ("read", "translate", "sdrs", "map_back", "passthrough"):
        assert total(samples, "shim_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert total(samples, "shim_stage_duration_seconds_count", stage="sdrs") >= 2  # GET group, POST action
    assert total(samples, "shim_requests_in_flight") == 0
    assert total(samples, "shim_config_generation") == 1
    assert any(name == "shim_config_info" for name, _ in samples)
    assert_bounded_labels(samples)


def assert_bounded_labels(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    """No id and no path ever becomes a label value."""
    for _, labels in samples:
        for _, value in labels:
            assert "/" not in value and PROJECT not in value and RCG not in value and GROUP not in value, value


async def test_sdrs_errors_are_counted_by_documented_code_and_unknown_codes_are_other(simulator, start_shim):
    sim, sdrs = simulator
    shim = await start_shim(sdrs=sdrs)
    url = f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
    headers = {"X-Auth-Token": "token"}
    for code in ("SDRS.0001", "SDRS.9999", "SDRS.0001"):
        sim.inject(Fault(method="GET", path_suffix=GROUP_URL_SUFFIX, status=400,
                         body={"error": {"code": code, "message": "refused"}}))
        assert (await call("GET", url, headers=headers)).status in (400, 401, 403)
    sim.inject(Fault(method="GET", path_suffix=GROUP_URL_SUFFIX, reset=True, times=None))
    assert (await call("GET", url, headers=headers)).status == 503
    sim.clear_faults()

    samples = await metric_samples(shim)

    assert total(samples, "shim_sdrs_errors_total", code="SDRS.0001") == 2
    assert total(samples, "shim_sdrs_errors_total", code="other") == 1
    # One failed read (aiohttp may repeat a GET on a dropped connection inside it).
    assert total(samples, "shim_sdrs_errors_total", code="unreachable") == 1
    assert total(samples, "shim_requests_total", route="translated", legacy_status="400", upstream_status="400") == 3
    assert total(samples, "shim_requests_total", route="translated", legacy_status="503",
                 upstream_status="unreachable") == 1
    assert_bounded_labels(samples)


# -- limits ---------------------------------------------------------------------------------------


async def test_translated_calls_over_the_limit_get_503_without_reaching_sdrs(simulator, start_shim):
    sim, sdrs = simulator
    shim = await start_shim(sdrs=sdrs, limits={"max_concurrent_translated": 2})
    url = f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
    headers = {"X-Auth-Token": "token"}
    sim.inject(Fault(method="GET", path_suffix=GROUP_URL_SUFFIX, delay=0.5, times=2))

    held = [asyncio.create_task(call("GET", url, headers=headers)) for _ in range(2)]
    while sum(path.endswith(GROUP_URL_SUFFIX) for _, path, _ in sim.requests) < 2:
        await asyncio.sleep(0.01)
    during = await metric_samples(shim)
    seen_by_sdrs = len(sim.requests)
    refused = await call("GET", url, headers=headers)
    assert len(sim.requests) == seen_by_sdrs  # SDRS was not contacted for the refused call

    assert refused.status == 503
    assert refused.fault()[0] == "serviceUnavailable"
    assert refused.headers["Retry-After"] == "1"
    assert [reply.status for reply in await asyncio.gather(*held)] == [200, 200]
    assert total(during, "shim_translated_in_flight") == 2
    assert total(during, "shim_requests_in_flight") == 2
    assert (await call("GET", url, headers=headers)).status == 200  # the slots were given back
    after = await metric_samples(shim)
    assert total(after, "shim_translated_rejected_total") == 1
    assert total(after, "shim_translated_in_flight") == 0
    assert total(after, "shim_requests_total", route="translated", legacy_status="503", upstream_status="none") == 1


@pytest.mark.parametrize("request_bytes", [
    b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim\r\nX-Auth-Token: " + b"t" * 3000 + b"\r\n\r\n",
    b"GET /v2/p/volumes?" + b"q" * 3000 + b" HTTP/1.1\r\nHost: shim\r\n\r\n",
    b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(40)) + b"\r\n",
], ids=["header-line", "request-line", "header-count"])
async def test_requests_over_the_header_limits_get_a_legacy_400_not_a_traceback(
    legacy_upstream, start_shim, log_buffer, request_bytes
):
    upstream, legacy = legacy_upstream
    shim = await start_shim(sdrs="http://127.0.0.1:9", legacy=legacy,
                            limits={"max_line_size": 2048, "max_field_size": 2048, "max_headers": 32})

    status, headers, body = await raw_exchange(shim, request_bytes)

    # aiohttp's parser refuses it before any handler runs; the shim's protocol answers in the legacy envelope.
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) == {"badRequest"}
    assert b"Traceback" not in body and b"File \"" not in body and b"ttt" not in body and b"qqq" not in body
    assert upstream.requests == []
    records = log_records(log_buffer)
    assert not any("exception" in record for record in records)
    (rejected,) = [record for record in records if record["message"] == "rejected a malformed HTTP request"]
    assert rejected["level"] == "warning"
    assert any(record["message"] == "access" and record["status"] == 400 for record in records)


async def test_requests_within_the_header_limits_pass(legacy_upstream, start_shim):
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs="http://127.0.0.1:9", legacy=legacy, limits={"max_field_size": 4096})
    status, _, _ = await raw_exchange(
        shim, b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim\r\nConnection: close\r\nX-Big: " + b"v" * 3000 + b"\r\n\r\n")
    assert status == 200


# -- logs -----------------------------------------------------------------------------------------

SECRET_TOKEN = "tok-7f3c9a-never-log-me"
SECRET_SECURITY_TOKEN = "sectok-4b1d2e-never-log-me"
SECRET_ACCESS_KEY = "AKNEVERLOGME7Q2Z"
SECRET_SIGNATURE = "9a8b7c6d5e4f30211f2e3d4c5b6a798801234567"
SIGNED = (f"SDK-HMAC-SHA256 Access={SECRET_ACCESS_KEY}, SignedHeaders=content-type;host;x-sdk-date, "
          f"Signature={SECRET_SIGNATURE}")
SECRETS = (SECRET_TOKEN, SECRET_SECURITY_TOKEN, SECRET_ACCESS_KEY, SECRET_SIGNATURE)


def secret_headers(request_id: str, *, token: bool = True) -> dict[str, str]:
    headers = {"X-Security-Token": SECRET_SECURITY_TOKEN, "Authorization": SIGNED,
               "Content-Type": "application/json", "X-Openstack-Request-Id": request_id}
    if token:
        headers["X-Auth-Token"] = SECRET_TOKEN
    return headers


async def test_no_credential_reaches_any_log_line_at_debug(simulator, legacy_upstream, start_shim, log_buffer):
    sim, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)
    unreachable_legacy = await start_shim(sdrs=sdrs, legacy=f"http://127.0.0.1:{closed_port()}")
    group_url = f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"

    async def send(method: str, url: str, request_id: str, *, token: bool = True, body: bytes | None = None) -> int:
        return (await call(method, url, headers=secret_headers(request_id, token=token), body=body)).status

    statuses = {
        "req-ok": await send("POST", action_url(shim), "req-ok", body=REPROTECT_BODY),
        "req-signed": await send("POST", action_url(shim), "req-signed", token=False, body=REPROTECT_BODY),
        "req-badbody": await send("POST", action_url(shim), "req-badbody", body=b'{"os-reprotect":'),
        "req-pass": await send("GET", f"{shim}/v2/{PROJECT}/volumes?marker=m1", "req-pass"),
        "req-pass-down": await send("GET", f"{unreachable_legacy}/v2/{PROJECT}/volumes", "req-pass-down"),
    }
    sim.inject(Fault(method="GET", path_suffix=GROUP_URL_SUFFIX, status=401,
                     body={"error": {"code": "SDRS.0002", "message": f"bad token {SECRET_TOKEN}"}}))
    statuses["req-sdrs-401"] = await send("GET", group_url, "req-sdrs-401")
    sim.inject(Fault(method="GET", path_suffix=GROUP_URL_SUFFIX, reset=True, times=None))
    statuses["req-sdrs-down"] = await send("GET", group_url, "req-sdrs-down")
    sim.clear_faults()
    oversized = (f"GET /v2/{PROJECT}/volumes HTTP/1.1\r\nHost: shim\r\nX-Auth-Token: {SECRET_TOKEN}"
                 + "x" * 9000 + "\r\n\r\n").encode()
    statuses["oversized"], _, _ = await raw_exchange(shim, oversized)
    statuses["probe"] = await send("GET", f"{shim}/healthz", "probe")

    assert statuses == {"req-ok": 200, "req-signed": 401, "req-badbody": 400, "req-pass": 200,
                        "req-pass-down": 503, "req-sdrs-401": 401, "req-sdrs-down": 503, "oversized": 400,
                        "probe": 200}
    text = log_buffer.getvalue()
    for secret in SECRETS:
        assert secret not in text
    records = log_records(log_buffer)
    access = {record["request_id"]: record for record in records if record["message"] == "access"}
    assert set(statuses) - {"oversized"} <= set(access)  # every request was logged: the check means something
    assert access["probe"]["level"] == "debug"  # DEBUG lines were being written


async def test_access_and_audit_lines(simulator, legacy_upstream, start_shim, log_buffer):
    sim, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)
    headers = {"X-Auth-Token": "token", "Content-Type": "application/json", "X-Openstack-Request-Id": "req-audit-1"}

    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)).status == 200
    assert (await call("GET", f"{shim}/v2/{PROJECT}/volumes?marker=abc&limit=2",
                       headers={"X-Request-Id": "req-pass-1"})).status == 200

    records = log_records(log_buffer)
    (audit,) = [record for record in records if record["logger"] == "shim.audit"]
    assert len(sim.action_calls) == 1
    assert audit["request_id"] == "req-audit-1"
    assert (audit["project_id"], audit["rcg_id"], audit["protection_group_id"]) == (PROJECT, RCG, GROUP)
    assert (audit["legacy_status"], audit["sdrs_status"]) == ("200", 200)
    assert audit["sdrs_code"] is None
    assert len(audit["job_ids"]) == 1 and audit["job_ids"][0]
    assert audit["duration_ms"] >= 0
    access = {record["request_id"]: record for record in records if record["message"] == "access"}
    assert access["req-pass-1"]["path"] == f"/v2/{PROJECT}/volumes"  # no query string
    assert (access["req-pass-1"]["method"], access["req-pass-1"]["status"]) == ("GET", 200)
    assert access["req-pass-1"]["route"] == "passthrough" and access["req-audit-1"]["route"] == "translated"
    assert all(isinstance(record["duration_ms"], float | int) for record in access.values())


@pytest.mark.parametrize("upstream_sets", [("X-Request-Id",), ("X-Openstack-Request-Id",)])
async def test_a_passthrough_answer_carries_one_request_id_and_the_log_has_both(
    simulator, start_shim, log_buffer, upstream_sets
):
    """A legacy endpoint that sets its own request id in one header: the client reads that one id in
    both headers, and the access line names it beside the shim's own."""
    async def own_id(request: web.Request) -> web.Response:
        return web.json_response({}, headers={name: "req-legacy-own-7" for name in upstream_sets})

    app = web.Application()
    app.router.add_get("/{tail:.*}", own_id)
    runner, legacy = await start_server(app)
    try:
        _, sdrs = simulator
        shim = await start_shim(sdrs=sdrs, legacy=legacy)
        reply = await call("GET", f"{shim}/v2/{PROJECT}/volumes", headers={"X-Request-Id": "req-client-5"})
    finally:
        await runner.cleanup()

    assert reply.status == 200
    assert reply.headers.getall("X-Request-Id") == reply.headers.getall("X-Openstack-Request-Id") == [
        "req-legacy-own-7"]
    (access,) = [record for record in log_records(log_buffer) if record["message"] == "access"]
    assert (access["request_id"], access["upstream_request_id"]) == ("req-client-5", "req-legacy-own-7")


async def test_an_answer_without_an_upstream_id_logs_none(simulator, legacy_upstream, start_shim, log_buffer):
    _, sdrs = simulator
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs=sdrs, legacy=legacy)
    reply = await call("GET", f"{shim}/v2/{PROJECT}/volumes", headers={"X-Request-Id": "req-client-6"})

    assert reply.headers["X-Request-Id"] == reply.headers["X-Openstack-Request-Id"] == "req-client-6"
    (access,) = [record for record in log_records(log_buffer) if record["message"] == "access"]
    assert access["request_id"] == "req-client-6" and "upstream_request_id" not in access


async def test_an_sdrs_refusal_is_audited_with_its_code(simulator, start_shim, log_buffer):
    sim, sdrs = simulator
    shim = await start_shim(sdrs=sdrs)
    sim.inject(Fault(method="POST", path_suffix="/action", status=400,
                     body={"error": {"code": "SDRS.1013", "message": "The protection group does not exist."}}))
    headers = {"X-Auth-Token": "token", "Content-Type": "application/json", "X-Request-Id": "req-refused"}

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)

    (audit,) = [record for record in log_records(log_buffer) if record["logger"] == "shim.audit"]
    assert audit["legacy_status"] == str(reply.status) == "404"
    assert (audit["sdrs_status"], audit["sdrs_code"]) == (400, "SDRS.1013")
    assert audit["job_ids"] == []


async def test_the_requests_own_token_is_redacted_wherever_it_appears(legacy_upstream, start_shim, log_buffer):
    """A client that pastes its token into the URL: the access line (and the warning about the
    unreachable legacy endpoint) carry the path, and must not carry the token."""
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs="http://127.0.0.1:9", legacy=legacy)
    unreachable = await start_shim(sdrs="http://127.0.0.1:9", legacy=f"http://127.0.0.1:{closed_port()}")
    headers = {"X-Auth-Token": SECRET_TOKEN, "X-Request-Id": "req-own-token"}

    assert (await call("GET", f"{shim}/v2/{SECRET_TOKEN}/volumes", headers=headers)).status == 200
    assert (await call("GET", f"{unreachable}/v2/{SECRET_TOKEN}/volumes", headers=headers)).status == 503

    text = log_buffer.getvalue()
    assert SECRET_TOKEN not in text
    paths = [record["path"] for record in log_records(log_buffer) if record["message"] == "access"]
    assert paths == ["/v2/[REDACTED]/volumes"] * 2
    assert "GET /v2/[REDACTED]/volumes" in text  # the warning line, redacted too


async def test_a_pki_token_is_redacted_whole_dashes_included(legacy_upstream, start_shim, log_buffer):
    """Keystone PKI tokens are base64 with `/` written as `-`: the pattern runs across the dashes."""
    _, legacy = legacy_upstream
    shim = await start_shim(sdrs="http://127.0.0.1:9", legacy=legacy)
    pki = "MIIBxQYJKoZIhvcNAQcCoIIBtjCCAbICAQExDTALBglghkgBZQMEAgEwggEP-never-log-me-" + "Ab12-" * 8

    assert (await call("GET", f"{shim}/v2/{pki}/volumes")).status == 200

    text = log_buffer.getvalue()
    assert "never-log-me" not in text and "Ab12" not in text
    (access,) = [record for record in log_records(log_buffer) if record["message"] == "access"]
    assert access["path"] == "/v2/[REDACTED]/volumes"


UPSTREAM_SECRET = "upstream-session-secret-0f9e8d"
MALFORMED_ANSWERS = [
    b"HTTP/1.1 200 OK\r\nX-Echo " + UPSTREAM_SECRET.encode() + b"\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 2x0 " + UPSTREAM_SECRET.encode() + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, " + UPSTREAM_SECRET.encode() + b"\r\n\r\n{}",
]


@pytest.fixture
async def malformed_peer() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """A loopback server that answers every request with the given malformed bytes; -> its URL."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("answer", MALFORMED_ANSWERS, ids=["header", "status-line", "content-length"])
async def test_bytes_quoted_from_an_upstreams_malformed_answer_never_reach_a_log_line(
    malformed_peer, start_shim, log_buffer, answer
):
    """A parser's error may quote the offending bytes; the shim logs the error's kind."""
    peer = await malformed_peer(answer)
    through_legacy = await start_shim(sdrs="http://127.0.0.1:9", legacy=peer)
    through_sdrs = await start_shim(sdrs=peer)
    group = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"

    assert (await call("GET", f"{through_legacy}/v2/{PROJECT}/volumes")).status == 502
    assert (await call("GET", through_sdrs + group, headers={"X-Auth-Token": "token"})).status == 503

    text = log_buffer.getvalue()
    assert UPSTREAM_SECRET not in text
    records = log_records(log_buffer)
    # Both hops parse answers with httptools (shim/upstreams/http1.py): its error's kind, never its bytes.
    assert any(record["logger"] == "shim.passthrough" and "MalformedAnswer" in record["message"]
               for record in records)
    (audit,) = [record for record in records if record["logger"] == "shim.audit"]
    assert audit["sdrs_status"] == "unreachable" and "malformed answer: HttpParser" in audit["sdrs_error"]


async def test_text_log_lines_are_redacted_as_the_json_ones(simulator, legacy_upstream, start_shim):
    sim, sdrs = simulator
    _, legacy = legacy_upstream
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer, log_format="text")
    try:
        shim = await start_shim(sdrs=sdrs, legacy=legacy, log_format="text")
        headers = secret_headers("req-text")
        assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)).status == 200
        assert (await call("GET", f"{shim}/v2/{SECRET_TOKEN}/volumes", headers=headers)).status == 200
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    lines = buffer.getvalue().splitlines()
    assert any(" INFO    shim.audit: translated call " in line and " request_id=req-text " in line for line in lines)
    assert any(" shim.access: access " in line and " path=/v2/[REDACTED]/volumes " in line for line in lines)
    assert not any(line.startswith("{") for line in lines)
    for secret in SECRETS:
        assert secret not in buffer.getvalue()


# -- upstream health ------------------------------------------------------------------------------


async def test_an_unreachable_upstream_is_a_warning_and_a_metric_not_a_readiness_failure(
    simulator, legacy_upstream, start_shim, log_buffer
):
    sim, sdrs = simulator
    _, legacy = legacy_upstream
    down = await start_shim(sdrs=f"http://127.0.0.1:{closed_port()}", legacy=f"http://127.0.0.1:{closed_port()}")
    up = await start_shim(sdrs=sdrs, legacy=legacy)
    group = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"
    headers = {"X-Auth-Token": "token", "X-Request-Id": "req-sdrs-down"}

    assert (await call("GET", down + group, headers=headers)).status == 503
    assert (await call("GET", f"{down}/v2/{PROJECT}/volumes")).status == 503
    assert (await call("GET", up + group, headers={"X-Auth-Token": "token"})).status == 200
    assert (await call("GET", f"{up}/v2/{PROJECT}/volumes")).status == 200

    warnings = [record for record in log_records(log_buffer) if record["logger"] == "shim.sdrs"]
    assert {record["level"] for record in warnings} == {"warning"}  # the group and its pairs, read together
    assert {record["request_id"] for record in warnings} == {"req-sdrs-down"}
    assert any(record["message"].startswith("SDRS unreachable while trying to read the protection group")
               for record in warnings)
    down_samples, up_samples = await metric_samples(down), await metric_samples(up)
    assert total(down_samples, "shim_upstream_up", upstream="sdrs") == 0
    assert total(down_samples, "shim_upstream_up", upstream="legacy") == 0
    assert total(down_samples, "shim_upstream_failures_total", upstream="sdrs", kind="unreachable") >= 1
    assert total(down_samples, "shim_upstream_failures_total", upstream="legacy", kind="unreachable") == 1
    assert total(up_samples, "shim_upstream_up", upstream="sdrs") == 1
    assert total(up_samples, "shim_upstream_up", upstream="legacy") == 1
    assert (await call("GET", down + "/readyz")).status == 200  # readiness is about the shim itself
    assert_bounded_labels(down_samples)
