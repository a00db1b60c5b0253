"""OpenTelemetry tracing (README, Operations, Tracing), against a real OTLP/HTTP receiver: an aiohttp
server on loopback that decodes what the shim exports with opentelemetry-proto, as a collector does.

The shim runs for real (its app on loopback, or `shim serve` as a process) between the SDRS simulator
and the legacy stand-in, which record the headers they receive."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from conftest import GO_HEADERS, GROUP, PROJECT, RCG, REPROTECT_BODY, TOKEN, action_url, call, start_server
from processes import Spawn, spawner, write_config
from shim.legacy_sim import LegacySimulator

ROOT = Path(__file__).resolve().parent.parent
SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@dataclass
class ExportedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status: int


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, which) if which else None


@dataclass
class Collector:
    """An OTLP/HTTP traces receiver: POST /v1/traces, protobuf bodies, decoded as they arrive."""

    spans: list[ExportedSpan] = field(default_factory=list)
    posts: list[dict[str, str]] = field(default_factory=list)  # each export's headers
    url: str = ""

    async def receive(self, request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        self.posts.append(dict(request.headers))
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ExportedSpan(
                        span.name, span.kind, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                        {kv.key: _value(kv.value) for kv in span.attributes}, resource, span.status.code))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def wait_for(self, predicate: Callable[[list[ExportedSpan]], bool], seconds: float = 15) -> None:
        for _ in range(int(seconds * 50)):
            if predicate(self.spans):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the collector did not get the expected spans; it got: {self.spans}")

    def of_trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    receiver = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.receive)
    runner, receiver.url = await start_server(app)
    yield receiver
    await runner.cleanup()


@pytest.fixture
async def legacy_sim() -> AsyncIterator[tuple[LegacySimulator, str]]:
    sim = LegacySimulator()
    runner, url = await start_server(sim.app())
    yield sim, url
    await runner.cleanup()


def tracing_on(collector: Collector, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "endpoint": collector.url + "/v1/traces", "export_interval_seconds": 0.05, **extra}


def new_traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, parent span id) of a sampled client span."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def traceparent_ids(value: str) -> tuple[str, str]:
    version, trace_id, parent_id, flags = value.split("-")
    assert version == "00" and int(flags, 16) & 1, value  # sampled (and, for a trace the shim starts, random)
    return trace_id, parent_id


def _no_secret_in(spans: list[ExportedSpan], secret: str) -> None:
    for span in spans:
        for key, value in {**span.attributes, **span.resource}.items():
            assert secret not in json.dumps(value), (span.name, key, value)
            assert not any(word in key.lower() for word in ("token", "authorization", "signature", "cookie")), key


async def test_a_reprotect_is_one_trace_from_the_client_through_every_sdrs_exchange(simulator, make_shim, collector):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, tracing=tracing_on(collector), actions={"completion": "confirmed"})
    traceparent, trace_id, client_span = new_traceparent()

    reply = await call("POST", action_url(shim), body=REPROTECT_BODY,
                       headers={**GO_HEADERS, "traceparent": traceparent, "tracestate": "vendor=1"})

    assert reply.status == 200, reply.body
    await collector.wait_for(lambda spans: any(s.kind == SERVER and s.trace_id == trace_id for s in spans))
    spans = collector.of_trace(trace_id)
    (server,) = [span for span in spans if span.kind == SERVER]
    assert server.parent_id == client_span  # the client's span is its parent
    assert server.name == "POST /v2/{project_id}/os-vendor-replication-consistency-groups/{rcg_id}/action"
    assert server.attributes["shim.route"] == "translated"
    assert server.attributes["shim.rcg_id"] == RCG
    assert server.attributes["shim.protection_group_id"] == GROUP
    assert server.attributes["shim.project_id"] == PROJECT
    assert server.attributes["shim.action"] == "os-reprotect-replication-consistency-group"
    assert server.attributes["http.response.status_code"] == 200
    (job_id,) = server.attributes["shim.job_ids"]
    assert server.resource["service.name"] == "evs-sdrs-shim"

    exchanges = [span for span in spans if span.kind == CLIENT]
    assert {span.name for span in exchanges} == {"sdrs GET", "sdrs POST"}
    assert all(span.parent_id == server.span_id for span in exchanges)
    (post,) = [span for span in exchanges if span.name == "sdrs POST"]
    assert post.attributes["sdrs.job_id"] == job_id  # the job SDRS handed out
    assert post.attributes["sdrs.server_group_id"] == GROUP
    assert post.attributes["http.response.status_code"] == 200
    polls = [span for span in exchanges if span.attributes.get("url.path") == f"/v1/{PROJECT}/jobs/{job_id}"]
    assert polls and all(span.attributes["sdrs.job_id"] == job_id for span in polls)  # the confirmation's

    stored = [span for span in spans if span.kind == INTERNAL]
    assert {"store acquire", "store release"} <= {span.name for span in stored}
    assert all(span.parent_id == server.span_id for span in stored)
    (acquire,) = [span for span in stored if span.name == "store acquire"]
    assert acquire.attributes["db.system.name"] == "sqlite" and acquire.attributes["shim.store.acquired"] is True

    # SDRS received each exchange's own context: the client's trace, the exchange's span as parent.
    received = [traceparent_ids(headers["traceparent"]) for _, _, headers in sim.requests]
    assert len(received) == len(exchanges)
    assert sorted(parent for _, parent in received) == sorted(span.span_id for span in exchanges)
    assert all(trace == trace_id for trace, _ in received)
    assert all(headers.get("tracestate") == "vendor=1" for _, _, headers in sim.requests)
    _no_secret_in(spans, TOKEN)


async def test_a_passthrough_call_carries_its_trace_to_the_legacy_endpoint(simulator, legacy_sim, make_shim,
                                                                          collector):
    _, sdrs_url = simulator
    legacy, legacy_url = legacy_sim
    group = legacy.add_group(PROJECT)
    shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url, tracing=tracing_on(collector))
    traceparent, trace_id, client_span = new_traceparent()

    reply = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{group.id}",
                       headers={**GO_HEADERS, "traceparent": traceparent})
    pasted = await call("GET", f"{shim}/v2/{PROJECT}/volumes/{TOKEN}?token={TOKEN}",
                        headers={**GO_HEADERS, "traceparent": traceparent})

    assert reply.status == 200, reply.body
    assert pasted.status != 200 or pasted.body
    await collector.wait_for(lambda spans: len([s for s in spans if s.trace_id == trace_id and s.kind == SERVER]) == 2)
    spans = collector.of_trace(trace_id)
    servers = [span for span in spans if span.kind == SERVER]
    assert all(span.parent_id == client_span and span.attributes["shim.route"] == "passthrough" for span in servers)
    assert {span.name for span in servers} == {"GET /v2/{project_id}/os-vendor-replication-consistency-groups/{rcg_id}",
                                               "GET"}
    legs = [span for span in spans if span.kind == CLIENT]
    assert sorted(span.parent_id for span in legs) == sorted(span.span_id for span in servers)
    assert all(span.name == "legacy GET" and span.attributes["server.address"] == "127.0.0.1" for span in legs)
    assert not [span for span in spans if span.name.startswith("sdrs")]

    # The legacy endpoint got the client's trace with the shim's legacy span as its parent.
    received = [traceparent_ids(request.headers["traceparent"]) for request in legacy.requests]
    assert sorted(parent for _, parent in received) == sorted(span.span_id for span in legs)
    assert all(trace == trace_id for trace, _ in received)
    assert all(len(request.headers.getall("traceparent")) == 1 for request in legacy.requests)
    paths = [span.attributes["url.path"] for span in servers]
    assert f"/v2/{PROJECT}/volumes/[REDACTED]" in paths  # the token pasted into the URL, redacted
    _no_secret_in(spans, TOKEN)


async def test_without_a_client_traceparent_the_shim_starts_the_trace(simulator, make_shim, collector):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, tracing=tracing_on(collector, service_name="shim-a"))

    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)).status == 200

    await collector.wait_for(lambda spans: any(s.kind == SERVER for s in spans))
    (server,) = [span for span in collector.spans if span.kind == SERVER]
    assert server.parent_id == "" and server.resource["service.name"] == "shim-a"
    received = {traceparent_ids(headers["traceparent"])[0] for _, _, headers in sim.requests}
    assert received == {server.trace_id}


async def test_sample_ratio_zero_keeps_only_the_traces_clients_sampled(simulator, make_shim, collector):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, tracing=tracing_on(collector, sample_ratio=0))
    unsampled = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}",
                           headers=GO_HEADERS)
    traceparent, trace_id, _ = new_traceparent()
    sampled = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}",
                         headers={**GO_HEADERS, "traceparent": traceparent})

    assert unsampled.status == sampled.status == 200
    await collector.wait_for(lambda spans: any(s.kind == SERVER for s in spans))
    await asyncio.sleep(0.3)  # a batch of the unsampled trace would have left by now
    assert {span.trace_id for span in collector.spans} == {trace_id}
    # The unsampled trace still travels on, marked as such.
    sampled_flags = [int(headers["traceparent"].rsplit("-", 1)[1], 16) & 1 for _, _, headers in sim.requests]
    half = len(sampled_flags) // 2  # each read made the same SDRS exchanges, one read after the other
    assert half and sampled_flags == [0] * half + [1] * half


async def test_with_tracing_off_the_client_context_travels_on_unchanged(simulator, legacy_sim, make_shim, collector):
    sim, sdrs_url = simulator
    legacy, legacy_url = legacy_sim
    group = legacy.add_group(PROJECT)
    shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url,
                           tracing={"enabled": False, "endpoint": collector.url + "/v1/traces"})
    traceparent, _, _ = new_traceparent()
    headers = {**GO_HEADERS, "traceparent": traceparent, "tracestate": "vendor=1"}

    assert (await call("POST", action_url(shim), body=REPROTECT_BODY, headers=headers)).status == 200
    assert (await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{group.id}",
                       headers=headers)).status == 200
    bad = await call("POST", action_url(shim), body=REPROTECT_BODY,
                     headers={**GO_HEADERS, "traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})

    assert bad.status == 409  # already reprotected: the call went through to SDRS all the same
    sdrs_seen = [headers.get("traceparent") for _, _, headers in sim.requests]
    assert sdrs_seen[:2] == [traceparent, traceparent]
    assert all(value is None for value in sdrs_seen[2:])  # an invalid traceparent goes nowhere
    assert [request.headers.get("traceparent") for request in legacy.requests] == [traceparent]
    assert [request.headers.get("tracestate") for request in legacy.requests] == ["vendor=1"]
    await asyncio.sleep(0.2)
    assert collector.posts == []  # nothing exported


async def test_a_collector_that_is_down_costs_no_request(simulator, make_shim, unused_tcp_port):
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, tracing={"enabled": True, "export_interval_seconds": 0.01,
                                                    "export_timeout_seconds": 0.5,
                                                    "endpoint": f"http://127.0.0.1:{unused_tcp_port}/v1/traces"})
    started = asyncio.get_running_loop().time()

    replies = [await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}",
                          headers=GO_HEADERS) for _ in range(5)]
    replies.append(await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS))

    assert [reply.status for reply in replies] == [200] * 6
    assert asyncio.get_running_loop().time() - started < 5  # no request waited for an export
    assert sim.action_calls == [(PROJECT, GROUP, "start-server-group")]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    async for start in spawner():
        yield start


async def test_log_lines_name_the_trace_and_the_shims_span(tmp_path, simulator, collector, spawn):
    """`shim serve`: the access and audit lines carry the trace id and the server span's id; spans still
    buffered at SIGTERM are exported before the process exits."""
    _, sdrs_url = simulator
    shim = await spawn(write_config(tmp_path, sdrs_url, None,
                                    tracing=tracing_on(collector, export_interval_seconds=60)))
    traceparent, trace_id, _ = new_traceparent()

    reply = await call("POST", action_url(shim.url), body=REPROTECT_BODY,
                       headers={**GO_HEADERS, "traceparent": traceparent})
    probe = await call("GET", f"{shim.url}/healthz")

    assert reply.status == probe.status == 200
    access, audit = [await shim.wait_for(lambda r, m=m: r.get("message") == m) for m in ("access", "translated call")]
    shim.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(shim.proc.wait(), 30) == 0
    await collector.wait_for(lambda spans: any(s.kind == SERVER for s in spans), seconds=5)  # flushed at exit
    (server,) = [span for span in collector.spans if span.kind == SERVER]
    assert server.trace_id == trace_id
    for (line,) in (access, audit):
        assert line["trace_id"] == trace_id and line["span_id"] == server.span_id, line
    assert all("trace_id" not in record for record in shim.records if record.get("path") == "/healthz")


async def test_with_tracing_off_log_lines_name_the_clients_trace(tmp_path, simulator, spawn):
    _, sdrs_url = simulator
    shim = await spawn(write_config(tmp_path, sdrs_url, None))
    traceparent, trace_id, _ = new_traceparent()

    reply = await call("POST", action_url(shim.url), body=REPROTECT_BODY,
                       headers={**GO_HEADERS, "traceparent": traceparent, "X-Request-Id": "traced"})
    other = await call("POST", action_url(shim.url), body=REPROTECT_BODY,
                       headers={**GO_HEADERS, "X-Request-Id": "untraced"})

    assert reply.status == 200 and other.status == 409
    lines = await shim.wait_for(lambda r: r.get("message") in ("access", "translated call"), count=4)
    traced = [line for line in lines if line["request_id"] == "traced"]
    untraced = [line for line in lines if line["request_id"] == "untraced"]
    assert len(traced) == len(untraced) == 2
    assert all(line["trace_id"] == trace_id and "span_id" not in line for line in traced)
    assert all("trace_id" not in line and "span_id" not in line for line in untraced)


OFF_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {tests!r})
import aiohttp
from conftest import GO_HEADERS, REPROTECT_BODY, action_url, start_server, write_mappings, DEFAULT_MAPPING
from pathlib import Path
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.web.app import build_app

async def main():
    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2))
    sim.add_protection_group({project!r}, {group!r}, status="failed-over", pair_count=2)
    sdrs_runner, sdrs = await start_server(sim.app())
    tmp = Path({tmp!r})
    data = {{"upstreams": {{"sdrs": sdrs}}, "mappings": str(write_mappings(tmp / "m", DEFAULT_MAPPING)),
            "state": {{"backend": "sqlite", "path": str(tmp / "s.sqlite3")}}}}
    runner, shim = await start_server(build_app(settings_from_mapping(data, source="t", base_dir=tmp),
                                                load_mappings(tmp / "m")))
    async with aiohttp.ClientSession() as session:
        headers = {{**GO_HEADERS, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}}
        async with session.post(action_url(shim), data=REPROTECT_BODY, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
    await runner.cleanup()
    await sdrs_runner.cleanup()
    print(json.dumps(sorted(name for name in sys.modules if name.startswith("opentelemetry"))))

asyncio.run(main())
"""


