"""Faults and limits, over loopback: every SDRS or legacy-upstream failure becomes one documented
legacy status with the legacy error envelope and a log line, and no fault ever makes the shim send an
SDRS action POST twice (not within the request, and not for an identical retry while the first
action's outcome is unknown or its job is pending).

SDRS faults come from the simulator's fault injection (shim/simulator/faults.py: status, delay, hang,
reset, truncate); "SDRS refuses connections" is a closed loopback port and "SDRS does not speak HTTP"
a loopback TCP server that answers garbage.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from conftest import (
    GO_HEADERS,
    GROUP,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    TOKEN,
    UNMAPPED_RCG,
    RecordingUpstream,
    Reply,
    ShimFactory,
    action_url,
    call,
    start_server,
)
from shim.simulator import Fault, SdrsSimulator, SimulatorSettings
from shim.web.logs import JsonFormatter

FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
               405: "badMethod", 406: "notAcceptable", 408: "requestTimeout", 409: "conflictingRequest",
               500: "computeFault", 501: "notImplemented", 502: "badGateway", 503: "serviceUnavailable",
               504: "gatewayTimeout"}

SDRS_TIMEOUTS = {"sdrs": {"connect": 1, "read": 0.3, "total": 1}}
CONFIRMED = {"completion": "confirmed", "confirm_timeout_seconds": 1, "poll_initial_seconds": 0.05,
             "poll_max_seconds": 0.2}
GROUP_READ = f"/server-groups/{GROUP}"
PAIRS = "/replications"
ACTION = "/action"
JOB_ID = "0123456789abcdef0123456789abcdef"
REPROTECT_CALL = (PROJECT, GROUP, "start-server-group")
READ_URL_PATH = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{RCG}"

# The simulator's (job_init_seconds, job_run_seconds).
FAST_JOBS = (0.05, 0.2)
JOB_FAILS_AT_ONCE = (0.05, 0.0)  # INIT, then at once FAIL (or SUCCESS)
JOB_NEVER_LEAVES_INIT = (3600.0, 1.0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def after_first_get(**fault: Any) -> tuple[Fault, ...]:
    """The group read passes, every later GET (the job polls of a confirmed action) gets `fault`.
    Faults apply in injection order: the no-op first one is used up by the group read."""
    return (Fault(method="GET", status=None, times=1), Fault(method="GET", times=None, **fault))


@dataclass(frozen=True)
class Case:
    """One fault and what the legacy client must get for it."""

    faults: tuple[Fault, ...] = ()
    status: int = 200
    says: tuple[str, ...] = ()  # each must be in the legacy message
    actions: int = 0  # SDRS action POSTs the request causes: never more than one
    retry_after: str | None = None  # the Retry-After header, exactly; None: no such header
    sdrs: str = "simulator"  # "simulator" | "closed-port" | "not-http"
    sim: tuple[float, float] = FAST_JOBS  # job_init_seconds, job_run_seconds
    fail_job: tuple[str | None, str | None] | None = None  # sim.fail_next_job(error_code, fail_reason)
    config: dict[str, Any] = field(default_factory=dict)
    # An identical request once the fault is gone: its status, the SDRS action POSTs in all, and a
    # text its legacy message must contain (for a refusal).
    retry: tuple[int, int, str] = (200, 1, "")


NOT_KNOWN = (409, 1, "not known yet")  # retry while the first action's outcome is unknown
PENDING = (409, 1, "is still")  # retry while the first action's job is INIT or RUNNING

REPROTECT_CASES = [
    pytest.param(Case(sdrs="closed-port", status=503, says=("SDRS is unreachable", "read the protection group"),
                      retry_after="5", retry=(503, 0, "unreachable")), id="sdrs-refuses-connections"),
    pytest.param(Case(sdrs="not-http", status=503, says=("SDRS is unreachable",), retry_after="5",
                      retry=(503, 0, "unreachable")), id="sdrs-answers-non-http-garbage"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, hang=True, times=None),), 504,
                      ("did not answer in time while trying to read the protection group",)), id="group-read-hangs"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, delay=0.6, times=None),), 504,
                      ("did not answer in time",)), id="group-read-slower-than-timeout"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, hang=True),), 504,
                      ("did not answer in time while trying to reprotect",), actions=1, retry=NOT_KNOWN),
                 id="action-hangs"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, delay=0.6),), 504, ("did not answer in time",),
                      actions=1, retry=NOT_KNOWN), id="action-slower-than-timeout"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, reset=True, times=None),), 503,
                      ("SDRS is unreachable",), retry_after="5"), id="group-read-reset-every-time"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, reset=True, times=1),), 200, actions=1,
                      retry=PENDING), id="group-read-reset-once-is-read-again"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, reset=True),), 503, ("SDRS is unreachable",),
                      actions=1, retry_after="5", retry=NOT_KNOWN), id="action-reset"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, truncate=True, times=None),), 503,
                      ("SDRS is unreachable",), retry_after="5"), id="group-read-truncated"),
    # status=None: SDRS really starts the job, then the answer is cut short.
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, truncate=True),), 503, ("SDRS is unreachable",),
                      actions=1, retry_after="5", retry=NOT_KNOWN), id="action-answer-truncated"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=500, body=b""),), 500,
                      ("HTTP 500",)), id="group-read-500"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=500, body=b"<html>Internal Error</html>",
                             headers={"Content-Type": "text/html"}),), 500, ("HTTP 500",), actions=1,
                      retry=NOT_KNOWN), id="action-500-without-sdrs-code"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=500,
                             body={"error": {"code": "SDRS.0404", "message": "Failed to submit the job"}}),),
                      500, ("SDRS.0404", "Failed to submit the job"), actions=1, retry=(200, 2, "")),
                 id="action-500-job-not-submitted"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=502, body=b""),), 502, ("HTTP 502",),
                      actions=1, retry=NOT_KNOWN), id="action-502"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=503, body=b""),), 503, ("HTTP 503",),
                      retry_after="5"), id="group-read-503"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=503, body=b""),), 503, ("HTTP 503",),
                      actions=1, retry_after="5", retry=(200, 2, "")), id="action-503"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=504, body=b""),), 504, ("HTTP 504",),
                      actions=1, retry=NOT_KNOWN), id="action-504"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=429, body=b"",
                             headers={"Retry-After": "7"}),), 503, ("HTTP 429",), retry_after="7"),
                 id="group-read-429"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=429,
                             body={"error_code": "APIGW.0308", "error_msg": "throttling threshold reached"}),),
                      503, ("HTTP 429", "APIGW.0308"), actions=1, retry_after="5", retry=(200, 2, "")),
                 id="action-429"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=200, body=b"\x00garbage\xff"),), 502,
                      ("not the documented shape",)), id="group-read-garbage"),
    pytest.param(Case((Fault(method="POST", path_suffix=ACTION, status=200, body=b"\x00garbage\xff"),), 502,
                      ("not the documented shape",), actions=1, retry=NOT_KNOWN), id="action-garbage"),
]

READ_CASES = [
    pytest.param(Case(sdrs="closed-port", status=503, says=("SDRS is unreachable",), retry_after="5"),
                 id="sdrs-refuses-connections"),
    pytest.param(Case(sdrs="not-http", status=503, says=("SDRS is unreachable",), retry_after="5"),
                 id="sdrs-answers-non-http-garbage"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, hang=True, times=None),), 504,
                      ("did not answer in time while trying to read the protection group",)), id="group-read-hangs"),
    pytest.param(Case((Fault(method="GET", path_suffix=PAIRS, hang=True, times=None),), 504,
                      ("did not answer in time while trying to list the replication pairs",)), id="pairs-read-hangs"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, delay=0.6, times=None),), 504,
                      ("did not answer in time",)), id="group-read-slower-than-timeout"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, reset=True, times=None),), 503,
                      ("SDRS is unreachable",), retry_after="5"), id="group-read-reset-every-time"),
    pytest.param(Case((Fault(method="GET", path_suffix=PAIRS, reset=True, times=None),), 503,
                      ("SDRS is unreachable",), retry_after="5"), id="pairs-read-reset-every-time"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, reset=True, times=1),), 200),
                 id="group-read-reset-once-is-read-again"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, truncate=True, times=None),), 503,
                      ("SDRS is unreachable",), retry_after="5"), id="group-read-truncated"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=500, body=b""),), 500, ("HTTP 500",)),
                 id="group-read-500"),
    pytest.param(Case((Fault(method="GET", path_suffix=PAIRS, status=500, body=b""),), 500, ("HTTP 500",)),
                 id="pairs-read-500"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=502, body=b""),), 502, ("HTTP 502",)),
                 id="group-read-502"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=503, body=b""),), 503, ("HTTP 503",),
                      retry_after="5"), id="group-read-503"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=504, body=b""),), 504, ("HTTP 504",)),
                 id="group-read-504"),
    pytest.param(Case((Fault(method="GET", path_suffix=PAIRS, status=429, body=b"", headers={"Retry-After": "11"}),),
                      503, ("HTTP 429",), retry_after="11"), id="pairs-read-429"),
    pytest.param(Case((Fault(method="GET", path_suffix=GROUP_READ, status=200, body=b"<html>"),), 502,
                      ("not the documented shape",)), id="group-read-garbage"),
    pytest.param(Case((Fault(method="GET", path_suffix=PAIRS, status=200, body=b'{"replications": 7}'),), 502,
                      ("not the documented shape",)), id="pairs-read-garbage"),
]

CONFIRMED_CASES = [
    pytest.param(Case(status=500, says=("SDRS.0405", "the replication link is down"), actions=1,
                      sim=JOB_FAILS_AT_ONCE, fail_job=("SDRS.0405", "the replication link is down"),
                      config={"actions": CONFIRMED}, retry=(200, 2, "")), id="job-fails-with-an-engine-code"),
    # A failed job is SDRS's failure (500), even with a code documented as 400 ...
    pytest.param(Case(status=500, says=("SDRS.1032", "simulated failure"), actions=1, sim=JOB_FAILS_AT_ONCE,
                      fail_job=(None, None), config={"actions": CONFIRMED}, retry=(200, 2, "")),
                 id="job-fails-with-the-reprotect-code"),
    # ... unless its code says the request itself was wrong.
    pytest.param(Case(status=400, says=("SDRS.1342", "not stopped"), actions=1, sim=JOB_FAILS_AT_ONCE,
                      fail_job=("SDRS.1342", "DR site server is not stopped"), config={"actions": CONFIRMED},
                      retry=(200, 2, "")),
                 id="job-fails-because-a-server-was-not-stopped"),
    pytest.param(Case(status=500, says=("SDRS.9876", "no such code"), actions=1, sim=JOB_FAILS_AT_ONCE,
                      fail_job=("SDRS.9876", "no such code"), config={"actions": CONFIRMED}, retry=(200, 2, "")),
                 id="job-fails-with-an-undocumented-code"),
    pytest.param(Case(status=504, says=("not confirmed within 1 s", "may still run"), actions=1,
                      sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING),
                 id="job-never-finishes"),
    # Once SDRS has accepted the action, a failure while watching it is a 504 "it may still run".
    pytest.param(Case(after_first_get(hang=True), 504, ("did not answer in time while trying to read the SDRS job",
                                                        "may still run"),
                      actions=1, sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING),
                 id="job-poll-hangs"),
    pytest.param(Case(after_first_get(reset=True), 504, ("SDRS is unreachable", "read the SDRS job", "may still run"),
                      actions=1, sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING),
                 id="job-poll-reset"),
    pytest.param(Case(after_first_get(status=503, body=b""), 504, ("HTTP 503", "may still run"), actions=1,
                      sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING), id="job-poll-503"),
    pytest.param(Case(after_first_get(status=200, body=b"[]"), 504, ("not the documented shape", "may still run"),
                      actions=1,
                      sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING), id="job-poll-garbage"),
    # A gateway's 404 without an SDRS code is no proof that the job is gone: it may still run.
    pytest.param(Case(after_first_get(status=404, body=b""), 504, ("HTTP 404", "may still run"), actions=1,
                      sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING),
                 id="job-poll-gateway-404-without-a-code"),
    pytest.param(Case(after_first_get(status=404, body={"error": {"code": "SDRS.0408", "message": "Null job"}}),
                      502, ("does not know the job",), actions=1,
                      sim=JOB_NEVER_LEAVES_INIT, config={"actions": CONFIRMED}, retry=PENDING),
                 id="job-poll-404-sdrs-forgot-the-job"),
]


# ---------------------------------------------------------------------------------------------
# harness


@dataclass
class World:
    sim: SdrsSimulator
    shim: str
    legacy: RecordingUpstream


StartWorld = Callable[[Case], Awaitable[World]]


@pytest.fixture
async def world(make_shim: ShimFactory) -> AsyncIterator[StartWorld]:
    """`await world(case)`: a simulator (with the case's faults), a recording legacy upstream, a shim."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(case: Case) -> World:
        sim = SdrsSimulator(SimulatorSettings(job_init_seconds=case.sim[0], job_run_seconds=case.sim[1]))
        sim.add_protection_group(PROJECT, GROUP, status="failed-over", pair_count=2)
        if case.fail_job is not None:
            sim.fail_next_job(PROJECT, GROUP, *case.fail_job)
        for fault in case.faults:
            sim.inject(fault)
        runner, sim_url = await start_server(sim.app())
        cleanups.append(runner.cleanup)
        legacy = RecordingUpstream()
        legacy_runner, legacy_url = await start_server(legacy.app())
        cleanups.append(legacy_runner.cleanup)
        if case.sdrs == "closed-port":
            sdrs_url = f"http://127.0.0.1:{closed_port()}"
        elif case.sdrs == "not-http":
            server = await asyncio.start_server(_answer_garbage, "127.0.0.1", 0)
            cleanups.append(_closer(server))
            sdrs_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        else:
            sdrs_url = sim_url
        shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url, timeouts=SDRS_TIMEOUTS, **case.config)
        return World(sim, shim, legacy)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


