"""The legacy passthrough, over real loopback sockets: client -> shim -> a purpose-made legacy upstream.

Request-side checks read what the upstream actually received (raw path, raw header lines, body
bytes); response-side checks read what a client receives from the shim, without decompression.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from conftest import GO_HEADERS, PROJECT, UNMAPPED_RCG, ShimFactory, action_url, call, raw_exchange, start_server
from shim.runtime.legacy_stub import DEMO_GROUP, UNMIGRATED_GROUP, legacy_stub_app
from shim.translate import actions as rcg_actions
from shim.upstreams.headers import (
    HOP_BY_HOP,
    NotUtf8Header,
    forwarded_request_headers,
    is_hop_by_hop,
    outgoing_request_fields,
    without_hop_by_hop,
)

NO_SDRS = "http://127.0.0.1:9"  # the passthrough never calls SDRS; nothing needs to listen here
REQUEST_ID = re.compile(r"^req-[0-9a-f-]{36}$")
Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    target: str  # the request target exactly as it arrived (raw path and query)
    headers: list[tuple[str, str]]  # raw header lines, in order, repeats kept
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def names(self) -> list[str]:
        return [key.lower() for key, _ in self.headers]


@dataclass
class Upstream:
    """A legacy endpoint that records each request, then answers with `respond` (default: 200 JSON)."""

    respond: Responder | None = None
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        if self.respond is not None:
            return await self.respond(request)
        return web.json_response({"upstream": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


StartUpstream = Callable[..., Awaitable[Upstream]]


@pytest.fixture
async def upstream() -> AsyncIterator[StartUpstream]:
    runners: list[web.AppRunner] = []

    async def start(respond: Responder | None = None) -> Upstream:
        up = Upstream(respond)
        runner, up.url = await start_server(up.app())
        runners.append(runner)
        return up

    yield start
    for runner in runners:
        await runner.cleanup()


async def shim_to(make_shim: ShimFactory, up: Upstream, **config: Any) -> str:
    return await make_shim(sdrs=NO_SDRS, legacy=up.url, **config)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# request side


async def test_method_path_query_and_body_reach_upstream_byte_for_byte(make_shim, upstream) -> None:
    up = await upstream()
    shim = await shim_to(make_shim, up)
    target = "/v2/p/volumes/a%2Fb%20c/%7Euser;x=1?q=1&q=2&name=%C3%A9+x&empty="
    body = b'{"volume": {"name": "v\\u00e9"}}\n\x00\xff'
    request = (
        f"PATCH {target} HTTP/1.1\r\nHost: evs.example\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    status, _, _ = await raw_exchange(shim, request)
    assert status == 200
    (seen,) = up.seen
    assert (seen.method, seen.target, seen.body) == ("PATCH", target, body)
    assert seen.values("Content-Length") == [str(len(body))]  # the client's length, not re-chunked
    assert seen.values("Transfer-Encoding") == []


async def test_absolute_form_target_and_host_cannot_redirect_the_request(make_shim, upstream) -> None:
    up = await upstream()
    shim = await shim_to(make_shim, up)
    request = (
        b"GET http://elsewhere.example:4444/v2/p/volumes?limit=1 HTTP/1.1\r\n"
        b"Host: elsewhere.example:4444\r\nConnection: close\r\n\r\n"
    )
    status, _, _ = await raw_exchange(shim, request)
    assert status == 200  # answered by our upstream: nothing listens on elsewhere.example
    (seen,) = up.seen
    assert seen.target == "/v2/p/volumes?limit=1"
    assert seen.values("Host") == [up.url.removeprefix("http://")]  # the legacy endpoint's own
    assert seen.values("X-Forwarded-Host") == ["elsewhere.example:4444"]


async def test_host_is_the_legacy_endpoints_unless_preserve_host(make_shim, upstream) -> None:
    up = await upstream()
    shim = await make_shim(sdrs=NO_SDRS, legacy=up.url, passthrough={"preserve_host": True})
    request = b"GET /v2/p/volumes HTTP/1.1\r\nHost: evs.eu-de.example\r\nConnection: close\r\n\r\n"
    status, _, _ = await raw_exchange(shim, request)
    assert status == 200
    (seen,) = up.seen
    assert seen.values("Host") == ["evs.eu-de.example"]
    assert seen.values("X-Forwarded-Host") == []


async def test_request_headers_hop_by_hop_removed_end_to_end_kept(make_shim, upstream) -> None:
    up = await upstream()
    shim = await shim_to(make_shim, up)
    request = (
        b"GET /v2/p/volumes HTTP/1.1\r\n"
        b"Host: evs.eu-de.example\r\n"
        b"Connection: close, X-Drop-Me\r\n"
        b"connection: x-drop-too\r\n"
        b"X-Drop-Me: 1\r\nX-DROP-TOO: 2\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: h2c\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n"
        b"X-Auth-Token: gAAAAABtoken\r\n"
        b"X-Custom: one\r\nX-Custom: two\r\n"
        b"X-Forwarded-For: 10.1.2.3\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"\r\n"
    )
    status, _, _ = await raw_exchange(shim, request)
    assert status == 200
    (seen,) = up.seen
    # Exactly these, in this order: no hop-by-hop field, nothing aiohttp adds of its own
    # (no User-Agent, Accept, Accept-Encoding, Content-Type, Content-Length, Transfer-Encoding).
    assert seen.names() == [
        "host", "x-auth-token", "x-custom", "x-custom", "x-forwarded-for", "x-forwarded-proto",
        "x-forwarded-host", "x-request-id", "x-openstack-request-id",
    ]
    assert seen.values("Host") == [up.url.removeprefix("http://")]
    assert seen.values("X-Forwarded-Host") == ["evs.eu-de.example"]
    assert seen.values("X-Auth-Token") == ["gAAAAABtoken"]
    assert seen.values("X-Custom") == ["one", "two"]
    assert seen.values("X-Forwarded-For") == ["10.1.2.3, 127.0.0.1"]
    assert seen.values("X-Forwarded-Proto") == ["http"]
    (request_id,) = seen.values("X-Request-Id")
    assert REQUEST_ID.match(request_id) and seen.values("X-Openstack-Request-Id") == [request_id]


async def test_client_request_ids_are_sent_upstream_and_answered(make_shim, upstream) -> None:
    up = await upstream()
    shim = await shim_to(make_shim, up)
    reply = await call("GET", f"{shim}/v2/p/volumes", headers={"X-Request-Id": "client-id-1"})
    (seen,) = up.seen
    assert seen.values("X-Request-Id") == ["client-id-1"]  # not replaced or duplicated
    assert seen.values("X-Openstack-Request-Id") == ["client-id-1"]  # filled in from it
    assert reply.headers.getall("X-Request-Id") == ["client-id-1"]
    assert reply.headers.getall("X-Openstack-Request-Id") == ["client-id-1"]


async def test_gzip_request_body_reaches_upstream_still_compressed(make_shim) -> None:
    """Needs the shim's server to leave request bodies encoded (build_app: auto_decompress False)."""
    seen: list[tuple[str | None, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Content-Encoding"), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # see the bytes on the wire
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        shim = await make_shim(sdrs=NO_SDRS, legacy=f"http://127.0.0.1:{port}")
        body = gzip.compress(b'{"volume": {"size": 10}}' * 20)
        await call("POST", f"{shim}/v2/p/volumes", body=body, headers={"Content-Encoding": "gzip"})
        assert seen == [("gzip", body)]
    finally:
        await runner.cleanup()


async def test_get_without_body_gains_no_body_framing(make_shim, upstream) -> None:
    up = await upstream()
    shim = await shim_to(make_shim, up)
    await call("GET", f"{shim}/v2/p/volumes")
    (seen,) = up.seen
    assert seen.values("Transfer-Encoding") == [] and seen.values("Content-Length") == []
    assert seen.body == b""


async def test_large_chunked_upload_is_read_whole_and_relayed_with_its_length(make_shim, upstream) -> None:
    """Over limits.request_buffer_bytes, the body is read into a temporary file before a legacy
    connection is taken, then relayed from there with its real length."""
    up = await upstream()
    shim = await shim_to(make_shim, up)
    payload = random.Random(7).randbytes(3 * 1024 * 1024 + 17)  # far above the app's client_max_size

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    async with aiohttp.ClientSession() as session:
        async with session.put(f"{shim}/v2/p/blob", data=chunks()) as response:
            assert response.status == 200
    (seen,) = up.seen
    assert seen.body == payload
    assert seen.values("Transfer-Encoding") == [] and seen.values("Content-Length") == [str(len(payload))]


# ---------------------------------------------------------------------------------------------
# response side


async def test_status_reason_and_every_header_value_come_back(make_shim, upstream) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=207, reason="Partly Done", body=b"{}", content_type="application/json")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Multi", "two")
        response.headers["Connection"] = "X-Upstream-Hop"
        response.headers["X-Upstream-Hop"] = "secret-to-this-hop"
        response.headers["Keep-Alive"] = "timeout=3"
        return response

    up = await upstream(respond)
    shim = await shim_to(make_shim, up)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get(f"{shim}/v2/p/volumes") as response:
            assert (response.status, response.reason) == (207, "Partly Done")
            assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
            assert response.headers.getall("X-Multi") == ["one", "two"]
            assert "X-Upstream-Hop" not in response.headers and "Keep-Alive" not in response.headers
            assert await response.read() == b"{}"


async def test_teapot_status_kept(make_shim, upstream) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(status=418, text="short and stout")

    shim = await shim_to(make_shim, await upstream(respond))
    reply = await call("GET", f"{shim}/brew")
    assert (reply.status, reply.body) == (418, b"short and stout")


async def test_gzip_body_arrives_compressed_and_fixed_length(make_shim, upstream) -> None:
    document = json.dumps({"volumes": [{"id": str(i)} for i in range(500)]}).encode()
    compressed = gzip.compress(document)

    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(body=compressed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    up = await upstream(respond)
    shim = await shim_to(make_shim, up)
    reply = await call("GET", f"{shim}/v2/p/volumes/detail", headers={"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.body == compressed  # the same bytes, still compressed
    assert reply.headers["Content-Length"] == str(len(compressed))
    assert "Transfer-Encoding" not in reply.headers  # fixed length stays fixed length
    assert up.seen[0].values("Accept-Encoding") == ["gzip"]


async def test_redirect_is_returned_not_followed(make_shim, upstream) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        if request.path == "/followed":
            return web.Response(text="followed")
        return web.Response(status=302, headers={"Location": "/followed"})

    up = await upstream(respond)
    shim = await shim_to(make_shim, up)
    reply = await call("GET", f"{shim}/v2/p/old")
    assert reply.status == 302 and reply.headers["Location"] == "/followed"
    assert [seen.target for seen in up.seen] == ["/v2/p/old"]


async def test_large_chunked_answer_streams_intact(make_shim, upstream) -> None:
    payload = random.Random(3).randbytes(8 * 1024 * 1024 + 5)

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(payload), 256 * 1024):
            await response.write(payload[start : start + 256 * 1024])
        await response.write_eof()
        return response

    shim = await shim_to(make_shim, await upstream(respond))
    reply = await call("GET", f"{shim}/v2/p/big")
    assert reply.status == 200
    assert reply.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in reply.headers
    assert len(reply.body) == len(payload) and reply.body == payload


async def test_a_chunked_answer_to_an_http_1_0_keep_alive_client_ends_with_the_connection(make_shim, upstream) -> None:
    """HTTP/1.0 has no chunked framing: an answer the legacy side sent chunked reaches an HTTP/1.0
    client without a length, so its end can only be the connection's end. The shim closes it (and
    never says keep-alive); otherwise the client waits forever and would read the next answer on
    the connection as part of this body."""
    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"volumes": ')
        await response.write(b"[]}")
        await response.write_eof()
        return response

    shim = await shim_to(make_shim, await upstream(respond))
    address = URL(shim)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    request = b"GET /v2/p/volumes HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    writer.write(request + request)  # a second request the client would send on a kept-alive connection
    try:
        data = await asyncio.wait_for(reader.read(), 5)  # until the shim closes the connection
    finally:
        writer.close()

    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"keep-alive" not in head.lower() and b"content-length" not in head.lower()
    assert body == b'{"volumes": []}'  # one answer, then the end of the connection


async def test_a_sized_answer_to_an_http_1_0_keep_alive_client_keeps_the_connection(make_shim, upstream) -> None:
    shim = await shim_to(make_shim, await upstream())
    address = URL(shim)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(b"GET /v2/p/one HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
                 b"GET /v2/p/two HTTP/1.0\r\nHost: x\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert data.count(b"HTTP/1.0 200") == 2 and data.count(b'{"upstream": true}') == 2


async def test_head_and_204_have_no_body(make_shim, upstream) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(body=b"x" * 1234)  # aiohttp sends the length, not the body
        return web.Response(status=204)

    shim = await shim_to(make_shim, await upstream(respond))
    head = await call("HEAD", f"{shim}/v2/p/thing")
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", "1234")
    status, headers, body = await raw_exchange(
        shim, b"DELETE /v2/p/thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, body) == (204, b"")
    assert "Transfer-Encoding" not in headers and "Content-Length" not in headers


async def test_request_ids_on_answers_one_id_the_upstreams_own_kept(make_shim, upstream) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        if request.path == "/own":
            return web.Response(text="x", headers={"X-Openstack-Request-Id": "req-from-upstream"})
        return web.Response(text="x")

    up = await upstream(respond)
    shim = await shim_to(make_shim, up)
    plain = await call("GET", f"{shim}/plain")
    (sent,) = up.seen[0].values("X-Request-Id")
    assert plain.headers.getall("X-Request-Id") == [sent]  # the id the upstream was given
    assert plain.headers.getall("X-Openstack-Request-Id") == [sent]
    own = await call("GET", f"{shim}/own")
    assert own.headers.getall("X-Openstack-Request-Id") == ["req-from-upstream"]
    assert own.headers.getall("X-Request-Id") == ["req-from-upstream"]  # one id, not the shim's beside it


@pytest.mark.parametrize("body", [
    b'{"os-reprotect-replication-consistency-group":null}\n',  # as golangsdk sends it
    b'{"os-failover-replication-consistency-group": {}}',
    b'{"os-some-future-action": {"x": 1}}',  # any key: the legacy endpoint judges it
    b'not json at all',
])
async def test_an_action_on_an_unmapped_group_goes_to_legacy_with_the_exact_body(
    make_shim, upstream, simulator, body
) -> None:
    """An unmapped group is the legacy endpoint's entirely: its actions are relayed unchanged."""
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, body=b"", headers={"X-Answered-By": "legacy"})

    up = await upstream(respond)
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, legacy=up.url)
    reply = await call("POST", action_url(shim, rcg=UNMAPPED_RCG), body=body, headers=GO_HEADERS)
    assert (reply.status, reply.body, reply.headers.get("X-Answered-By")) == (200, b"", "legacy")
    (seen,) = up.seen
    assert seen.method == "POST"
    assert seen.target == f"/v2/{PROJECT}/os-vendor-replication-consistency-groups/{UNMAPPED_RCG}/action"
    assert seen.body == body
    assert seen.values("X-Auth-Token") == [GO_HEADERS["X-Auth-Token"]]
    assert seen.values("User-Agent") == ["golangsdk/2.0.0"]
    assert sim.requests == []  # nothing about an unmapped group reaches SDRS


async def test_an_action_on_an_unmapped_group_without_a_legacy_endpoint_is_404(simulator, make_shim) -> None:
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url)
    reply = await call("POST", action_url(shim, rcg=UNMAPPED_RCG), body=b'{"os-reprotect-replication-consistency'
                       b'-group": null}', headers=GO_HEADERS)
    assert reply.status == 404
    assert reply.fault()[0] == "itemNotFound"
    assert sim.requests == []


async def test_a_mapped_groups_action_with_no_sdrs_translation_never_reaches_legacy(
    make_shim, upstream, simulator, monkeypatch
) -> None:
    """Take sync's translation away: a mapped group's action is still SDRS's business, never relayed."""
    monkeypatch.delitem(rcg_actions.TRANSLATED_ACTIONS, "os-sync-replication-consistency-group", raising=False)
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    up = await upstream(respond)
    sim, sdrs_url = simulator
    shim = await make_shim(sdrs=sdrs_url, legacy=up.url)
    reply = await call("POST", action_url(shim), body=b'{"os-sync-replication-consistency-group": null}\n',
                       headers=GO_HEADERS)
    assert reply.status == 400
    assert "served by SDRS" in reply.fault()[1]["message"]
    assert up.seen == [] and sim.action_calls == []


# ---------------------------------------------------------------------------------------------
# failures


async def test_no_legacy_configured_is_a_legacy_501(make_shim) -> None:
    shim = await make_shim(sdrs=NO_SDRS)
    reply = await call("GET", f"{shim}/v2/{PROJECT}/volumes/detail")  # a call the shim never translates
    assert reply.status == 501
    name, inner = reply.fault()
    assert name == "notImplemented" and inner["code"] == "EVS.5501"
    assert REQUEST_ID.match(reply.headers["X-Request-Id"])


async def test_legacy_down_is_503_with_retry_after(make_shim) -> None:
    shim = await make_shim(sdrs=NO_SDRS, legacy=f"http://127.0.0.1:{closed_port()}")
    reply = await call("GET", f"{shim}/v2/p/volumes")
    assert reply.status == 503 and reply.headers["Retry-After"] == "5"
    assert reply.fault()[0] == "serviceUnavailable"


async def test_legacy_too_slow_is_504(make_shim, upstream) -> None:
    release = asyncio.Event()

    async def respond(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 5)
        return web.Response(text="late")

    up = await upstream(respond)
    shim = await shim_to(make_shim, up, timeouts={"legacy": {"connect": 1, "read": 0.3, "total": 1}})
    try:
        reply = await call("GET", f"{shim}/v2/p/slow")
    finally:
        release.set()
    assert reply.status == 504 and reply.fault()[0] == "gatewayTimeout"


@pytest.fixture
async def garbage_upstream() -> AsyncIterator[str]:
    """A TCP server that answers any request with bytes that are not HTTP."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_garbage_from_upstream_is_502(make_shim, garbage_upstream) -> None:
    shim = await make_shim(sdrs=NO_SDRS, legacy=garbage_upstream)
    reply = await call("GET", f"{shim}/v2/p/volumes")
    assert reply.status == 502 and reply.fault()[0] == "badGateway"


async def test_failure_mid_stream_cuts_the_connection_with_one_warning(make_shim, upstream, caplog) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"a" * 1000)
        await asyncio.sleep(0.05)
        request.transport.close()  # the legacy endpoint dies after 1000 of 100000 bytes
        return response

    shim = await shim_to(make_shim, await upstream(respond))
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        async with session.get(f"{shim}/v2/p/volumes", headers={"X-Auth-Token": "gAAAAABsecret-token"}) as response:
            assert response.status == 200 and response.headers["Content-Length"] == "100000"
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    await asyncio.sleep(0.05)  # let the shim's handler finish
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert problems[0].name == "shim.passthrough" and problems[0].exc_info is None
    assert "gAAAA" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)  # no traceback at any level


async def test_a_relayed_answers_head_leaves_with_its_first_body_bytes(make_shim, upstream) -> None:
    """One write per small answer, not two: the relayed head waits for the first body bytes and goes
    out with them (a StreamResponse would send it alone at prepare(): a second system call and TCP
    segment for every relayed answer). Seen from the client: nothing arrives while the legacy
    endpoint holds its body back, then head and body together."""
    body_due = asyncio.Event()

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "5", "Content-Type": "application/json"})
        await response.prepare(request)  # the upstream's head leaves now
        await body_due.wait()
        await response.write(b"[1,2]")
        await response.write_eof()
        return response

    shim = await shim_to(make_shim, await upstream(respond))
    host, port = shim.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET /v2/{PROJECT}/volumes HTTP/1.1\r\nHost: x\r\nX-Auth-Token: t\r\n\r\n".encode())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)  # the head is held while the body is
        body_due.set()
        answer = await asyncio.wait_for(reader.readuntil(b"[1,2]"), 5)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n[1,2]" in answer
    finally:
        body_due.set()  # a failed assertion must not leave the legacy handler waiting
        writer.close()


async def test_client_going_away_mid_stream_logs_nothing_alarming(make_shim, upstream, caplog) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(200):
                await response.write(b"b" * 65536)
                await asyncio.sleep(0.001)
            await response.write_eof()
        except ConnectionError:
            pass  # the shim hung up on us too; any error record below is then the shim's own
        return response

    shim = await shim_to(make_shim, await upstream(respond))
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{shim}/v2/p/big") as response:
            await response.content.read(65536)
            response.close()  # the client hangs up after the first chunk
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not any(r.exc_info for r in caplog.records), caplog.text


# ---------------------------------------------------------------------------------------------
# shim/headers.py and shim/legacy_stub.py


def test_without_hop_by_hop_keeps_order_repeats_and_drops_connection_tokens() -> None:
    headers = CIMultiDict(
        [("Host", "h"), ("CONNECTION", "x-a"), ("X-A", "1"), ("X-B", "1"), ("Connection", "X-C , keep-alive"),
         ("x-c", "1"), ("X-B", "2"), ("transfer-encoding", "chunked"), ("Te", "trailers"), ("Set-Cookie", "a"),
         ("Set-Cookie", "b")]
    )
    assert list(without_hop_by_hop(headers).items()) == [
        ("Host", "h"), ("X-B", "1"), ("X-B", "2"), ("Set-Cookie", "a"), ("Set-Cookie", "b")
    ]
    assert all(is_hop_by_hop(name.upper()) for name in HOP_BY_HOP) and not is_hop_by_hop("X-Auth-Token")


async def test_forwarded_request_headers_folds_x_forwarded_for() -> None:
    from aiohttp.test_utils import make_mocked_request

    request = make_mocked_request(
        "GET", "/", headers=CIMultiDict([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"),
                                         ("Upgrade", "h2c")])
    )
    headers = forwarded_request_headers(request)
    peer = request.remote
    assert headers.getall("X-Forwarded-For") == [", ".join(["1.1.1.1", "2.2.2.2"] + ([peer] if peer else []))]
    assert headers["X-Forwarded-Proto"] == "http" and "Upgrade" not in headers


async def test_legacy_stub_answers_in_the_legacy_shape() -> None:
    runner, url = await start_server(legacy_stub_app())
    try:
        base = f"{url}/v2/{PROJECT}/os-vendor-replication-consistency-groups"
        token = {"X-Auth-Token": "t"}  # the stand-in, like EVS, wants one
        listed = await call("GET", base, headers=token)
        assert listed.status == 200 and listed.headers["Content-Type"].startswith("application/json")
        group, unmigrated = listed.json()["replication_consistency_groups"]
        assert group == DEMO_GROUP and isinstance(group["replication_ids"], list)
        assert unmigrated == UNMIGRATED_GROUP and unmigrated["id"] != group["id"]
        assert group["fault_level"] == "0" and group["updated_at"] is None
        one = await call("GET", f"{base}/{group['id']}", headers=token)
        assert one.json() == {"replication_consistency_group": DEMO_GROUP}
        missing = await call("GET", f"{base}/6a1f0d39-5b8f-4a86-9f52-2b0a9d5f0c11", headers=token)
        assert missing.status == 404 and missing.fault() == (
            "itemNotFound", {"message": missing.json()["itemNotFound"]["message"], "code": "EVS.5404"}
        )
        acted = await call("POST", f"{base}/{group['id']}/action",
                           body=b'{"os-stop-replication-consistency-group":null}\n', headers=token)
        assert (acted.status, acted.body) == (200, b"")
    finally:
        await runner.cleanup()


_NAMES = ["Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Content-Length", "X-Request-Id",
          "X-Openstack-Request-Id", "X-Auth-Token", "X-Custom", "Connection", "Keep-Alive", "TE", "Upgrade"]
_VALUES = st.sampled_from(["", " ", "a", "10.0.0.1", " 10.0.0.2 ", "x-custom", "X-Auth-Token, te", "host",
                           "keep-alive", "évs", "caf\udce9"])
_FIELDS = st.lists(st.tuples(st.sampled_from(_NAMES).map(lambda name: name if len(name) % 2 else name.upper()),
                             _VALUES), max_size=12)


def _as_passthrough_did(request, host: str, keep_client_host: bool, request_id: str | None,
                        drop_length: bool) -> list[tuple[str, str]] | None:
    """The fields as the passthrough built them on aiohttp's client: forwarded_request_headers, its
    edits, then aiohttp's ClientRequest (Host first). None where it refused a value that is not UTF-8."""
    headers = forwarded_request_headers(request)
    for value in headers.values():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
    if not keep_client_host:
        client_host = headers.popall("Host", None)
        if client_host:
            headers["X-Forwarded-Host"] = client_host[0]
        headers["Host"] = host
    if request_id:
        for name in ("X-Request-Id", "X-Openstack-Request-Id"):
            if name not in headers:
                headers[name] = request_id
    if drop_length:
        headers.popall("Content-Length", None)
    sent: CIMultiDict[str] = CIMultiDict()
    sent["Host"] = host
    for name, value in headers.items():
        if name.lower() == "host":
            sent[name] = value
        else:
            sent.add(name, value)
    return [(name.lower(), value) for name, value in sent.items()]


@given(fields=_FIELDS, keep_client_host=st.booleans(), request_id=st.sampled_from([None, "req-1"]),
       drop_length=st.booleans())
@settings(max_examples=400, deadline=None)
def test_the_one_pass_header_builder_sends_what_the_aiohttp_client_path_sent(
    fields, keep_client_host, request_id, drop_length
) -> None:
    """outgoing_request_fields (one pass, for the lean client) against the steps it replaced. (A plain
    stand-in for aiohttp's request: its test helper cannot hold a value aiohttp decoded with
    surrogateescape.)"""
    request = SimpleNamespace(headers=CIMultiDictProxy(CIMultiDict(fields)), remote="127.0.0.1", scheme="http")
    expected = _as_passthrough_did(request, "legacy.example:8776", keep_client_host, request_id, drop_length)
    ids = (("X-Request-Id", request_id), ("X-Openstack-Request-Id", request_id)) if request_id else ()
    try:
        built, has_length = outgoing_request_fields(
            request.headers.items(), peer=request.remote, scheme=request.scheme, host="legacy.example:8776",
            keep_client_host=keep_client_host, request_ids=ids, drop_length=drop_length)
    except NotUtf8Header:
        assert expected is None
        return
    assert expected is not None
    assert [(name.lower(), value) for name, value in built] == expected
    assert has_length == any(name == "content-length" for name, _ in expected)
