"""Bounded memory and time whatever a peer does, over loopback: upstream answers larger than the
shim reads, an SDRS whose paging never ends, request heads that never end or never come, more
connections than allowed, request bodies that stall, and a legacy pool that slow clients would hold.
Each test asserts what the client got (and what the upstreams saw), not how much memory was used."""

from __future__ import annotations

import asyncio
import json
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