async def _answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
    finally:
        writer.close()


def _closer(server: asyncio.Server) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        server.close()
        await server.wait_closed()

    return close


def is_shim_logger(name: str) -> bool:
    return (name == "shim" or name.startswith("shim.")) and not name.startswith("shim.simulator")


def log_lines_for(caplog: pytest.LogCaptureFixture, reply: Reply) -> list[logging.LogRecord]:
    """The shim's INFO-or-above records that carry this answer's request id."""
    request_id = reply.headers["X-Request-Id"]
    return [record for record in caplog.records
            if is_shim_logger(record.name) and record.levelno >= logging.INFO
            and getattr(record, "request_id", None) == request_id]


def assert_answer(reply: Reply, case: Case) -> None:
    """The exact legacy status; for an error the legacy envelope, fault name, EVS code, message
    texts and Retry-After; never a traceback."""
    assert "Traceback" not in reply.body.decode("utf-8", "replace")
    assert reply.status == case.status, reply.body
    if case.status == 200:
        return
    name, inner = reply.fault()  # checks Content-Type application/json and {"<faultName>": {message, code}}
    assert name == FAULT_NAMES[case.status]
    assert inner["code"] == f"EVS.5{case.status}"
    for text in case.says:
        assert text in inner["message"], inner["message"]
    assert reply.headers.get("Retry-After") == case.retry_after


