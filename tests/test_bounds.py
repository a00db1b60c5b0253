"""Bounded memory and time whatever a peer does, over loopback: upstream answers larger than the
shim reads, an SDRS whose paging never ends, request heads that never end or never come, more
connections than allowed, request bodies that stall, and a legacy pool that slow clients would hold.
Each test asserts what the client got (and what the upstreams saw), not how much memory was used."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from conftest import GROUP, PROJECT, RCG, TOKEN, ShimFactory, call, start_server
from shim.simulator import Fault

GROUPS_URL = f"/v2/{PROJECT}/os-vendor-replication-consistency-groups"
GROUP_URL = f"{GROUPS_URL}/{RCG}"
SMALLEST_BODY_CAP = 65536
HEADERS = {"X-Auth-Token": TOKEN, "Accept": "application/json"}


async def metric(shim: str, name: str, **labels: str) -> float:
    text = (await call("GET", shim + "/metrics")).body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and set(labels.items()) <= set(sample.labels.items()))


async def eventually(condition, what: str, seconds: float = 10.0) -> None:
    """Wait (polling) until `condition()` holds; fail naming `what` when it does not."""
    for _ in range(int(seconds / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


# -- answers larger than the shim reads -----------------------------------------------------------


def legacy_list_app(size: int, *, chunked: bool) -> web.Application:
    """A legacy endpoint whose group list is `size` bytes of valid JSON."""
    item = {"id": "0" * 32, "name": "n", "description": "x" * 900}
    body = json.dumps({"replication_consistency_groups": [item] * (size // 1000)}).encode()

    async def handle(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 16384):
            await response.write(body[start:start + 16384])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_legacy_list_larger_than_the_cap_is_a_502(simulator, make_shim: ShimFactory, chunked):
    _, sdrs = simulator
    runner, legacy = await start_server(legacy_list_app(200_000, chunked=chunked))
    try:
        shim = await make_shim(sdrs=sdrs, legacy=legacy, limits={"upstream_body_bytes": SMALLEST_BODY_CAP})

        reply = await call("GET", shim + GROUPS_URL, headers=HEADERS)

        assert reply.status == 502, reply.body
        name, inner = reply.fault()
        assert name == "badGateway" and "too large" in inner["message"]
        # Under the cap the same list merges as before.
        roomy = await make_shim(sdrs=sdrs, legacy=legacy, limits={"upstream_body_bytes": 1048576})
        assert (await call("GET", roomy + GROUPS_URL, headers=HEADERS)).status == 200
    finally:
        await runner.cleanup()


async def test_an_sdrs_answer_larger_than_the_cap_is_a_502(simulator, make_shim: ShimFactory):
    sim, sdrs = simulator
    shim = await make_shim(sdrs=sdrs, limits={"upstream_body_bytes": SMALLEST_BODY_CAP})
    group = {"id": GROUP, "name": "g", "status": "failed-over", "padding": "x" * 100_000}
    sim.inject(Fault(method="GET", path_suffix=f"/server-groups/{GROUP}", status=200,
                     body={"server_group": group}, times=None))

    reply = await call("GET", shim + GROUP_URL, headers=HEADERS)

    assert reply.status == 502, reply.body
    assert "too large" in reply.fault()[1]["message"]


# -- SDRS paging that never ends ------------------------------------------------------------------


@dataclass
class PagingSdrs:
    """An SDRS stand-in for lists: full pages of groups, honouring `offset` or not, each after `delay`."""

    honours_offset: bool = True
    delay: float = 0.0
    page_calls: list[str] = field(default_factory=list)

    async def groups(self, request: web.Request) -> web.Response:
        self.page_calls.append(request.path_qs)
        await asyncio.sleep(self.delay)
        start = int(request.query.get("offset", "0")) if self.honours_offset else 0
        groups = [{"id": f"{number:032x}", "name": "g", "status": "available"}
                  for number in range(start, start + int(request.query.get("limit", "1000")))]
        return web.json_response({"server_groups": groups})

    async def pairs(self, request: web.Request) -> web.Response:
        return web.json_response({"replications": []})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/{project}/server-groups", self.groups)
        app.router.add_get("/v1/{project}/replications", self.pairs)
        return app


@pytest.fixture
async def paging_sdrs() -> AsyncIterator[tuple[PagingSdrs, str]]:
    sdrs = PagingSdrs()
    runner, url = await start_server(sdrs.app())
    yield sdrs, url
    await runner.cleanup()


async def test_an_sdrs_that_ignores_offset_is_a_502_after_two_pages(paging_sdrs, make_shim: ShimFactory):
    sdrs, url = paging_sdrs
    sdrs.honours_offset = False
    shim = await make_shim(sdrs=url)

    reply = await asyncio.wait_for(call("GET", shim + GROUPS_URL, headers=HEADERS), 10)

    assert reply.status == 502
    assert "same page" in reply.fault()[1]["message"]
    assert len(sdrs.page_calls) == 2


async def test_an_sdrs_list_longer_than_the_item_limit_is_a_502(paging_sdrs, make_shim: ShimFactory):
    sdrs, url = paging_sdrs
    shim = await make_shim(sdrs=url, limits={"sdrs_list_items": 2500})

    reply = await asyncio.wait_for(call("GET", shim + GROUPS_URL, headers=HEADERS), 10)

    assert reply.status == 502
    assert "more than 2500 protection groups" in reply.fault()[1]["message"]
    assert len(sdrs.page_calls) == 3  # 3000 items read: never a fourth page


async def test_an_sdrs_list_that_outlasts_its_deadline_is_a_504(paging_sdrs, make_shim: ShimFactory):
    sdrs, url = paging_sdrs
    sdrs.delay = 0.2
    shim = await make_shim(sdrs=url, timeouts={"sdrs_list": 0.5})

    reply = await asyncio.wait_for(call("GET", shim + GROUPS_URL, headers=HEADERS), 10)

    assert reply.status == 504
    assert "timeouts.sdrs_list" in reply.fault()[1]["message"]


async def test_an_sdrs_list_stops_when_the_client_goes_away(paging_sdrs, make_shim: ShimFactory):
    sdrs, url = paging_sdrs
    sdrs.delay = 0.2
    shim = await make_shim(sdrs=url, limits={"sdrs_list_items": 100_000})  # 101 pages allowed
    address = URL(shim)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(f"GET {GROUPS_URL} HTTP/1.1\r\nHost: shim\r\nX-Auth-Token: {TOKEN}\r\n\r\n".encode())
    await writer.drain()

    async def first_page_asked() -> bool:
        return len(sdrs.page_calls) >= 1

    await eventually(first_page_asked, "the shim asked SDRS for the first page")
    writer.close()

    async def request_ended() -> bool:
        return await metric(shim, "shim_requests_total", legacy_status="cancelled") == 1

    await eventually(request_ended, "the list request ended after its client went away")
    assert len(sdrs.page_calls) <= 2  # the page in flight when the client left, at most one more
    assert await metric(shim, "shim_requests_in_flight") == 0



# -- request heads that never end, and too many connections ---------------------------------------


async def connect(shim: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = URL(shim)
    return await asyncio.open_connection(address.host, address.port)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer that ends with the connection; (0, {}, b"") when the
    connection closed without an answer."""
    data = await asyncio.wait_for(reader.read(), 10)
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


