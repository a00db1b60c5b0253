"""Property-based tests (hypothesis) over a real shim, SDRS simulator and legacy upstream on loopback.

Generated paths (ids with '/', '%', '..', unicode), header sets and bodies are thrown at the
translated routes as raw bytes. Whatever comes in, the answer is a legacy status; every error is the
legacy JSON envelope; neither the answer nor the shim's log ever holds a traceback; an SDRS action POST
is only ever sent for a request that is answered 200; SDRS is only ever asked about the mapped group
of the mapped project; and a request the shim passes on reaches the legacy upstream byte for byte.

The servers run on an event loop in a background thread, started once per test function, so the
(synchronous) hypothesis examples talk to them over plain blocking sockets. Requests the HTTP parser
itself refuses (raw control bytes, unknown methods, CR/LF in headers, ambiguous framing) and an
`Expect` header never reach the shim's code and are covered in test_hostile_input.py instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from conftest import (
    DEFAULT_MAPPING,
    GROUP,
    OTHER_PROJECT,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    TOKEN,
    UNMAPPED_RCG,
    start_server,
    write_mappings,
)
from shim.config import settings_from_mapping
from shim.mappings import load_mappings
from shim.simulator import SdrsSimulator, SimulatorSettings
from shim.translate.actions import LEGACY_ACTION_KEYS
from shim.web.app import build_app
from shim.web.logs import JsonFormatter

LEGACY_STATUSES = {200, 400, 401, 403, 404, 405, 406, 408, 409, 500, 501, 502, 503, 504}
COLLECTION = "os-vendor-replication-consistency-groups"
NEW_REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")  # version 4
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Every SDRS request the shim may make, whatever the legacy request: the mapped group of the
# mapped project, its pairs, its jobs. Nothing from the client's path ever gets in.
SDRS_PATH = re.compile(
    rf"^/v1/{PROJECT}/("
    rf"server-groups/{GROUP}(/action)?"
    rf"|server-groups\?limit=\d+&offset=\d+"
    rf"|replications\?limit=\d+&offset=\d+(&server_group_id={GROUP})?"
    rf"|replications/[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}(/action)?"
    rf"|jobs/[0-9a-f]{{32}})$"
)


def _pair_ids() -> list[str]:
    """The simulator's pair ids are derived from the group id: the same in every simulator."""
    sim = SdrsSimulator()
    sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
    return sorted(pair_id for _, pair_id in sim.state.pairs)


PAIR_IDS = _pair_ids()


# ---------------------------------------------------------------------------------------------
# the live stack and a blocking raw-HTTP client


class LegacyStandIn:
    """The legacy endpoint: a low-level server (no router, so any target at all reaches it) that
    records each raw request target and answers 200 `{"upstream": true}`."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.targets.append(request.raw_path)
        await request.read()
        return web.json_response({"upstream": True})

    async def start(self) -> tuple[web.BaseRunner, str]:
        runner = web.ServerRunner(web.Server(self.handle, auto_decompress=False), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes


class LiveStack:
    """Simulator + recording legacy upstream + shim, on an event loop in a background thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-stack", daemon=True)
        self.records: list[logging.LogRecord] = []
        self._handler = _ListHandler(self.records)
        self._root_level = logging.getLogger().level

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def start(self) -> None:
        root = logging.getLogger()
        root.addHandler(self._handler)
        root.setLevel(logging.INFO)
        self.thread.start()
        self._run(self._start())

    async def _start(self) -> None:
        self.sim = SdrsSimulator(SimulatorSettings(job_init_seconds=0.002, job_run_seconds=0.005))
        self.sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
        self._runners = []
        runner, sim_url = await start_server(self.sim.app())
        self._runners.append(runner)
        self.legacy = LegacyStandIn()
        runner, legacy_url = await self.legacy.start()
        self._runners.append(runner)
        mappings = write_mappings(self.tmp_path / "mappings", DEFAULT_MAPPING)
        config = settings_from_mapping(
            {"upstreams": {"sdrs": sim_url, "legacy": legacy_url}, "mappings": str(mappings),
             "state": {"backend": "memory"}},
            source="test", base_dir=self.tmp_path,
        )
        runner, shim_url = await start_server(build_app(config, load_mappings(config.mappings)))
        self._runners.append(runner)
        self.port = int(shim_url.rsplit(":", 1)[1])

    def stop(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            logging.getLogger().removeHandler(self._handler)
            logging.getLogger().setLevel(self._root_level)

    async def _stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()

    def send(self, data: bytes) -> Answer:
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            sock.sendall(data)
            with sock.makefile("rb") as stream:
                return _read_answer(stream)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self._records = records

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)