def assert_logged(caplog: pytest.LogCaptureFixture, reply: Reply) -> None:
    """A log line from a shim logger carries the answer's request id; no line has a traceback or the token."""
    assert log_lines_for(caplog, reply), [(r.name, r.getMessage()) for r in caplog.records]
    formatter = JsonFormatter()
    for record in caplog.records:
        if is_shim_logger(record.name):
            line = formatter.format(record)
            assert "Traceback" not in line and TOKEN not in line, line


async def reprotect(shim: str) -> Reply:
    return await call("POST", action_url(shim), body=REPROTECT_BODY, headers=GO_HEADERS)


# ---------------------------------------------------------------------------------------------
# the translated reprotect


@pytest.mark.parametrize("case", REPROTECT_CASES + CONFIRMED_CASES)
async def test_fault_on_reprotect_is_one_legacy_answer_a_log_line_and_at_most_one_action(world, caplog, case):
    caplog.set_level(logging.INFO)
    w = await world(case)

    reply = await reprotect(w.shim)

    assert_answer(reply, case)
    assert w.sim.action_calls == [REPROTECT_CALL] * case.actions
    assert w.legacy.requests == []  # a fault never falls back to the legacy endpoint
    assert_logged(caplog, reply)


RETRY_BUGS: dict[str, str] = {}  # case id -> strict-xfail reason, for a retry bug found and not yet fixed