PARTIAL_HEAD = b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim\r\nX-A: 1\r\n"


async def test_a_request_head_that_never_ends_is_answered_408_and_closed(legacy_upstream, make_shim: ShimFactory):
    """Slowloris: the client trickles header bytes so the connection never looks idle; the head
    must still be complete within timeouts.request_head of its first byte."""
    upstream, legacy = legacy_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, timeouts={"request_head": 0.5})
    reader, writer = await connect(shim)
    writer.write(PARTIAL_HEAD)

    async def trickle() -> None:
        for number in range(100):
            await asyncio.sleep(0.05)
            writer.write(b"X-%d: 1\r\n" % number)

    trickling = asyncio.create_task(trickle())
    try:
        status, headers, body = await read_answer(reader)
    finally:
        trickling.cancel()
        writer.close()

    assert status == 408, body
    assert json.loads(body)["requestTimeout"]["code"] == "EVS.5408"
    assert headers["connection"] == "close"
    assert upstream.requests == []
    assert await metric(shim, "shim_request_heads_refused_total", reason="timeout") == 1


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(make_shim: ShimFactory):
    shim = await make_shim(sdrs="http://127.0.0.1:9", timeouts={"request_head": 0.3})
    reader, writer = await connect(shim)
    try:
        assert await read_answer(reader) == (0, {}, b"")  # closed by the shim
    finally:
        writer.close()


