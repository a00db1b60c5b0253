"""nginx in front of the shim (`shim front-config`): a real nginx (Debian's package; `.ci/run` installs
it) runs the generated nginx.conf on loopback in front of a real shim, the SDRS simulator and
legacy upstreams that record what reaches them.

To tell a request nginx sent straight to the legacy endpoint from one the shim passed on, the shim
under test may get a legacy upstream of its own (`World.behind_shim`): `World.direct`, the one in the
front's config, must then see nothing of the translated URL space.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from conftest import (
    DEFAULT_MAPPING,
    GROUP,
    OTHER_PROJECT,
    PROJECT,
    RCG,
    REPROTECT_BODY,
    TOKEN,
    raw_exchange,
    start_server,
    write_mappings,
)
from shim import cli
from shim.front.nginx import LOG_PATH_CAPTURE, PLAIN_TARGET_REGEX, SHIM_BOUND, front_routes_to_shim
from shim.translate.paths import disguises_a_translated_url, names_a_translated_url
from shim.translate.url_space import TRANSLATED_COLLECTIONS

COLLECTION = "os-vendor-replication-consistency-groups"
ACTION_PATH = f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action"
NEW_REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding"}
REQUEST_ID_HEADERS = {"x-request-id", "x-openstack-request-id"}
READY_SECONDS = 10  # how long nginx may take to start listening (a liveness bound, not a measurement)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("nginx is not installed; `.ci/run` installs it (apt-get install nginx). The nginx front "
                    "cannot be tested without it.")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


def generate(config: Path, listen: str, *extra: str) -> tuple[int, str, str]:
    """`shim front-config` in process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(["front-config", "--config", str(config), "--listen", listen, *extra])
        except SystemExit as exit_:
            status = int(exit_.code or 0)
    return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# the world: legacy upstreams that record, the shim, nginx with the generated config


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


FIXED_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"
GZIPPED = gzip.compress(b'{"volumes": [' + b'{"id": "v"},' * 200 + b'{"id": "w"}]}')