def with_retry_bugs(params: list[Any]) -> list[Any]:
    marked = []
    for param in params:
        reason = RETRY_BUGS.get(param.id)
        marks = (pytest.mark.xfail(strict=True, reason=reason),) if reason else ()
        marked.append(pytest.param(*param.values, id=param.id, marks=marks))
    return marked


@pytest.mark.parametrize("case", with_retry_bugs(REPROTECT_CASES + CONFIRMED_CASES))
async def test_identical_retry_after_a_fault_sends_no_second_action_while_the_first_is_unsettled(world, case):
    """Once the fault is gone the client retries: a second POST goes out only when the first one
    was never sent, was definitely refused (429, 503, a not-submitted code) or its job has failed."""
    w = await world(case)
    first = await reprotect(w.shim)
    assert first.status == case.status
    w.sim.clear_faults()

    retry = await reprotect(w.shim)

    status, actions, says = case.retry
    assert (retry.status, len(w.sim.action_calls)) == (status, actions), retry.body
    assert w.sim.action_calls == [REPROTECT_CALL] * actions
    if status != 200:
        name, inner = retry.fault()
        assert name == FAULT_NAMES[status] and says in inner["message"], inner
    if says == "not known yet":
        assert 0 < int(retry.headers["Retry-After"]) <= 60  # actions.settle_seconds, default 60