def _read_answer(stream: Any) -> Answer:
    status_line = stream.readline()
    parts = status_line.split()
    assert len(parts) >= 2, status_line
    status = int(parts[1])
    headers: CIMultiDict[str] = CIMultiDict()
    while True:
        line = stream.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.add(name.strip(), value.strip())
    if status == 100:
        return _read_answer(stream)
    if "Content-Length" in headers:
        body = stream.read(int(headers["Content-Length"]))
    elif headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(stream.readline().split(b";")[0], 16)
            body += stream.read(size)
            stream.readline()
            if size == 0:
                break
    else:
        body = stream.read()
    return Answer(status, headers, body)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveStack]:
    stack = LiveStack(tmp_path)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


# ---------------------------------------------------------------------------------------------
# strategies

# Characters that may stand raw in a request target; everything else is percent-encoded (as a
# client library does), so '/', '%' (also as a broken escape such as '%zz'), '.' and ';' stay raw.
_RAW_IN_TARGET = "/%.-_~:@!$&'()*+,;="

ids = st.one_of(
    st.sampled_from([RCG, RCG.upper(), RCG.replace("-", ""), UNMAPPED_RCG, GROUP, PROJECT, "..", ".", "",
                     "%2e%2e", "..%2F..%2F", "%252e%252e", "%2F", "%", "%zz", RCG + "%00", RCG + "/..",
                     "../" + RCG, RCG + "%2F..%2F" + UNMAPPED_RCG, "%62" + RCG[1:], RCG + ";x=1"]),
    st.text(alphabet=_RAW_IN_TARGET + "abcdefABCDEF0123456789", max_size=40),
    st.text(max_size=24),  # any unicode: goes out UTF-8 percent-encoded
)
projects = st.one_of(st.sampled_from([PROJECT, PROJECT.upper(), OTHER_PROJECT]), ids)


def segment(text: str) -> str:
    return quote(text, safe=_RAW_IN_TARGET)


_VALUE_CHARS = st.characters(codec="latin-1", exclude_characters="\x7f",
                             exclude_categories=("Cc",)) | st.just("\t")
header_values = st.text(alphabet=_VALUE_CHARS, max_size=60)
# Framing and connection headers are the test's own; Expect is refused by aiohttp before routing.
_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "te", "upgrade",
             "keep-alive", "trailer", "proxy-connection", "http2-settings"}
header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,24}\Z").filter(
    lambda name: name.lower() not in _RESERVED)


@st.composite
def header_sets(draw: st.DrawFn) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    token = draw(st.one_of(st.none(), st.just(TOKEN), st.just(""), header_values))
    if token is not None:
        headers.append(("X-Auth-Token", token))
    content_type = draw(st.one_of(st.none(), st.sampled_from([
        "application/json", "application/json; charset=utf-8", "application/json;charset=latin-1", "text/plain",
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "*/*",
        "application/octet-stream"]), header_values))
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    for name in ("Accept", "Accept-Encoding", "Content-Encoding", "Authorization", "X-Request-Id",
                 "X-Openstack-Request-Id", "X-Forwarded-For", "X-Project-Id", "Cookie"):
        if draw(st.booleans()):
            headers.append((name, draw(st.one_of(header_values, st.sampled_from([
                "application/json", "gzip", "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=abc",
                "req-client-id", "A" * 129, "req-1%0d%0aSet-Cookie:x=1", "127.0.0.1", PROJECT])))))
    headers += draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    return headers


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=24,
)
action_keys = st.sampled_from(sorted(LEGACY_ACTION_KEYS) + [
    "os-reprotect-replication-consistency-groups", "OS-REPROTECT-REPLICATION-CONSISTENCY-GROUP",
    " os-reprotect-replication-consistency-group", "start-server-group", "", "os-reprotect"])