@pytest.mark.parametrize("end", [b"Connection: close\r\n\r\n", b""], ids=["complete", "never-ending"])
async def test_a_request_head_over_the_byte_limit_is_400_and_reaches_nobody(
    legacy_upstream, make_shim: ShimFactory, end
):
    """40 header lines of 1000 bytes: each line within max_field_size, their count within
    max_headers, but together over limits.request_head_bytes; refused whether the head is complete
    or still growing (then long before timeouts.request_head)."""
    upstream, legacy = legacy_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, limits={"request_head_bytes": 16384})
    reader, writer = await connect(shim)
    lines = b"".join(b"X-Pad-%d: %s\r\n" % (number, b"p" * 1000) for number in range(40))
    writer.write(b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim\r\n" + lines + end)
    try:
        status, headers, body = await read_answer(reader)
    finally:
        writer.close()

    assert status == 400
    assert json.loads(body)["badRequest"]["message"] == "The request head is larger than 16384 bytes."
    assert upstream.requests == []
    assert await metric(shim, "shim_request_heads_refused_total", reason="too_large") == 1


async def test_at_the_connection_limit_a_new_connection_is_closed_at_once(legacy_upstream, make_shim: ShimFactory):
    _, legacy = legacy_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, limits={"client_connections": 3})
    busy = [await connect(shim) for _ in range(3)]
    for _, writer in busy:
        writer.write(PARTIAL_HEAD)  # mid-request: not idle, never reclaimed
        await writer.drain()

    reader, writer = await connect(shim)  # the kernel accepts; the shim closes it at once
    writer.write(b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim\r\nConnection: close\r\n\r\n")
    refused = await read_answer(reader)
    writer.close()
    finishing_reader, finishing_writer = busy.pop()
    finishing_writer.write(b"Connection: close\r\n\r\n")  # one busy request completes and its connection ends
    finished = await read_answer(finishing_reader)
    finishing_writer.close()

    assert refused == (0, {}, b"")
    assert finished[0] == 200
    assert await metric(shim, "shim_client_connections_refused_total") == 1  # room again for this scrape
    assert await metric(shim, "shim_client_connections") == 3  # two busy ones and the scrape
    for _, other in busy:
        other.close()


async def test_at_the_connection_limit_an_idle_keep_alive_connection_makes_room(
    legacy_upstream, make_shim: ShimFactory
):
    upstream, legacy = legacy_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, limits={"client_connections": 2})
    idle_reader, idle_writer = await connect(shim)
    idle_writer.write(b"GET /v2/p/first HTTP/1.1\r\nHost: shim\r\n\r\n")  # answered, then kept alive
    await asyncio.wait_for(idle_reader.readuntil(b'{"upstream": true}'), 10)
    busy_reader, busy_writer = await connect(shim)
    busy_writer.write(PARTIAL_HEAD)
    await busy_writer.drain()

    reader, writer = await connect(shim)
    writer.write(b"GET /v2/p/second HTTP/1.1\r\nHost: shim\r\nConnection: close\r\n\r\n")
    status, _, _ = await read_answer(reader)
    writer.close()

    assert status == 200
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # the idle one was closed for it
    assert [path for _, path, _, _ in upstream.requests] == ["/v2/p/first", "/v2/p/second"]
    busy_writer.close()
    idle_writer.close()
    assert await metric(shim, "shim_client_connections_reclaimed_total") == 1


# -- request bodies that stall, and a legacy pool that slow clients would hold --------------------


ACTION_PATH = f"{GROUP_URL}/action"