async def test_a_concurrent_duplicate_while_the_action_post_hangs_is_409_and_sends_nothing(world):
    case = Case((Fault(method="POST", path_suffix=ACTION, hang=True),))
    w = await world(case)
    first = asyncio.create_task(reprotect(w.shim))
    for _ in range(200):  # until SDRS has the first action POST in hand
        if w.sim.action_calls:
            break
        await asyncio.sleep(0.005)
    assert w.sim.action_calls == [REPROTECT_CALL]

    second = await reprotect(w.shim)

    assert second.status == 409
    assert second.fault()[0] == "conflictingRequest"
    assert "in progress" in second.fault()[1]["message"]
    assert (await first).status == 504
    assert w.sim.action_calls == [REPROTECT_CALL]


async def test_a_reprotect_that_succeeds_logs_its_sdrs_job_id(world, caplog):
    """README: "200, empty body (the SDRS job id is logged)"."""
    caplog.set_level(logging.INFO)
    w = await world(Case())

    reply = await reprotect(w.shim)

    assert reply.status == 200 and reply.body == b""
    (job_id,) = w.sim.state.jobs  # the one job SDRS started
    lines = [JsonFormatter().format(record) for record in log_lines_for(caplog, reply)]
    assert any(job_id in line for line in lines), lines


# ---------------------------------------------------------------------------------------------
# a translated read: GET .../os-vendor-replication-consistency-groups/{rcg_id} of a mapped group