@dataclass
class Legacy:
    """A legacy EVS stand-in: records raw requests; a few paths give answers worth relaying exactly."""

    seen: list[Seen] = field(default_factory=list)
    body_started: asyncio.Event = field(default_factory=asyncio.Event)
    client_got_first_part: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/p/stream":
            return await self.stream(request)
        body = await request.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        own = CIMultiDict([("Server", "legacy-evs/1.0"), ("Date", FIXED_DATE)])
        if request.path == "/v2/p/rich":
            own.extend([("Content-Type", "application/json"), ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"),
                        ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/; HttpOnly"),
                        ("X_Legacy_Under", "kept"), ("Location", "http://evs_legacy/v2/p/elsewhere"),
                        ("X-Accel-Redirect", "/v2/p/secret"), ("X-Accel-Buffering", "yes"),
                        ("X-Request-Id", "legacy-own-id")])
            return web.Response(status=201, reason="Created Here", body=GZIPPED, headers=own)
        if request.path == "/v2/p/chunked":
            response = web.StreamResponse(status=200, headers={**own, "Content-Type": "application/octet-stream"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (b"one,", b"two,", b"three"):
                await response.write(part)
            await response.write_eof()
            return response
        if request.path == "/v2/p/empty":
            return web.Response(status=204, headers=own)
        if request.path == "/v2/p/unavailable":  # the legacy endpoint's own 503: relayed, not replaced
            own.extend([("Content-Type", "application/json"), ("Retry-After", "30")])
            return web.Response(status=503, body=b'{"legacy": "busy"}', headers=own)
        return web.json_response({"upstream": True})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Needs the front to stream both ways: it reads the first part of the body while the client
        still holds the rest, and sends its second part only once the client has the first."""
        first = await request.content.readany()
        self.body_started.set()
        rest = await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"got " + first + rest + b";")
        await asyncio.wait_for(self.client_got_first_part.wait(), READY_SECONDS)
        await response.write(b"second part")
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024,
                              handler_args={"max_line_size": 65536, "max_field_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass
class Front:
    url: str
    directory: Path

    async def access_line(self, request_id: str) -> dict[str, Any]:
        """The front's JSON access line for `request_id` (nginx writes it just after answering)."""
        for _ in range(READY_SECONDS * 20):
            for line in self.access_log().splitlines():
                record = json.loads(line)
                if record["request_id"] == request_id:
                    return record
            await asyncio.sleep(0.05)
        raise AssertionError(f"no access line for {request_id}: {self.access_log()}")

    def access_log(self) -> str:
        path = self.directory / "access.log"
        return path.read_text() if path.exists() else ""


FrontFactory = Callable[..., Awaitable[Front]]


@pytest.fixture
async def start_front(tmp_path: Path) -> AsyncIterator[FrontFactory]:
    """Start nginx with the config `shim front-config` prints for a shim config with these values."""
    processes: list[subprocess.Popen[bytes]] = []

    async def factory(*, shim: str, sdrs: str, legacy: str | None, cli_args: tuple[str, ...] = (),
                      **config: Any) -> Front:
        directory = tmp_path / f"front{len(processes)}"
        write_mappings(directory / "mappings", DEFAULT_MAPPING)
        shim_url = URL(shim)
        config_path = directory / "shim.yaml"
        config_path.write_text(yaml.safe_dump({
            "listen": {"host": shim_url.host, "port": shim_url.port},
            "upstreams": {"sdrs": sdrs, "legacy": legacy}, "mappings": "./mappings", **config}))
        port = free_port()
        status, conf, err = generate(config_path, f"127.0.0.1:{port}", "--access-log", "access.log", *cli_args)
        assert status == 0, err
        (directory / "nginx.conf").write_text(conf)
        with open(directory / "nginx.stderr", "wb") as stderr:
            process = subprocess.Popen([nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf")],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        processes.append(process)
        for _ in range(READY_SECONDS * 20):
            if process.poll() is not None:
                pytest.fail(f"nginx exited: {(directory / 'nginx.stderr').read_text()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return Front(f"http://127.0.0.1:{port}", directory)
            await asyncio.sleep(0.05)
        pytest.fail(f"nginx did not listen: {(directory / 'nginx.stderr').read_text()}")

    yield factory
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class World:
    front: Front
    shim: str
    sim: Any
    direct: Legacy  # the legacy upstream in the front's config
    direct_url: str
    behind_shim: Legacy  # the one the shim passes to (the same object unless told apart)


@pytest.fixture
async def make_world(simulator, make_shim, start_front) -> AsyncIterator[Callable[..., Awaitable[World]]]:
    runners: list[web.AppRunner] = []

    async def factory(*, separate_legacy: bool = False, **config: Any) -> World:
        sim, sdrs = simulator
        direct = Legacy()
        runner, direct_url = await start_server(direct.app())
        runners.append(runner)
        behind_shim, behind_shim_url = direct, direct_url
        if separate_legacy:
            behind_shim = Legacy()
            runner, behind_shim_url = await start_server(behind_shim.app())
            runners.append(runner)
        shim = await make_shim(sdrs=sdrs, legacy=behind_shim_url, **config)
        front = await start_front(shim=shim, sdrs=sdrs, legacy=direct_url, **config)
        return World(front, shim, sim, direct, direct_url, behind_shim)

    yield factory
    for runner in runners:
        await runner.cleanup()


@dataclass
class Answer:
    status: int
    reason: str
    raw_headers: list[tuple[str, str]]
    body: bytes

    @property
    def headers(self) -> CIMultiDict[str]:
        return CIMultiDict(self.raw_headers)

    def fault(self) -> tuple[str, dict[str, str]]:
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.raw_headers
        ((name, inner),) = json.loads(self.body).items()
        assert set(inner) == {"message", "code"}, inner
        return name, inner


async def fetch(method: str, url: str, *, body: bytes | None = None, headers: Any = None) -> Answer:
    """One request as a legacy client sends it; the answer as it came (no decompression)."""
    async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.request(method, URL(url, encoded=True), data=body, headers=headers or {},
                                   allow_redirects=False) as response:
            raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
            return Answer(response.status, response.reason or "", raw, await response.read())


def raw_request(method: str, target: bytes, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: shim.local"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def token_headers(**extra: str) -> dict[str, str]:
    return {"X-Auth-Token": TOKEN, "Content-Type": "application/json", "Accept": "application/json", **extra}


def end_to_end(answer: Answer, *, without: set[str] | frozenset[str] = frozenset()) -> Counter[tuple[str, str]]:
    return Counter((name.lower(), value) for name, value in answer.raw_headers
                   if name.lower() not in HOP_BY_HOP | without)


# ---------------------------------------------------------------------------------------------
# passthrough: straight to the legacy endpoint, as it answered


@pytest.mark.parametrize("path", ["/v2/p/rich", "/v2/p/chunked", "/v2/p/empty", "/v2/p/unavailable"])
async def test_a_passthrough_answer_reaches_the_client_as_the_legacy_endpoint_sent_it(make_world, path):
    """Status and reason, every header value (two Set-Cookie, underscores, the legacy Server, Date,
    Location, X-Accel-* relayed and not obeyed), the body byte for byte (gzip stays gzip), and the
    legacy endpoint's own 5xx unchanged. The front adds only the request ids the answer lacks."""
    world = await make_world()

    direct = await fetch("GET", world.direct_url + path, headers={"Accept-Encoding": "gzip"})
    front = await fetch("GET", world.front.url + path, headers={"Accept-Encoding": "gzip"})

    assert (front.status, front.reason, front.body) == (direct.status, direct.reason, direct.body)
    added = REQUEST_ID_HEADERS - {name.lower() for name, _ in direct.raw_headers}
    assert end_to_end(front, without=added) == end_to_end(direct, without=added)
    assert front.headers.getall("Set-Cookie", []) == direct.headers.getall("Set-Cookie", [])
    for name in added:
        assert NEW_REQUEST_ID.match(front.headers[name]), front.raw_headers
    assert [seen.raw_path for seen in world.direct.seen] == [path, path]


async def test_a_passthrough_request_reaches_the_legacy_endpoint_as_the_shim_would_relay_it(make_world):
    """Raw target and query, every header (underscores, dots, repeats, credentials the legacy side
    needs), the body; Host is the legacy endpoint's own with the client's in X-Forwarded-Host, and
    the request id the client got is the one the legacy endpoint saw."""
    world = await make_world()
    target = "/v2/p/volumes/vol_1/action?name=a%20b&marker=%2F"
    headers = CIMultiDict([("X-Auth-Token", TOKEN), ("X_Under_Score", "1"), ("X-Dotted.Name", "2"),
                           ("X-Multi", "first"), ("X-Multi", "second"), ("Proxy-Authorization", "Basic eDp5"),
                           ("Proxy-Connection", "keep-alive"), ("Trailer", "X-T"), ("Keep-Alive", "5"),
                           ("TE", "trailers"),
                           ("Host", "evs.client.example:8443"), ("Content-Type", "application/json")])

    answer = await fetch("POST", world.front.url + target, body=b'{"os-extend": {"new_size": 2}}', headers=headers)

    assert answer.status == 200
    (seen,) = world.direct.seen
    assert (seen.method, seen.raw_path, seen.body) == ("POST", target, b'{"os-extend": {"new_size": 2}}')
    assert seen.header("Host") == [URL(world.direct_url).raw_authority]
    assert seen.header("X-Forwarded-Host") == ["evs.client.example:8443"]
    assert (seen.header("X_Under_Score"), seen.header("X-Dotted.Name")) == (["1"], ["2"])
    assert seen.header("X-Multi") == ["first", "second"]
    assert seen.header("X-Auth-Token") == [TOKEN]
    for hop_by_hop in ("Proxy-Authorization", "Proxy-Connection", "Trailer", "Keep-Alive", "TE"):
        assert seen.header(hop_by_hop) == [], hop_by_hop
    assert seen.header("X-Request-Id") == seen.header("X-Openstack-Request-Id") == [answer.headers["X-Request-Id"]]
    assert NEW_REQUEST_ID.match(answer.headers["X-Request-Id"])


async def test_a_passthrough_body_of_any_size_is_relayed(make_world):
    """nginx's default 1 MiB body limit would answer 413; the shim relays any size."""
    world = await make_world()
    body = bytes(range(256)) * 8192  # 2 MiB

    answer = await fetch("PUT", world.front.url + "/v2/p/volumes/v1", body=body)

    assert answer.status == 200
    assert world.direct.seen[0].body == body


async def test_request_line_and_header_limits_follow_the_shims_parser_limits(make_world):
    world = await make_world(limits={"max_line_size": 16384, "max_field_size": 16384})
    long_path = "/v2/p/volumes/" + "a" * 12000

    answer = await fetch("GET", world.front.url + long_path, headers={"X-Long": "b" * 12000})

    assert answer.status == 200
    assert world.direct.seen[0].raw_path == long_path
    assert world.direct.seen[0].header("X-Long") == ["b" * 12000]


async def test_the_front_streams_both_ways_without_buffering(make_world):
    """The legacy endpoint reads the first part of the body while the client still holds the rest,
    and the client reads the first part of the answer while the legacy endpoint still holds its
    second: neither side waits for the other's whole message."""
    world = await make_world()
    url = URL(world.front.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"POST /v2/p/stream HTTP/1.1\r\nHost: shim.local\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n6\r\nfirst,\r\n")
        await writer.drain()
        await asyncio.wait_for(world.direct.body_started.wait(), READY_SECONDS)  # the front buffered the body
        writer.write(b"4\r\nrest\r\n0\r\n\r\n")
        await writer.drain()
        received = b""
        while b"got first,rest;" not in received:  # the front held the answer back
            chunk = await asyncio.wait_for(reader.read(65536), READY_SECONDS)
            assert chunk, received
            received += chunk
        world.direct.client_got_first_part.set()
        received += await asyncio.wait_for(reader.read(), READY_SECONDS)
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.endswith(b"second part\r\n0\r\n\r\n")


# ---------------------------------------------------------------------------------------------
# the translated route and the shim's own endpoints


async def test_a_reprotect_behind_the_front_is_translated_once_with_one_request_id(make_world):
    world = await make_world()
    headers = token_headers(**{"X-Request-Id": "req-front-1"})

    answer = await fetch("POST", world.front.url + ACTION_PATH, body=REPROTECT_BODY, headers=headers)

    assert (answer.status, answer.body) == (200, b"")
    assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    assert world.direct.seen == []
    assert answer.headers["X-Request-Id"] == answer.headers["X-Openstack-Request-Id"] == "req-front-1"
    assert {sent["X-Request-Id"] for _, _, sent in world.sim.requests} == {"req-front-1"}
    line = await world.front.access_line("req-front-1")
    assert (line["method"], line["path"], line["status"], line["upstream"]) == ("POST", ACTION_PATH, 200, "shim")


@pytest.mark.parametrize("sent", [
    {"X-Openstack-Request-Id": "os-1", "X-Request-Id": "x-1"},
    {"X-Request-Id": "x-1"},
    {"X-Openstack-Request-Id": "a b", "X-Request-Id": "x-1"},
    {"X-Openstack-Request-Id": "os-1", "X-Request-Id": "<x>"},
    {"X-Request-Id": "req-" + "x" * 300},
    {},
], ids=["both", "x only", "hostile openstack id", "hostile x id", "too long", "none"])
async def test_the_front_chooses_the_request_id_as_the_shim_does(make_world, sent):
    """The client's X-Openstack-Request-Id, else its X-Request-Id, when plain; else a new
    req-<uuid4>. Both answer headers carry it; the legacy endpoint gets the client's own headers and
    the chosen id where the client sent none."""
    world = await make_world()

    via_front = await fetch("GET", world.front.url + "/v2/p/volumes", headers=sent)
    via_shim = await fetch("GET", world.shim + "/v2/p/volumes", headers=sent)

    chosen, shims = via_front.headers["X-Request-Id"], via_shim.headers["X-Request-Id"]
    assert via_front.headers["X-Openstack-Request-Id"] == chosen
    if NEW_REQUEST_ID.match(shims):
        assert NEW_REQUEST_ID.match(chosen)
    else:
        assert chosen == shims
    front_seen, shim_seen = world.direct.seen
    for name in ("X-Request-Id", "X-Openstack-Request-Id"):
        assert front_seen.header(name) == [sent.get(name, chosen)]
        assert shim_seen.header(name) == [sent.get(name, shims)]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/migration"])
async def test_the_shims_own_endpoints_are_reached_through_the_front(make_world, path):
    world = await make_world()

    answer = await fetch("GET", world.front.url + path)

    assert answer.status == 200
    assert world.direct.seen == []
    if path == "/healthz":
        assert json.loads(answer.body)["status"] == "alive"


async def test_the_access_log_is_json_without_credentials_or_query(make_world):
    world = await make_world()
    secret = "gAAAAABsecret-in-the-query-1234"

    answer = await fetch("GET", world.front.url + f"/v2/p/volumes?token={secret}",
                         headers={"X-Auth-Token": TOKEN, "Authorization": "Bearer " + secret})

    line = await world.front.access_line(answer.headers["X-Request-Id"])
    assert (line["path"], line["status"], line["upstream"], line["upstream_status"]) == (
        "/v2/p/volumes", 200, "legacy", "200")
    assert TOKEN not in world.front.access_log() and secret not in world.front.access_log()


# ---------------------------------------------------------------------------------------------
# nginx's own errors: the legacy envelope


async def test_the_legacy_endpoint_down_is_a_legacy_502_with_retry_after(make_world, start_front, simulator):
    world = await make_world()
    front = await start_front(shim=world.shim, sdrs=simulator[1], legacy=closed_url())

    answer = await fetch("GET", front.url + "/v2/p/volumes")

    assert answer.status == 502
    name, inner = answer.fault()
    assert (name, inner["code"]) == ("badGateway", "EVS.5502")
    assert inner["message"].startswith("The legacy EVS endpoint is unreachable")
    assert answer.headers["Retry-After"] == "5"
    assert answer.headers["X-Request-Id"] == answer.headers["X-Openstack-Request-Id"]
    assert NEW_REQUEST_ID.match(answer.headers["X-Request-Id"])


async def test_the_shim_down_is_a_legacy_502_and_no_action_is_sent(start_front, simulator, legacy_upstream):
    sim, sdrs = simulator
    front = await start_front(shim=closed_url(), sdrs=sdrs, legacy=legacy_upstream[1])

    answer = await fetch("POST", front.url + ACTION_PATH, body=REPROTECT_BODY, headers=token_headers())

    assert answer.status == 502
    name, inner = answer.fault()
    assert name == "badGateway" and inner["message"].startswith("The EVS-to-SDRS shim is unreachable")
    assert answer.headers["Retry-After"] == "5"
    assert sim.action_calls == [] and legacy_upstream[0].requests == []


async def test_a_legacy_endpoint_that_never_answers_is_a_legacy_504_and_the_shims_own_comes_first(
        make_shim, start_front, simulator):
    """Straight to the legacy endpoint, nginx's read timeout gives its own 504; through the shim, the
    front waits longer than the shim's own limits, so the client gets the shim's 504."""
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    legacy = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    quick = {"timeouts": {"legacy": {"connect": 0.5, "read": 0.5, "total": 0.5},
                          "sdrs": {"connect": 0.1, "read": 0.1, "total": 0.1}},
             "actions": {"confirm_timeout_seconds": 0.1}}
    try:
        shim = await make_shim(sdrs=simulator[1], legacy=legacy, **quick)
        front = await start_front(shim=shim, sdrs=simulator[1], legacy=legacy, **quick)

        straight = await fetch("GET", front.url + "/v2/p/volumes")
        through_shim = await fetch("GET", front.url + "/v2/p/vol%75mes")
    finally:
        silent.close()

    assert straight.status == 504
    name, inner = straight.fault()
    assert (name, inner["code"]) == ("gatewayTimeout", "EVS.5504")
    assert inner["message"] == "The legacy EVS endpoint did not answer in time."
    assert (straight.headers["Server"], straight.headers["Retry-After"]) == ("nginx", "5")
    assert through_shim.status == 504
    assert through_shim.fault()[0] == "gatewayTimeout"
    assert through_shim.headers["Server"] != "nginx"


@pytest.mark.parametrize("data", [
    raw_request("GET", b"/v2/p/vol%00umes"),
    raw_request("GET", b"/../v2/p/volumes"),
    raw_request("GET", b"/v2/p/volumes", {"X-Big": "b" * 9000}),
    raw_request("GET", b"/v2/p/" + b"a" * 9000),
], ids=["NUL escape", "above the root", "header over the limit", "request line over the limit"])
async def test_a_request_nginx_cannot_read_gets_the_legacy_400(make_world, data):
    world = await make_world()

    status, headers, body = await raw_exchange(world.front.url, data)

    assert status == 400
    assert headers["Content-Type"] == "application/json"
    ((name, inner),) = json.loads(body).items()
    assert (name, inner["code"]) == ("badRequest", "EVS.5400")
    assert NEW_REQUEST_ID.match(headers["X-Request-Id"])
    assert world.direct.seen == []


# ---------------------------------------------------------------------------------------------
# hostile spellings: whatever the shim refuses (or translates) reaches the shim, never the legacy side

C = COLLECTION
SPELLINGS_REFUSED_TODAY = [  # every one tests/test_hostile_input.py sends
    *[("POST", f"/v2/{PROJECT}/{C}/{rcg}/action") for rcg in [
        "..%2F..%2Fserver-groups", "..%2f..%2f", "%2e%2e", "%2E%2E%2F%2E%2E", "%252e%252e", "%252e%252e%252f",
        "..%252F..%252F", "..%5C..%5C", "%2e%2e%2f%2e%2e%2fv1%2f" + PROJECT, "..;", "%00", RCG + "%00",
        RCG + "%20", RCG + "%2F..", "%20" + RCG, RCG.replace("-", "%2D") + "%2F", RCG + "%0a"]],
    *[("POST", f"/v2/{project}/{C}/{RCG}/action") for project in [
        "..%2Fv1", "%2e%2e", "..%2F..%2F" + PROJECT, PROJECT + "%2F..%2F" + OTHER_PROJECT, "%252e%252e",
        PROJECT + "%00", PROJECT + "%0A"]],
    *[("GET", path) for path in [
        f"/v2/{PROJECT}/{C}/6a1f0d39-5b8f-4a86-9f52-2b0a9d5f0c11/../{RCG}",
        f"/v2/{PROJECT}/{C}/{RCG}/../6a1f0d39-5b8f-4a86-9f52-2b0a9d5f0c11",
        f"/v2/{PROJECT}/{C}/{RCG}%2F..%2F..%2F{C}", f"/v2/{PROJECT}/{C}/{RCG}/", f"/v2/{PROJECT}/{C}/{RCG}%2Faction",
        f"/v2/{PROJECT}/%2E/{C}/{RCG}"]],
    *[("POST", target) for target in [
        f"//v2/{PROJECT}/{C}/{RCG}/action", f"/v2//{PROJECT}/{C}/{RCG}/action", f"/v2/{PROJECT}//{C}/{RCG}/action",
        f"/v2/{PROJECT}/{C}//{RCG}/action", f"/v2/{PROJECT}/{C}/{RCG}//action", f"/v2/{PROJECT}/{C}/{RCG}/./action",
        f"/v2/{PROJECT}/{C}/{RCG}/action/", f"/v2/{PROJECT}/{C}/{RCG}%2Faction"]],
]
SPELLINGS_TO_COME = [  # matrix parameters, suffixes, case-folded fixed words, encoded blanks, raw bytes
    ("POST", f"/v2/{PROJECT}/{C};x/{RCG}/action"), ("POST", f"/v2/{PROJECT}/{C}/{RCG};x/action"),
    ("POST", f"/v2/{PROJECT}/{C}/{RCG}/action;x"), ("POST", f"/v2/{PROJECT}/{C}/{RCG}/action.json"),
    ("GET", f"/v2/{PROJECT}/{C}/{RCG}.json"), ("GET", f"/v2/{PROJECT}/{C}.json"),
    ("POST", f"/V2/{PROJECT}/{C}/{RCG}/action"), ("POST", f"/v2/{PROJECT}/{C.upper()}/{RCG}/action"),
    ("POST", f"/v2/{PROJECT}/{C}/{RCG}/ACTION"), ("GET", f"/v2/{PROJECT}/OS-VENDOR-REPLICATIONS"),
    ("POST", f"/v2/{PROJECT}/{C}/{RCG}/action%20"), ("POST", f"/v2/{PROJECT}/{C}%09/{RCG}/action"),
    ("POST", f"/v2/{PROJECT}\\{C}\\{RCG}\\action"), ("GET", f"/v2/\xc3\xa9/{C}"),
    ("GET", f"/v2/{PROJECT}/" + "\uff4f\uff53-vendor-replications".encode().decode("latin-1")),  # full-width "os"
]


@pytest.mark.parametrize(("method", "target"), SPELLINGS_REFUSED_TODAY + SPELLINGS_TO_COME,
                         ids=[f"{m} {t}" for m, t in SPELLINGS_REFUSED_TODAY + SPELLINGS_TO_COME])
async def test_every_spelling_of_a_translated_url_reaches_the_shim_behind_the_front(make_world, method, target):
    """nginx would normalise these into translated URLs; routed on the raw target, they reach the
    shim and get its own answer (or, where nginx cannot read the target at all, nginx's legacy 400);
    the legacy endpoint in the front's config sees none of them."""
    world = await make_world(separate_legacy=True)
    data = raw_request(method, target.encode("latin-1"), token_headers(), REPROTECT_BODY if method == "POST" else b"")
    assert front_routes_to_shim(target)

    via_front = await raw_exchange(world.front.url, data)
    direct = await raw_exchange(world.shim, data)

    assert world.direct.seen == []
    assert world.sim.action_calls == []
    if via_front[1].get("Server") == "nginx":  # nginx refused it itself (a NUL, a path above the root)
        # The shim refuses it too, or (a path that climbs out of /v2, about no group) relays it.
        assert via_front[0] == 400 and direct[0] in (400, 200)
        assert json.loads(via_front[2])["badRequest"]["code"] == "EVS.5400"
    else:
        assert (via_front[0], via_front[2]) == (direct[0], direct[2])


@pytest.mark.parametrize("target", [
    f"/v2/{PROJECT}/{C}/%62{RCG[1:]}/action",
    f"/v2/{PROJECT}/os-vendor-replic%61tion-consistency-groups/{RCG}/action",
])
async def test_an_escaped_spelling_of_a_mapped_action_is_refused_behind_the_front(make_world, target):
    """The shim's closed rule: only the exact spelling is translated; an escaped one reaches the shim
    through the front and is refused there, neither translated nor relayed."""
    world = await make_world(separate_legacy=True)

    status, _, body = await raw_exchange(world.front.url, raw_request("POST", target.encode(), token_headers(),
                                                                       REPROTECT_BODY))

    assert status == 400 and b"canonical form" in body
    assert world.sim.action_calls == []
    assert world.direct.seen == [] and world.behind_shim.seen == []


# ---------------------------------------------------------------------------------------------
# the routing rule itself (no nginx): a superset of what the shim answers itself

_SEGMENT_DISGUISES = st.sampled_from(["", "/", "/.", "/..", "/./", ";x", ".json", "%2F", "%2f", "%5C", "\\", "//",
                                      "%2e", "%2E%2E", "%20", "%09", "%00", "/x/.."])


def _escape_some(word: str, draw: Any) -> str:
    flags = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(f"%{ord(char):02X}" if flag else char for char, flag in zip(word, flags, strict=True))


@st.composite
def disguised_translated_targets(draw: Any) -> str:
    """A translated URL with its segments escaped, case-folded and joined by odd separators."""
    collection = draw(st.sampled_from(TRANSLATED_COLLECTIONS))
    segments = ["v2", PROJECT, collection, *draw(st.sampled_from([[], [RCG], [RCG, "action"]]))]
    path = ""
    for segment in segments:
        if draw(st.booleans()):
            segment = _escape_some(segment, draw)
        if draw(st.booleans()):
            segment = segment.upper()
        path += draw(_SEGMENT_DISGUISES) + "/" + segment
    query = draw(st.sampled_from(["", "?limit=1", "?name=os-vendor-replications"]))
    return path + draw(_SEGMENT_DISGUISES) + query


@given(disguised_translated_targets())
def test_the_front_sends_every_target_the_shim_would_answer_itself_to_the_shim(target):
    path = target.partition("?")[0]
    if disguises_a_translated_url(path) or names_a_translated_url(path):
        assert front_routes_to_shim(target), target


@pytest.mark.parametrize("target", ["/v2/p/volumes", "/v2/p/volumes/detail?limit=1&name=os-vendor-replications",
                                    "/v2/p/snapshots/s1/action", "/v3/p/types", "/"])
def test_ordinary_legacy_targets_go_straight_to_the_legacy_endpoint(target):
    assert not front_routes_to_shim(target)


# The regex nginx runs (PLAIN_TARGET_REGEX, one pass without backtracking) against the rule as
# written (SHIM_BOUND): targets made of the pieces either could trip on, near misses included.
_TARGET_PIECES = st.sampled_from([
    "/", "//", "/.", ".", "..", "%", "%2e", "%6F", ";", ";x", "\\", "?", "#", "&", "=", "-", "_", "~", "+", "\n", "\t",
    " ", "\x00", "\x7f", "\x80", "\xe9", "\xff", "\uff4f", "o", "O", "s", "os", "v2", PROJECT, RCG, "volumes", "action",
    *TRANSLATED_COLLECTIONS, *(name.upper() for name in TRANSLATED_COLLECTIONS), "Os-Vendor-Replications",
    "os-vendor-replication", "os-vendor-replication-consistency-group", "s-vendor-replications",
    "oos-vendor-replications",
    "healthz", "/healthz", "/readyz", "/metrics", "/migration", "/healthz/", "/metricsx"])


@given(st.lists(_TARGET_PIECES, max_size=10), st.booleans())
def test_the_regex_nginx_routes_with_leaves_to_the_legacy_endpoint_exactly_what_the_rule_does(pieces, rooted):
    target = ("/" if rooted else "") + "".join(pieces)
    plain = re.match(PLAIN_TARGET_REGEX, target)

    assert (plain is None) == front_routes_to_shim(target), target
    if plain is not None:  # what the access log gets: the path without the query
        assert plain[LOG_PATH_CAPTURE] == target.partition("?")[0]


@pytest.mark.parametrize(("method", "target"), SPELLINGS_REFUSED_TODAY + SPELLINGS_TO_COME)
def test_the_regex_nginx_routes_with_sends_every_listed_spelling_to_the_shim(method, target):
    assert re.match(PLAIN_TARGET_REGEX, target) is None


NEAR_MISSES = [  # (raw target, whether it goes to the shim)
    ("/v2/p/os-vendor-replication", False), ("/v2/p/os-vendor-replicationz", False),
    (f"/v2/p/{C}", True), ("/v2/p/xOS-VENDOR-REPLICATIONS/x", True), ("/v2/p/oos-vendor-replications", True),
    ("/v2/p/volumes?name=os-vendor-replications&x=%2e%2e;//", False), ("/v2/p/volumes/v.1/a-b_c~d", False),
    ("/v2/p/volumes/.hidden", True), ("/v2/p/volumes/x#y", False), ("/healthzx", False), ("/v2/healthz", False),
    ("/healthz?verbose=1", True), ("/metrics", True), ("/", False),
]


async def test_near_misses_of_the_routing_rule_go_where_the_rule_says_and_are_logged_with_their_raw_path(make_world):
    """Through a real nginx: near misses of a collection name, a management path or a structural
    spelling go where SHIM_BOUND says (legacy straight, or the shim, which relays an unknown path to
    its own legacy upstream); the access line has the raw path, without the query, either way."""
    world = await make_world(separate_legacy=True)
    assert [shim for _, shim in NEAR_MISSES] == [front_routes_to_shim(target) for target, _ in NEAR_MISSES]

    for target, to_shim in NEAR_MISSES:
        world.direct.seen.clear()
        status, headers, _ = await raw_exchange(world.front.url, raw_request("GET", target.encode()))

        assert [seen.raw_path for seen in world.direct.seen] == ([] if to_shim else [target]), target
        assert status == 200 or to_shim, target  # the shim answers a collection without a token itself
        line = await world.front.access_line(headers["X-Request-Id"])
        assert (line["path"], line["upstream"]) == (target.partition("?")[0], "shim" if to_shim else "legacy")


async def test_a_request_nginx_refuses_itself_is_logged_with_its_raw_path(make_world):
    """nginx answers an oversized header itself, before any location: the access line still has the
    path, which the routing regex captures (a target nginx cannot parse at all has none to log)."""
    world = await make_world()

    status, headers, _ = await raw_exchange(world.front.url, raw_request("GET", b"/v2/p/volumes?a=b",
                                                                          {"X-Big": "b" * 9000}))

    assert status == 400
    line = await world.front.access_line(headers["X-Request-Id"])
    assert (line["path"], line["status"]) == ("/v2/p/volumes", 400)
    assert world.direct.seen == []


def test_the_routing_rule_names_what_the_generated_config_says_goes_to_the_shim(tmp_path):
    status, conf, err = generate(write_config(tmp_path), "127.0.0.1:9000")

    assert status == 0, err
    for pattern in SHIM_BOUND:
        assert f"#   - {pattern.why}\n" in conf
    assert conf.count("pcre_jit on;") == 1


# ---------------------------------------------------------------------------------------------
# TLS to the legacy endpoint


async def test_an_https_legacy_endpoint_is_reached_by_its_own_name_and_its_certificate_is_checked(
        simulator, make_shim, start_front, tmp_path):
    """SNI and the certificate check use the legacy endpoint's host name (not the upstream block's
    name), against the CA bundle given with --ca-file; a certificate from another CA is refused."""
    authority, impostor = trustme.CA(), trustme.CA()
    server_names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    legacy = Legacy()
    runner = web.AppRunner(legacy.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    legacy_url = f"https://localhost:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        trusted, untrusted = tmp_path / "ca.pem", tmp_path / "impostor.pem"
        authority.cert_pem.write_to_path(str(trusted))
        impostor.cert_pem.write_to_path(str(untrusted))
        shim = await make_shim(sdrs=simulator[1], legacy=legacy_url)
        front = await start_front(shim=shim, sdrs=simulator[1], legacy=legacy_url, cli_args=("--ca-file", str(trusted)))
        refusing = await start_front(shim=shim, sdrs=simulator[1], legacy=legacy_url,
                                     cli_args=("--ca-file", str(untrusted)))

        answer = await fetch("GET", front.url + "/v2/p/volumes")
        refused = await fetch("GET", refusing.url + "/v2/p/volumes")
    finally:
        await runner.cleanup()

    assert answer.status == 200
    assert server_names and set(server_names) == {"localhost"}
    assert legacy.seen[0].header("Host") == [URL(legacy_url).raw_authority]
    assert refused.status == 502
    assert len(legacy.seen) == 1


# ---------------------------------------------------------------------------------------------
# the command


def write_config(directory: Path, **config: Any) -> Path:
    write_mappings(directory / "mappings", DEFAULT_MAPPING)
    path = directory / "shim.yaml"
    path.write_text(yaml.safe_dump({"listen": {"host": "127.0.0.1", "port": 8080}, "upstreams": {
        "sdrs": "http://127.0.0.1:8777", "legacy": "http://127.0.0.1:8776"}, "mappings": "./mappings", **config}))
    return path


def test_front_config_has_help():
    result = subprocess.run([sys.executable, "-m", "shim", "front-config", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert "usage: shim front-config" in result.stdout and "--listen HOST:PORT" in result.stdout


@pytest.mark.parametrize(("listen", "config", "says"), [
    ("127.0.0.1", {}, "--listen: '127.0.0.1' is not HOST:PORT"),
    ("127.0.0.1:0", {}, "is not HOST:PORT with a port from 1 to 65535"),
    ("evil;host:80", {}, "is not a host name or address"),
    ("127.0.0.1:8080", {}, "would take the shim's own listen address (127.0.0.1:8080)"),
    ("0.0.0.0:8080", {}, "would take the shim's own listen address"),
    ("127.0.0.1:9000", {"listen": {"host": "127.0.0.1", "port": 0}}, "listen.port is 0"),
    ("127.0.0.1:9000", {"upstreams": {"sdrs": "http://127.0.0.1:8777", "legacy": "http://a$b:1"}},
     "upstreams.legacy"),
])
def test_front_config_refuses_what_nginx_could_not_run_with_one_line(tmp_path, listen, config, says):
    status, out, err = generate(write_config(tmp_path, **config), listen)

    assert status == 2
    assert out == ""
    assert err.startswith("shim: config error: ") and says in err and err.count("\n") == 1


async def test_a_config_without_a_legacy_endpoint_sends_everything_to_the_shim(simulator, make_shim, start_front):
    shim = await make_shim(sdrs=simulator[1])
    front = await start_front(shim=shim, sdrs=simulator[1], legacy=None)

    answer = await fetch("GET", front.url + "/v2/p/volumes")

    assert answer.status == 501
    assert answer.fault()[0] == "notImplemented"  # the shim's own answer: nothing to pass to


def test_the_kubernetes_example_carries_the_config_front_config_prints(tmp_path):
    """examples/kubernetes/front-pod.yaml embeds a generated nginx.conf: it must be the current one."""
    example = Path(__file__).parent.parent / "examples" / "kubernetes" / "front-pod.yaml"
    (config_map, *_) = [doc for doc in yaml.safe_load_all(example.read_text()) if doc["kind"] == "ConfigMap"]
    data = config_map["data"]
    write_mappings(tmp_path / "mappings", DEFAULT_MAPPING)
    (tmp_path / "shim.yaml").write_text(data["shim.yaml"])
    (tmp_path / "mappings" / "consistency-groups.yaml").write_text(data["consistency-groups.yaml"])
    listen = re.search(r"--listen (\S+)", example.read_text())

    assert listen is not None
    status, conf, err = generate(tmp_path / "shim.yaml", listen[1])
    assert status == 0, err
    assert data["nginx.conf"] == conf.replace("from " + str(tmp_path / "shim.yaml"), "from shim.yaml")