def head(method: str, path: str, length: int, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: shim", f"X-Auth-Token: {TOKEN}", "Content-Type: application/json",
             f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", ["/v2/p/volumes", ACTION_PATH], ids=["passthrough", "translated action"])
async def test_a_stalled_request_body_is_cut_with_408(simulator, legacy_upstream, make_shim: ShimFactory, path):
    sim, sdrs = simulator
    upstream, legacy = legacy_upstream
    shim = await make_shim(sdrs=sdrs, legacy=legacy, timeouts={"request_body_idle": 0.3})
    reader, writer = await connect(shim)
    writer.write(head("POST", path, 100) + b'{"os-reprot')  # ...and nothing more
    try:
        status, headers, body = await read_answer(reader)
    finally:
        writer.close()

    assert status == 408
    assert json.loads(body)["requestTimeout"]["message"] == "The request body stalled: nothing arrived for 0.3 seconds."
    assert headers["connection"] == "close"
    assert upstream.requests == [] and sim.requests == []


@dataclass
class HeldUpstream:
    """A legacy endpoint that reads each request body whole, then answers once `release` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[tuple[str, int]] = field(default_factory=list)
    arrived: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        body = await request.read()
        self.seen.append((request.path, len(body)))
        if request.path.startswith("/held"):
            await self.release.wait()
        return web.json_response({"upstream": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1048576)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def held_upstream() -> AsyncIterator[tuple[HeldUpstream, str]]:
    upstream = HeldUpstream()
    runner, url = await start_server(upstream.app())
    yield upstream, url
    upstream.release.set()
    await runner.cleanup()


POOL_OF_TWO = {"limits": {"pool_connections": 2}, "timeouts": {"legacy": {"connect": 0.5, "read": 10, "total": 20}}}


async def test_slow_uploads_do_not_hold_the_legacy_pool(held_upstream, make_shim: ShimFactory):
    """Three clients sending their bodies a byte at a time, with a pool of two: their bodies are
    read before a pooled connection is taken, so everybody else is still served."""
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, **POOL_OF_TWO)
    slow = [await connect(shim) for _ in range(3)]
    for _, writer in slow:
        writer.write(head("PUT", "/v2/p/volumes/v1", 1000) + b"{")
        await writer.drain()

    reply = await call("GET", shim + "/v2/p/volumes")

    assert reply.status == 200, reply.body
    assert upstream.seen == [("/v2/p/volumes", 0)]  # none of the slow uploads reached the pool
    for _, writer in slow:
        writer.close()


async def test_a_stalled_large_upload_is_cut_before_it_takes_a_pooled_connection(
        held_upstream, make_shim: ShimFactory):
    """A body too large to read into memory is read into a temporary file first; when the client
    stalls, the upload is cut (408) without a pooled connection ever being taken, and its room in the
    spool is given back."""
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy,
                           limits={"pool_connections": 1, "request_buffer_bytes": 1024},
                           timeouts={"request_body_idle": 0.3, "legacy": {"connect": 0.5, "read": 10, "total": 20}})
    reader, writer = await connect(shim)
    writer.write(head("PUT", "/v2/p/blob", 100_000) + b"x" * 4096)

    status, headers, body = await read_answer(reader)
    writer.close()
    after = await call("GET", shim + "/v2/p/volumes")

    assert status == 408 and headers["connection"] == "close", body
    assert json.loads(body)["requestTimeout"]["message"] == "The request body stalled: nothing arrived for 0.3 seconds."
    assert after.status == 200, after.body
    assert upstream.seen == [("/v2/p/volumes", 0)]  # the cut upload never reached the legacy endpoint
    assert await metric(shim, "shim_legacy_pool_in_use") == 0
    assert await metric(shim, "shim_request_spool_bytes") == 0


async def test_a_hundred_slow_large_uploads_leave_the_legacy_pool_to_everyone_else(
        held_upstream, make_shim: ShimFactory):
    """100 clients uploading bodies larger than the in-memory buffer at a byte a second, with the
    default pool of 100 legacy connections: their bodies go to temporary files first, so none of
    them holds a pooled connection, and a healthy GET is still answered 200 (not 503)."""
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy,
                           limits={"request_buffer_bytes": 1024, "request_spool_bytes": 100 * 65536,
                                   "request_body_min_rate": 0})
    uploaders = [await connect(shim) for _ in range(100)]
    for _, writer in uploaders:
        writer.write(head("PUT", "/v2/p/blob", 65536) + b"x" * 2048)  # past the buffer: a temporary file

    async def trickle(writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(1)

    trickles = [asyncio.create_task(trickle(writer)) for _, writer in uploaders]
    try:
        async def all_uploading() -> bool:
            return await metric(shim, "shim_requests_in_flight") >= 100

        await eventually(all_uploading, "all 100 uploads are being read")
        reply = await call("GET", shim + "/v2/p/volumes")

        assert reply.status == 200, reply.body
        assert upstream.seen == [("/v2/p/volumes", 0)]  # no upload reached (or holds) the legacy endpoint
        assert await metric(shim, "shim_legacy_pool_in_use") == 0
        assert await metric(shim, "shim_request_spool_bytes") == 100 * 65536  # each reserved its length
    finally:
        for task in trickles:
            task.cancel()
        for _, writer in uploaders:
            writer.close()


async def test_a_spooled_upload_reaches_the_legacy_endpoint_whole_with_its_length(
        held_upstream, make_shim: ShimFactory):
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, limits={"request_buffer_bytes": 1024})
    body = bytes(range(256)) * 400

    reply = await call("PUT", shim + "/v2/p/blob", body=body)

    assert reply.status == 200, reply.body
    assert upstream.seen == [("/v2/p/blob", len(body))]
    assert await metric(shim, "shim_request_spool_bytes") == 0


async def test_uploads_beyond_the_spool_are_refused_and_never_reach_the_legacy_endpoint(
        held_upstream, make_shim: ShimFactory):
    """The temporary files are bounded all together: an upload that does not fit beside the others
    is 503 with Retry-After, one larger than the whole spool 400; both close the connection unread."""
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy,
                           limits={"request_buffer_bytes": 1024, "request_spool_bytes": 100_000})
    first_reader, first = await connect(shim)
    first.write(head("PUT", "/v2/p/first", 60_000) + b"x" * 2048)

    async def first_spooling() -> bool:
        return await metric(shim, "shim_request_spool_bytes") == 60_000

    await eventually(first_spooling, "the first upload is in the spool")
    second_reader, second = await connect(shim)
    second.write(head("PUT", "/v2/p/second", 60_000) + b"x" * 2048)
    too_large_reader, too_large = await connect(shim)
    too_large.write(head("PUT", "/v2/p/huge", 100_001) + b"x" * 2048)
    try:
        busy = await read_answer(second_reader)
        huge = await read_answer(too_large_reader)
    finally:
        for writer in (first, second, too_large):
            writer.close()

    assert busy[0] == 503 and busy[1]["retry-after"] == "5" and busy[1]["connection"] == "close"
    assert "limits.request_spool_bytes" in json.loads(busy[2])["serviceUnavailable"]["message"]
    assert huge[0] == 400 and huge[1]["connection"] == "close"
    assert "at most 100000 bytes" in json.loads(huge[2])["badRequest"]["message"]
    assert upstream.seen == []


async def test_an_upload_below_the_minimum_rate_is_cut_with_408(held_upstream, make_shim: ShimFactory):
    """A byte now and then, never a pause as long as request_body_idle: still cut, once the body
    falls behind one second per request_body_min_rate bytes after the idle time."""
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy,
                           limits={"request_buffer_bytes": 1024, "request_body_min_rate": 1000},
                           timeouts={"request_body_idle": 0.5})
    reader, writer = await connect(shim)
    writer.write(head("PUT", "/v2/p/blob", 100_000) + b"x" * 100)

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"x" * 10)  # 100 bytes a second: a tenth of the minimum
            await asyncio.sleep(0.1)

    task = asyncio.create_task(trickle())
    try:
        status, headers, body = await read_answer(reader)
    finally:
        task.cancel()
        writer.close()

    assert status == 408 and headers["connection"] == "close", body
    assert "less than 1000 bytes a second" in json.loads(body)["requestTimeout"]["message"]
    assert upstream.seen == []
    assert await metric(shim, "shim_request_spool_bytes") == 0


async def test_a_client_gone_in_the_middle_of_a_spooled_upload_frees_its_room(
        held_upstream, make_shim: ShimFactory, caplog):
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, limits={"request_buffer_bytes": 1024})
    reader, writer = await connect(shim)
    writer.write(head("PUT", "/v2/p/blob", 100_000) + b"x" * 4096)

    async def spooling() -> bool:
        return await metric(shim, "shim_request_spool_bytes") == 100_000

    await eventually(spooling, "the upload is in the spool")
    writer.close()

    async def freed() -> bool:
        return await metric(shim, "shim_request_spool_bytes") == 0

    await eventually(freed, "the spool is given back")
    assert upstream.seen == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_an_exhausted_legacy_pool_refuses_at_once_with_503(held_upstream, make_shim: ShimFactory):
    upstream, legacy = held_upstream
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=legacy, **POOL_OF_TWO)
    held = [asyncio.create_task(call("GET", f"{shim}/held/{number}")) for number in range(2)]

    async def pool_in_use() -> bool:
        return len(upstream.seen) == 2

    await eventually(pool_in_use, "both pooled connections are in use")
    refused = await call("GET", shim + "/v2/p/volumes")
    upstream.release.set()
    answered = [reply.status for reply in await asyncio.gather(*held)]

    assert refused.status == 503
    name, inner = refused.fault()
    assert name == "serviceUnavailable" and "limits.pool_connections" in inner["message"]
    assert refused.headers["Retry-After"] == "1"
    assert answered == [200, 200]
    assert await metric(shim, "shim_legacy_pool_refused_total") == 1