@pytest.mark.parametrize("case", READ_CASES)
async def test_fault_on_translated_read_is_one_legacy_answer_a_log_line_and_no_action(world, caplog, case):
    caplog.set_level(logging.INFO)
    w = await world(case)

    reply = await call("GET", w.shim + READ_URL_PATH, headers={k: v for k, v in GO_HEADERS.items()
                                                                if k != "Content-Type"})

    assert_answer(reply, case)
    if case.status == 200:
        assert reply.json()["replication_consistency_group"]["id"] == RCG
    assert w.sim.action_calls == []
    assert w.legacy.requests == []  # a mapped group is never served from the legacy side, not even on a fault
    assert_logged(caplog, reply)


# ---------------------------------------------------------------------------------------------
# the legacy upstream down or slow


@dataclass
class SlowUpstream:
    """A legacy endpoint that answers only when released (or after 5 s)."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.raw_path)
        await request.read()
        try:
            await asyncio.wait_for(self.release.wait(), 5)
        except TimeoutError:
            pass
        return web.json_response({"replication_consistency_groups": []})


LEGACY_REQUESTS = [
    pytest.param("GET", f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{UNMAPPED_RCG}", None,
                 id="read-of-an-unmapped-group"),
    pytest.param("GET", f"/v2/{PROJECT}/os-vendor-replication-consistency-groups", None,
                 id="merged-list-of-a-project-with-mapped-groups"),
    pytest.param("POST", f"/v2/{PROJECT}/os-vendor-replication-consistency-groups",
                 b'{"replication_consistency_group":{"name":"g","replication_ids":["x"]}}\n', id="create"),
]


@pytest.mark.parametrize(("method", "path", "body"), LEGACY_REQUESTS)
async def test_legacy_upstream_down_is_503_with_retry_after_and_a_warning(simulator, make_shim, caplog,
                                                                       method, path, body):
    caplog.set_level(logging.INFO)
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, legacy=f"http://127.0.0.1:{closed_port()}")

    reply = await call(method, shim + path, body=body, headers=GO_HEADERS)

    assert_answer(reply, Case(status=503, says=("legacy EVS endpoint is unreachable",), retry_after="5"))
    assert sim.action_calls == []
    assert_logged(caplog, reply)
    assert any(r.name == "shim.passthrough" and r.levelno == logging.WARNING for r in log_lines_for(caplog, reply))


@pytest.mark.parametrize(("method", "path", "body"), LEGACY_REQUESTS)
async def test_legacy_upstream_too_slow_is_504_and_a_warning(simulator, make_shim, caplog, method, path, body):
    caplog.set_level(logging.INFO)
    sim, sdrs_url = simulator
    slow = SlowUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow.handle)
    runner, legacy_url = await start_server(app)
    try:
        shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url,
                               timeouts={"legacy": {"connect": 1, "read": 0.3, "total": 1}})
        reply = await call(method, shim + path, body=body, headers=GO_HEADERS)
    finally:
        slow.release.set()
        await runner.cleanup()

    assert_answer(reply, Case(status=504, says=("legacy EVS endpoint did not answer in time",)))
    assert len(slow.seen) == 1 and slow.seen[0].startswith(path)  # asked once: no retry of a passthrough
    assert sim.action_calls == []
    assert_logged(caplog, reply)
    assert any(r.name == "shim.passthrough" and r.levelno == logging.WARNING for r in log_lines_for(caplog, reply))


async def test_legacy_upstream_speaking_garbage_is_502_and_a_warning(simulator, make_shim, caplog):
    caplog.set_level(logging.INFO)
    sim, sdrs_url = simulator
    server = await asyncio.start_server(_answer_garbage, "127.0.0.1", 0)
    try:
        shim = await make_shim(sdrs=sdrs_url, legacy=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        reply = await call("GET", f"{shim}/v2/{PROJECT}/os-vendor-replication-consistency-groups/{UNMAPPED_RCG}",
                           headers=GO_HEADERS)
    finally:
        server.close()
        await server.wait_closed()

    assert_answer(reply, Case(status=502, says=("legacy EVS endpoint sent a malformed answer",)))
    assert_logged(caplog, reply)