extend_values = st.fixed_dictionaries({
    "replications": st.lists(st.fixed_dictionaries({
        "id": st.sampled_from(PAIR_IDS + [UNMAPPED_RCG, "x"]), "new_size": st.integers(-1, 40)}), max_size=3)})
action_values = st.one_of(st.none(), st.just({}), json_values, extend_values,
                          st.fixed_dictionaries({"id": st.sampled_from(PAIR_IDS), "new_size": st.integers(0, 40)}))


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> bytes:
    document: Any = {draw(action_keys): draw(action_values)}
    if draw(st.integers(0, 4)) == 0:
        document[draw(st.text(max_size=8))] = draw(json_values)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), sort_keys=draw(st.booleans()))
    return (draw(st.sampled_from(["", " ", "\n", "\t\r\n"])) + text + draw(st.sampled_from(["", "\n", "  "]))).encode()


bodies = st.one_of(
    st.just(REPROTECT_BODY),
    near_valid_bodies(),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=256),
    st.sampled_from([b"", b"null", b"{", b"\xef\xbb\xbf" + REPROTECT_BODY, b"[" * 3000 + b"]" * 3000,
                     b'{"os-reprotect-replication-consistency-group": ' + b"9" * 5000 + b"}",
                     b"{" + b" " * 16400 + b"}"]),
)


def raw_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("ascii"), b"Host: shim.test"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# ---------------------------------------------------------------------------------------------
# the properties


def check(live: LiveStack, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
          *, action_route: bool) -> Answer:
    """Send one request and check every property for it; returns the answer."""
    sdrs_before, actions_before = len(live.sim.requests), len(live.sim.action_calls)
    legacy_before, records_before = len(live.legacy.targets), len(live.records)

    answer = live.send(raw_request(method, target, headers, body))
    event(f"answer {answer.status}")  # shown by --hypothesis-show-statistics

    # A legacy status, never a traceback.
    assert answer.status in LEGACY_STATUSES, (answer.status, answer.body[:300])
    assert b"Traceback" not in answer.body
    # Every error is the legacy envelope, as JSON.
    if answer.status >= 300:
        assert answer.headers.get("Content-Type", "").startswith("application/json"), answer.headers
        if method != "HEAD":
            document = json.loads(answer.body)
            assert isinstance(document, dict) and len(document) == 1, document
            ((_, inner),) = document.items()
            assert set(inner) == {"message", "code"}, document
            assert isinstance(inner["message"], str) and re.fullmatch(r"EVS\.\d{4}", inner["code"]), document
    # An SDRS action is sent only for an action answered 200 (and then exactly one group action).
    new_actions = len(live.sim.action_calls) - actions_before
    translated_ok = action_route and method == "POST" and answer.status == 200 and answer.body == b""
    assert new_actions <= (1 if translated_ok else 0), (answer.status, live.sim.action_calls[actions_before:])
    # SDRS is asked only about the mapped group of the mapped project.
    for sdrs_method, sdrs_path, _ in live.sim.requests[sdrs_before:]:
        assert SDRS_PATH.match(sdrs_path), (sdrs_method, sdrs_path)
    # What goes to the legacy side is the client's own request target, byte for byte, sent once.
    forwarded = live.legacy.targets[legacy_before:]
    assert forwarded in ([], [target]), forwarded
    # The request id is the client's only when it is a plain token; else a new one.
    request_id = answer.headers.get("X-Request-Id", "")
    sent_ids = [value.strip(" \t") for name, value in headers
                if name.lower() in ("x-request-id", "x-openstack-request-id")]
    assert NEW_REQUEST_ID.match(request_id) or (request_id in sent_ids and SAFE_REQUEST_ID.match(request_id)), \
        (request_id, sent_ids)
    assert answer.headers.get("X-Openstack-Request-Id") == request_id
    # The log never holds a traceback (as the shim's JSON lines render it), nor an error record.
    formatter = JsonFormatter()
    for record in live.records[records_before:]:
        line = formatter.format(record)
        assert "Traceback" not in line, line
        assert record.levelno < logging.ERROR, line
    return answer


PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

action_methods = st.sampled_from(["POST"] * 14 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"])
read_methods = st.sampled_from(["GET"] * 10 + ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
# Documented action bodies: on the mapped group they walk it through SDRS's status machine.
valid_action_bodies = st.one_of(
    st.sampled_from([json.dumps({key: None}).encode() + b"\n" for key in sorted(LEGACY_ACTION_KEYS)]),
    st.sampled_from(PAIR_IDS).map(lambda pair: json.dumps(
        {"os-extend-replication-volumes": {"replications": [{"id": pair, "new_size": 20}]}}).encode()),
)


@PROPERTY_SETTINGS
@given(method=action_methods, project=projects, rcg=ids, headers=header_sets(), body=bodies)
def test_any_request_to_the_action_url_gets_a_legacy_answer(live, method, project, rcg, headers, body):
    target = f"/v2/{segment(project)}/{COLLECTION}/{segment(rcg)}/action"
    check(live, method, target, headers, body, action_route=True)


# The legacy action that SDRS accepts in each group status (most examples, drawn blindly, are refused).
FITS_STATUS = {
    "failed-over": ["os-reprotect-replication-consistency-group"],
    "error-reprotecting": ["os-reprotect-replication-consistency-group"],
    "available": ["os-sync-replication-consistency-group"],
    "protected": ["os-stop-replication-consistency-group", "os-failover-replication-consistency-group",
                  "os-reverse-replication-consistency-group"],
}


@PROPERTY_SETTINGS
@given(method=action_methods, rcg=st.sampled_from([RCG, RCG.upper()]), headers=header_sets(),
       body=st.one_of(valid_action_bodies, bodies), fit=st.booleans(), pick=st.integers(0, 5))
def test_any_request_to_the_mapped_groups_action_url_gets_a_legacy_answer(live, method, rcg, headers, body, fit, pick):
    """The same, aimed at the mapped group: these are the requests that reach SDRS. With `fit`, the
    body is the action the group's current SDRS status allows, so that many are carried out (the
    draws do not depend on that status; only their use does)."""
    fitting = FITS_STATUS.get(live.sim.group(PROJECT, GROUP).status)
    if fit and fitting:
        body = json.dumps({fitting[pick % len(fitting)]: None}).encode()
    target = f"/v2/{PROJECT}/{COLLECTION}/{rcg}/action"
    check(live, method, target, [("X-Auth-Token", TOKEN), *headers], body, action_route=True)


@PROPERTY_SETTINGS
@given(method=read_methods, project=projects, rcg=ids, headers=header_sets(),
       body=st.one_of(st.just(b""), bodies), query=st.sampled_from(["", "?x=1", "?limit=1&marker=..%2F", "?%zz"]))
def test_any_request_to_a_group_read_url_gets_a_legacy_answer(live, method, project, rcg, headers, body, query):
    target = f"/v2/{segment(project)}/{COLLECTION}/{segment(rcg)}{query}"
    answer = check(live, method, target, headers, body, action_route=False)
    if method == "GET" and answer.status == 200 and rcg.lower() == RCG and project.lower() == PROJECT:
        # the mapped group, answered from SDRS in the legacy shape
        assert json.loads(answer.body)["replication_consistency_group"]["id"].lower() == RCG


@PROPERTY_SETTINGS
@given(method=read_methods, rcg=st.sampled_from([RCG, RCG.upper()]), headers=header_sets(),
       query=st.sampled_from(["", "?x=1", "?fields=..%2F..%2F", "?%zz", "?" + "a=1&" * 200]))
def test_any_read_of_the_mapped_group_gets_a_legacy_answer(live, method, rcg, headers, query):
    """The same, aimed at the mapped group's read URL: these GETs are answered from SDRS."""
    target = f"/v2/{PROJECT}/{COLLECTION}/{rcg}{query}"
    answer = check(live, method, target, [("X-Auth-Token", TOKEN), *headers], b"", action_route=False)
    if method == "GET":
        assert answer.status == 200, answer.body
        group = json.loads(answer.body)["replication_consistency_group"]
        assert group["id"].lower() == RCG
        assert sorted(group["replication_ids"]) == PAIR_IDS