def test_with_tracing_off_opentelemetry_is_never_imported(tmp_path):
    """Off costs nothing of OpenTelemetry's: a shim that served a traced client's reprotect has not
    even imported it (the `tracing` extra installed or not)."""
    script = OFF_SCRIPT.format(tests=str(ROOT / "tests"), project=PROJECT, group=GROUP, tmp=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_validate_names_the_missing_tracing_extra(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9", None, tracing={"enabled": True})
    hide = ("import sys; sys.modules['opentelemetry.sdk.trace'] = None; from shim.cli import main; "
            f"sys.exit(main(['validate', '--config', {str(config)!r}]))")
    missing = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    present = subprocess.run([sys.executable, "-m", "shim", "validate", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert missing.returncode == 2, missing.stderr
    assert "tracing.enabled" in missing.stderr and "evs-sdrs-shim[tracing]" in missing.stderr
    assert present.returncode == 0, present.stderr


# -- AK/SK-signed clients: the trace context goes on without breaking a signature --------------------

@pytest.fixture
async def signed_world(tmp_path):
    from test_aksk import AK, GROUP_ID, SK, SigCheckingLegacy

    from shim.simulator import SdrsSimulator, SimulatorSettings
    from shim.translate.signing import KeyPair

    sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.05, job_run_seconds=0.2, tokens={"no-client-has-this"},
                                          credentials={AK: SK}))
    sim.add_protection_group(PROJECT, GROUP_ID, status="failed-over", pair_count=1)
    legacy = SigCheckingLegacy(KeyPair(AK, SK))
    runners = [await start_server(sim.app()), await start_server(legacy.app())]
    yield sim, runners[0][1], legacy, runners[1][1]
    for runner, _ in runners:
        await runner.cleanup()


@pytest.mark.parametrize("shim_has_the_key", [True, False])
async def test_signed_calls_stay_valid_on_both_hops(tmp_path, make_shim, collector, signed_world, shim_has_the_key):
    """A client that signs its `traceparent`: re-signed by the shim (which holds its key pair), each hop
    gets the shim's span as parent; passed on under the client's own signature, the legacy endpoint
    gets the client's traceparent (replacing it would break the signature)."""
    from test_aksk import ACTION_PATH, GROUP_ID, MAPPING, VOLUMES_PATH, key_files, sdk_signed

    sim, sdrs_url, legacy, legacy_url = signed_world
    shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url, mapping=MAPPING, tracing=tracing_on(collector),
                           aksk=[key_files(tmp_path / "secret")] if shim_has_the_key else [],
                           # without the key pair the client's signature must hold as sent: its Host too
                           passthrough={"preserve_host": not shim_has_the_key})
    traceparent, trace_id, client_span = new_traceparent()
    url, headers = sdk_signed("GET", shim + VOLUMES_PATH, headers={"traceparent": traceparent})
    assert "traceparent" in headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")

    relayed = await call("GET", url, headers=headers)

    assert relayed.status == 200, relayed.body  # the legacy endpoint's gateway accepted the signature
    await collector.wait_for(lambda spans: any(s.kind == CLIENT and s.trace_id == trace_id for s in spans))
    (leg,) = [span for span in collector.of_trace(trace_id) if span.kind == CLIENT]
    (arrived,) = legacy.requests
    expected_parent = leg.span_id if shim_has_the_key else client_span
    assert traceparent_ids(arrived.headers["traceparent"]) == (trace_id, expected_parent)
    if not shim_has_the_key:
        return  # a signed translated call needs the shim to hold the key pair
    body = REPROTECT_BODY
    url, headers = sdk_signed("POST", shim + ACTION_PATH, body=body, headers={"traceparent": traceparent})
    acted = await call("POST", url, body=body, headers=headers)
    assert acted.status == 200, acted.body  # SDRS accepted every signature, traceparent included
    assert sim.action_calls == [(PROJECT, GROUP_ID, "start-server-group")]
    await collector.wait_for(lambda spans: any(s.name == "sdrs POST" for s in spans))
    exchanges = {span.span_id for span in collector.of_trace(trace_id) if span.name.startswith("sdrs")}
    assert {traceparent_ids(headers["traceparent"]) for _, _, headers in sim.requests} == {
        (trace_id, span_id) for span_id in exchanges}
