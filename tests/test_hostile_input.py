"""Hostile input, sent as raw bytes over a loopback socket (an HTTP client library would normalise
most of it away): encoded traversal in ids, absolute-form targets and spoofed Host (the shim is never
an open proxy: it connects only to the upstreams in its config), CRLF and header injection, oversized
heads and bodies, deeply nested JSON, another project's RCG id, hostile request ids and request
smuggling. Each test asserts what the client got, what the legacy upstream and the SDRS simulator
received, and that a trap listener on loopback (the "elsewhere" an attacker points at) saw nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from conftest import GROUP, OTHER_PROJECT, PROJECT, RCG, REPROTECT_BODY, TOKEN, UNMAPPED_RCG, start_server
from shim.simulator import SdrsSimulator
from shim.translate import paths
from shim.translate.paths import disguises_a_translated_url, names_a_translated_collection
from shim.web.logs import JsonFormatter

COLLECTION = "os-vendor-replication-consistency-groups"
ACTION_PATH = f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action"
READ_PATH = f"/v2/{PROJECT}/{COLLECTION}/{RCG}"
LEGACY_STATUSES = {200, 400, 401, 403, 404, 405, 406, 408, 409, 500, 501, 502, 503, 504}
NEW_REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")  # version 4
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
FINAL = b"GET /final HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


# ---------------------------------------------------------------------------------------------
# raw HTTP over a socket


@dataclass
class RawReply:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    head: bytes  # the raw status line and header lines

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def legacy_fault(self) -> tuple[str, dict[str, str]]:
        """The legacy envelope, checked for shape; returns (faultName, {message, code})."""
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.head
        document = json.loads(self.body)
        assert isinstance(document, dict) and len(document) == 1, document
        ((name, inner),) = document.items()
        assert set(inner) == {"message", "code"}, inner
        return name, inner


async def read_reply(reader: asyncio.StreamReader) -> RawReply | None:
    """One HTTP/1.1 response (Content-Length, chunked or until close); None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            return None
        raise
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    status = int(status_line.split()[1])
    if status == 100:
        return await read_reply(reader)  # an interim answer: the real one follows
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    elif headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
            if size == 0:
                break
    else:
        body = await reader.read()
    return RawReply(status, headers, body, head)


async def exchange(base_url: str, data: bytes, replies: int = 1, timeout: float = 5) -> list[RawReply]:
    """Send `data` as it is and read up to `replies` answers (fewer when the shim closes first)."""
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    answers: list[RawReply] = []
    try:
        writer.write(data)
        await writer.drain()
        for _ in range(replies):
            answer = await asyncio.wait_for(read_reply(reader), timeout)
            if answer is None:
                break
            answers.append(answer)
    finally:
        writer.close()
    return answers


async def one(base_url: str, data: bytes) -> RawReply:
    (answer,) = await exchange(base_url, data)
    return answer


def request(method: str, target: str | bytes, headers: dict[str, str] | list[tuple[str, str]] | None = None,
            body: bytes = b"", *, host: str = "shim.local", close: bool = True, length: bool = True) -> bytes:
    """A request as raw bytes: the target goes out exactly as given."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: " + host.encode()]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in items]
    if length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def token_headers(**extra: str) -> dict[str, str]:
    return {"X-Auth-Token": TOKEN, "Content-Type": "application/json", "Accept": "application/json", **extra}


# ---------------------------------------------------------------------------------------------
# the world: SDRS simulator, a legacy upstream that records raw requests, a trap, the shim


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class RawUpstream:
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        return web.json_response({"upstream": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def paths(self) -> list[str]:
        return [seen.raw_path for seen in self.seen]


@dataclass
class Trap:
    """A loopback listener an attacker would like the shim to reach; it counts connections."""

    connections: int = 0
    port: int = 0

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@dataclass
class World:
    shim: str
    sim: SdrsSimulator
    legacy: RawUpstream
    trap: Trap

    def assert_nothing_forwarded(self) -> None:
        assert self.legacy.seen == []
        assert self.sim.requests == []
        assert self.trap.connections == 0


@pytest.fixture
async def world(simulator, make_shim) -> AsyncIterator[World]:
    sim, sdrs_url = simulator
    legacy = RawUpstream()
    runner, legacy_url = await start_server(legacy.app())
    trap = Trap()
    server = await asyncio.start_server(trap.accept, "127.0.0.1", 0)
    trap.port = server.sockets[0].getsockname()[1]
    shim = await make_shim(sdrs=sdrs_url, legacy=legacy_url)
    yield World(shim, sim, legacy, trap)
    server.close()
    await server.wait_closed()
    await runner.cleanup()


def formatted_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the shim's JSON log lines would say for everything captured (tracebacks included)."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def assert_parser_rejection(answer: RawReply) -> None:
    """The answer to a request aiohttp's parser refuses (it never reaches the shim's handlers): the
    legacy 400 envelope with a new request id, closing the connection, quoting none of the request."""
    assert answer.status == 400, answer.head
    name, inner = answer.legacy_fault()
    assert (name, inner["code"]) == ("badRequest", "EVS.5400")
    assert "Traceback" not in answer.text and "b'" not in inner["message"]
    assert NEW_REQUEST_ID.match(answer.headers["X-Request-Id"]), answer.head
    assert answer.headers["Connection"] == "close"


# ---------------------------------------------------------------------------------------------
# path traversal and encoded slashes in ids


@pytest.mark.parametrize("rcg", [
    "%252e%252e", "%252e%252e%252f", "..%252F..%252F", "%00", RCG + "%00",
    RCG + "%20", RCG + "%2F..", "%20" + RCG, RCG.replace("-", "%2D") + "%2F",
])
async def test_traversal_in_the_rcg_id_of_an_action_is_400_and_reaches_nobody(world, rcg):
    target = f"/v2/{PROJECT}/{COLLECTION}/{rcg}/action"

    answer = await one(world.shim, request("POST", target, token_headers(), REPROTECT_BODY))

    assert answer.status == 400, answer.body
    name, inner = answer.legacy_fault()
    assert (name, inner["code"]) == ("badRequest", "EVS.5400")
    assert any(says in inner["message"] for says in ("replication consistency group id must be a UUID",
                                                     "canonical form"))
    world.assert_nothing_forwarded()


@pytest.mark.parametrize(("project", "rcg"), [
    (PROJECT, "..%2F..%2Fserver-groups"), (PROJECT, "..%2f..%2f"), (PROJECT, "%2e%2e"), (PROJECT, "%2E%2E%2F%2E%2E"),
    (PROJECT, "..%5C..%5C"), (PROJECT, "%2e%2e%2f%2e%2e%2fv1%2f" + PROJECT), (PROJECT, "..;"),
    ("..%2Fv1", RCG), ("%2e%2e", RCG), ("..%2F..%2F" + PROJECT, RCG),
])
async def test_an_action_path_that_may_leave_the_translated_urls_is_refused_all_the_same(world, project, rcg):
    """The rule is closed: the path names the collection and is not spelled exactly as a route, so it
    is refused whatever a server would make of it (`.../COLL/../../x` may be about no group at all,
    but deciding that is the enumeration of normalisations the closed rule does without)."""
    target = f"/v2/{project}/{COLLECTION}/{rcg}/action"

    answer = await one(world.shim, request("POST", target, token_headers(), REPROTECT_BODY))

    assert answer.status == 400, answer.body
    assert "canonical form" in answer.legacy_fault()[1]["message"]
    world.assert_nothing_forwarded()


@pytest.mark.parametrize("project", [
    PROJECT + "%2F..%2F" + OTHER_PROJECT, "%252e%252e", PROJECT + "%00",
])
async def test_traversal_in_the_project_id_of_an_action_is_400_and_reaches_nobody(world, project):
    target = f"/v2/{project}/{COLLECTION}/{RCG}/action"

    answer = await one(world.shim, request("POST", target, token_headers(), REPROTECT_BODY))

    assert answer.status == 400, answer.body
    message = answer.legacy_fault()[1]["message"]
    assert "project id must be a UUID" in message or "canonical form" in message
    world.assert_nothing_forwarded()


@pytest.mark.parametrize(("project", "rcg"), [(PROJECT, RCG + "%0a"), (PROJECT + "%0A", RCG)])
async def test_an_id_with_an_encoded_trailing_newline_is_not_a_uuid(world, project, rcg):
    target = f"/v2/{project}/{COLLECTION}/{rcg}/action"

    answer = await one(world.shim, request("POST", target, token_headers(), REPROTECT_BODY))

    assert answer.status == 400, answer.body
    message = answer.legacy_fault()[1]["message"]
    assert "must be a UUID" in message or "canonical form" in message  # `%0a` is a control escape too
    world.assert_nothing_forwarded()


@pytest.mark.parametrize("rcg", ["%62" + RCG[1:], "%2562" + RCG[1:], RCG.replace("-", "%2D")])
async def test_a_percent_encoded_mapped_id_is_refused_not_decoded(world, rcg):
    """An id is spelled plainly or the URL is refused: `%62d35…` (once or twice encoded) is neither
    translated nor relayed."""
    answer = await one(world.shim, request("POST", f"/v2/{PROJECT}/{COLLECTION}/{rcg}/action",
                                           token_headers(), REPROTECT_BODY))
    assert answer.status == 400
    assert "canonical form" in answer.legacy_fault()[1]["message"]
    world.assert_nothing_forwarded()


@pytest.mark.parametrize("path", [
    f"/v2/{PROJECT}/../v1/{PROJECT}/server-groups/{GROUP}",
    f"/v1/{PROJECT}/server-groups/{GROUP}",  # SDRS's own API, asked of the shim: never relayed to SDRS
    f"/v2/{PROJECT}/volumes;x/detail.json",  # outside the translated URLs, parameters and suffixes stay
    f"/V2/{PROJECT}/volumes/%20{RCG}",
])
async def test_paths_outside_the_translated_urls_go_to_legacy_verbatim_and_never_to_sdrs(world, path):
    answer = await one(world.shim, request("GET", path, token_headers()))

    assert (answer.status, answer.body) == (200, b'{"upstream": true}')
    assert world.legacy.paths() == [path]  # byte for byte: no decoding, no dot-segment removal
    assert world.sim.requests == []
    assert world.trap.connections == 0


@pytest.mark.parametrize("path", [
    f"/v2/{PROJECT}/{COLLECTION}/%2e%2e%2F{RCG}",  # names the collection, not an exact route: refused
    f"/v2/{PROJECT}/{COLLECTION}/..%2F{RCG}",
    f"/v2/{PROJECT}/{COLLECTION}/%252e%252e/{RCG}",
    f"/v2/{PROJECT}/{COLLECTION}/{UNMAPPED_RCG}/../{RCG}",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/../{UNMAPPED_RCG}",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}%2F..%2F..%2F{COLLECTION}",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}%2Faction",
    f"/v2/{PROJECT}/%2E/{COLLECTION}/{RCG}",
])
async def test_traversal_into_a_translated_url_is_refused_and_reaches_no_upstream(world, path):
    """A normalising legacy endpoint would read (or, for an action, act on) a migrated group."""
    answer = await one(world.shim, request("GET", path, token_headers()))

    assert answer.status == 400
    assert "canonical form" in answer.legacy_fault()[1]["message"]
    world.assert_nothing_forwarded()


@pytest.mark.parametrize("target", [
    f"//v2/{PROJECT}/{COLLECTION}/{RCG}/action",
    f"/v2//{PROJECT}/{COLLECTION}/{RCG}/action",
    f"/v2/{PROJECT}//{COLLECTION}/{RCG}/action",
    f"/v2/{PROJECT}/{COLLECTION}//{RCG}/action",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}//action",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/./action",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action/",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}%2Faction",
    # an encoded `?` or `#`, which a decoding server reads as the end of the path (issue 20)
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action%3F",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action%3Fx",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action%23",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action%3f%3F",
    # a trailing dot, which some servers strip
    f"/v2/{PROJECT}/{COLLECTION}%2e/{RCG}/action",
    f"/v2/{PROJECT}/{COLLECTION}./{RCG}/action",
    f"/v2/{PROJECT}/{COLLECTION}/{RCG}/action.",
])
async def test_non_canonical_spellings_of_a_mapped_action_url_are_refused(world, target):
    """Only the exact route is translated; any other spelling of it is refused (400), neither
    translated nor relayed: a legacy endpoint that normalises paths would run a legacy reprotect
    on a migrated group behind the duplicate guard's back."""
    answer = await one(world.shim, request("POST", target, token_headers(), REPROTECT_BODY))

    assert answer.status == 400
    assert "canonical form" in answer.legacy_fault()[1]["message"]
    world.assert_nothing_forwarded()


PAIR_COLLECTION = "os-vendor-replications"
SOME_PAIR = "0b9e8f7a-6d5c-4b3a-8291-0f1e2d3c4b5a"
TRANSLATED_URLS = {  # name: (method, canonical segments, body)
    "action": ("POST", ["v2", PROJECT, COLLECTION, RCG, "action"], REPROTECT_BODY),
    "group": ("GET", ["v2", PROJECT, COLLECTION, RCG], b""),
    "groups": ("GET", ["v2", PROJECT, COLLECTION], b""),
    "pair": ("GET", ["v2", PROJECT, PAIR_COLLECTION, SOME_PAIR], b""),
    "pairs": ("GET", ["v2", PROJECT, PAIR_COLLECTION], b""),
}
FIXED_WORDS = {0, 2, 4}  # v2, the collection, action


def spellings(segments: list[str]) -> dict[str, str]:
    """Every other spelling a normalising server reads as the same URL: `;x` in any segment, a
    format suffix, upper case in the fixed words, encoded whitespace."""
    def path(index: int, change) -> str:
        return "/" + "/".join(change(seg) if i == index else seg for i, seg in enumerate(segments))

    last = len(segments) - 1
    found = {f";x in segment {i}": path(i, lambda seg: seg + ";x") for i in range(len(segments))}
    found |= {f"upper case segment {i}": path(i, str.upper) for i in FIXED_WORDS if i <= last}
    found |= {
        ".json suffix": path(last, lambda seg: seg + ".json"),
        ".xml suffix": path(last, lambda seg: seg + ".XML"),
        "%20 after the last segment": path(last, lambda seg: seg + "%20"),
        "%09 after the last segment": path(last, lambda seg: seg + "%09"),
        "%20 before a segment": path(1, lambda seg: "%20" + seg),
        "%3B parameters": path(last, lambda seg: seg + "%3Bjsessionid=1"),
    }
    return found


DISGUISES = [(name, kind, spelling) for kind, (_, segments, _) in TRANSLATED_URLS.items()
             for name, spelling in spellings(segments).items()]


@pytest.mark.parametrize(("name", "kind", "target"), DISGUISES, ids=[f"{k}: {n}" for n, k, _ in DISGUISES])
async def test_every_other_spelling_of_a_translated_url_is_a_legacy_400_and_reaches_nobody(world, name, kind, target):
    """Matrix parameters, format suffixes, upper-case fixed words and encoded whitespace: a servlet
    container or OpenStack Routes in front of the legacy endpoint would read each as the translated
    URL (a reprotect, a read, a list), so none may be relayed; nor is any translated."""
    method, _, body = TRANSLATED_URLS[kind]

    answer = await one(world.shim, request(method, target, token_headers(), body))

    assert answer.status == 400, (answer.status, answer.body)
    name, inner = answer.legacy_fault()
    assert (name, inner["code"]) == ("badRequest", "EVS.5400")
    assert "canonical form" in inner["message"]
    world.assert_nothing_forwarded()


async def test_the_canonical_spellings_are_still_translated(world):
    for kind in ("action", "group"):
        method, segments, body = TRANSLATED_URLS[kind]
        answer = await one(world.shim, request(method, "/" + "/".join(segments), token_headers(), body))
        assert answer.status == 200, (kind, answer.body)
    assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]


# ---------------------------------------------------------------------------------------------
# absolute-form targets, spoofed Host: never an open proxy


async def test_absolute_form_action_to_elsewhere_is_served_by_the_configured_sdrs_only(world):
    elsewhere = f"127.0.0.1:{world.trap.port}"
    target = f"http://{elsewhere}{ACTION_PATH}"

    answer = await one(world.shim, request("POST", target, token_headers(), REPROTECT_BODY, host=elsewhere))

    assert (answer.status, answer.body) == (200, b"")
    assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    assert [path for _, path, _ in world.sim.requests] == [
        f"/v1/{PROJECT}/server-groups/{GROUP}", f"/v1/{PROJECT}/server-groups/{GROUP}/action"]
    assert world.legacy.seen == []
    assert world.trap.connections == 0


@pytest.mark.parametrize(("target", "host"), [
    ("http://{trap}/v2/p/volumes?limit=1", "{trap}"),
    ("http://evil.example/v2/p/volumes?limit=1", "evil.example"),
    ("http://user:pw@{trap}/v2/p/volumes?limit=1", "{trap}"),
    ("https://{trap}/v2/p/volumes?limit=1", "{trap}"),
    ("/v2/p/volumes?limit=1", "{trap}"),
    ("//{trap}/v2/p/volumes?limit=1", "shim.local"),
])
async def test_absolute_form_or_spoofed_host_on_a_passthrough_reaches_only_the_legacy_upstream(world, target, host):
    trap = f"127.0.0.1:{world.trap.port}"
    target, host = target.replace("{trap}", trap), host.replace("{trap}", trap)
    headers = {"X-Forwarded-Host": trap, "Forwarded": f"host={trap};proto=http"}

    answer = await one(world.shim, request("GET", target, headers, host=host))

    assert (answer.status, answer.body) == (200, b'{"upstream": true}')
    (seen,) = world.legacy.seen
    expected_path = "/" + target.split("/", 3)[3] if target.startswith("http") else target
    assert seen.raw_path == expected_path
    assert world.sim.requests == []
    assert world.trap.connections == 0


@pytest.mark.parametrize("data", [
    b"CONNECT {trap} HTTP/1.1\r\nHost: {trap}\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: {trap}\r\nConnection: close\r\n\r\n",
    b"GET http://{trap} HTTP/1.1\r\nHost: {trap}\r\nConnection: close\r\n\r\n",
])
async def test_connect_and_other_proxy_forms_are_not_tunnelled(world, data):
    data = data.replace(b"{trap}", f"127.0.0.1:{world.trap.port}".encode())

    answer = await one(world.shim, data)

    assert answer.status == 404  # no route: the shim's legacy 404, never a tunnel
    assert answer.legacy_fault()[0] == "itemNotFound"
    world.assert_nothing_forwarded()


@pytest.mark.parametrize("target", [b"@{trap}/v2/p/volumes", b"{trap}/v2/p/volumes", b"\\\\{trap}/v2"])
async def test_targets_that_are_not_origin_or_absolute_form_are_refused_by_the_parser(world, target):
    target = target.replace(b"{trap}", f"127.0.0.1:{world.trap.port}".encode())

    answer = await one(world.shim, request("GET", target))

    assert_parser_rejection(answer)
    world.assert_nothing_forwarded()


# ---------------------------------------------------------------------------------------------
# CRLF and header injection


@pytest.mark.parametrize("line", [
    b"X-Note: a\rX-Injected: 1",
    b"X-Note: a\nX-Injected: 1",
    b"X-Note: a\r\n X-Injected: 1",  # obs-fold
    b"X-Note: a\x00X-Injected: 1",
    b"X-Request-Id: req-1\rSet-Cookie: session=evil",
    b"X-Auth-Token: gAAAAABsecret-token-value\rX-Injected: 1",
    b"X-Injected\r: 1",
    b"X Injected: 1",
    b": no-name",
])
@pytest.mark.parametrize("target", [ACTION_PATH.encode(), b"/v2/p/volumes"])
async def test_crlf_and_bad_header_lines_are_refused_and_inject_nothing(world, caplog, line, target):
    caplog.set_level(logging.INFO)
    data = (b"POST " + target + b" HTTP/1.1\r\nHost: shim.local\r\nX-Auth-Token: " + TOKEN.encode() + b"\r\n"
            + line + b"\r\nContent-Length: " + str(len(REPROTECT_BODY)).encode()
            + b"\r\nConnection: close\r\n\r\n" + REPROTECT_BODY)

    answer = await one(world.shim, data)

    assert_parser_rejection(answer)
    assert "X-Injected" not in answer.headers and "Set-Cookie" not in answer.headers
    world.assert_nothing_forwarded()
    log = formatted_log(caplog)
    assert "Traceback" not in log
    assert "secret-token-value" not in log and TOKEN not in log


async def test_header_values_reach_the_legacy_side_as_single_lines(world):
    """Values the parser accepts (obs-text, tabs, quotes, encoded CRLF) are relayed as one header
    each: nothing the client sends becomes a second header line upstream."""
    headers = [("X-Note", "a%0d%0aX-Injected: 1"), ("X-Quote", '"x\\r\\nX-Injected: 1"'), ("X-Tab", "a\tb")]

    answer = await one(world.shim, request("GET", "/v2/p/volumes", headers))

    assert answer.status == 200
    (seen,) = world.legacy.seen
    names = [name.lower() for name, _ in seen.headers]
    assert "x-injected" not in names
    assert [value for name, value in seen.headers if name == "X-Note"] == ["a%0d%0aX-Injected: 1"]
    assert [value for name, value in seen.headers if name == "X-Tab"] == ["a\tb"]


async def test_a_header_value_that_is_not_utf8_is_relayed_unchanged_or_refused(world):
    data = (b"GET /v2/p/volumes HTTP/1.1\r\nHost: shim.local\r\nX-C: caf\xe9\r\nX-A: \xff\xfe\r\n"
            b"Connection: close\r\n\r\n")

    answer = await one(world.shim, data)

    if answer.status == 400:
        answer.legacy_fault()
        assert world.legacy.seen == []
    else:
        (seen,) = world.legacy.seen
        relayed = {name: value.encode("latin-1") for name, value in seen.headers}
        assert (relayed.get("X-C"), relayed.get("X-A")) == (b"caf\xe9", b"\xff\xfe")


# ---------------------------------------------------------------------------------------------
# oversized heads and bodies


LONG_LINE = "a request line or header line is longer than the migration proxy accepts"


@pytest.mark.parametrize(("name", "data", "says"), [
    ("header line over 8190 bytes",
     request("GET", "/v2/p/volumes", {"X-Auth-Token": "t" * 9000}), LONG_LINE),
    ("header value over 8190 bytes on the action",
     request("POST", ACTION_PATH, {"X-Auth-Token": TOKEN, "X-Pad": "p" * 9000}, REPROTECT_BODY), LONG_LINE),
    ("129+ header lines", request("GET", "/v2/p/volumes", [(f"X-H{i}", "v") for i in range(200)]),
     "more header lines than the migration proxy accepts"),
    ("request line over 8190 bytes", request("GET", "/v2/p/" + "a" * 9000), LONG_LINE),
])
async def test_oversized_heads_get_a_legacy_400_that_quotes_nothing(world, caplog, name, data, says):
    """400 (not 431/414: not legacy statuses) in the legacy envelope, before any handler runs; neither
    the answer nor the log quotes the offending line (it may hold a token)."""
    caplog.set_level(logging.INFO)

    answer = await one(world.shim, data)

    assert_parser_rejection(answer)
    assert says in answer.legacy_fault()[1]["message"]
    assert "ttttt" not in answer.text and "ppppp" not in answer.text and "aaaaa" not in answer.text
    world.assert_nothing_forwarded()
    log = formatted_log(caplog)
    assert "Traceback" not in log and "ttttt" not in log and "ppppp" not in log and TOKEN not in log


async def test_many_headers_within_the_limits_are_accepted_and_relayed(world):
    headers = [(f"X-H{i}", "v" * 100) for i in range(100)]

    answer = await one(world.shim, request("GET", "/v2/p/volumes", headers))

    assert answer.status == 200
    assert len([n for n, _ in world.legacy.seen[0].headers if n.startswith("X-H")]) == 100


@pytest.mark.parametrize(("name", "data"), [
    ("content-length one over the limit",
     request("POST", ACTION_PATH, token_headers(), b"{" + b" " * 16383 + b"}")),
    ("content-length of a terabyte, nothing sent",
     request("POST", ACTION_PATH, token_headers(**{"Content-Length": str(10 ** 12)}), length=False)),
    ("chunked, over the limit",
     request("POST", ACTION_PATH, token_headers(**{"Transfer-Encoding": "chunked"}), length=False)
     + b"".join(b"1000\r\n" + b" " * 4096 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"),
])
async def test_an_action_body_over_the_limit_is_400_without_reading_it_all(world, name, data):
    started = asyncio.get_running_loop().time()

    answer = await one(world.shim, data)

    assert answer.status == 400
    assert answer.legacy_fault()[1]["message"] == "Malformed request body: larger than 16384 bytes."
    assert asyncio.get_running_loop().time() - started < 2  # answered at once, not after the body
    world.assert_nothing_forwarded()


async def test_expect_100_continue_with_an_oversized_length_still_ends_in_400(world):
    """Recorded: aiohttp sends `100 Continue` before the handler sees the length; the 400 follows."""
    data = request("POST", ACTION_PATH, token_headers(**{"Content-Length": "99999", "Expect": "100-continue"}),
                   length=False)

    answer = await one(world.shim, data)

    assert answer.status == 400
    assert "larger than 16384 bytes" in answer.legacy_fault()[1]["message"]
    world.assert_nothing_forwarded()


@pytest.mark.parametrize(("body", "says"), [
    (b'{"os-reprotect-replication-consistency-group": ' + b"[" * 8000 + b"]" * 8000 + b"}", "nested too deeply"),
    (b'{"a":' * 2700 + b"null" + b"}" * 2700, "nested too deeply"),
    (b'{"os-reprotect-replication-consistency-group": ' + b'{"a":' * 1500 + b"1" + b"}" * 1501, "nested too deeply"),
    (b'{"os-reprotect-replication-consistency-group": ' + b"[" * 500 + b"]" * 500 + b"}", "must be null or {}"),
    (b'{"os-reprotect-replication-consistency-group": ' + b"1" * 5000 + b"}", "not acceptable JSON"),
])
async def test_deeply_nested_json_under_the_size_limit_is_a_clean_400(world, caplog, body, says):
    caplog.set_level(logging.INFO)
    assert len(body) <= 16384

    answer = await one(world.shim, request("POST", ACTION_PATH, token_headers(), body))

    assert answer.status == 400
    name, inner = answer.legacy_fault()
    assert name == "badRequest" and says in inner["message"]
    world.assert_nothing_forwarded()
    assert "Traceback" not in formatted_log(caplog)


# ---------------------------------------------------------------------------------------------
# a project that does not own the mapping


async def test_a_mapped_rcg_under_another_project_is_that_projects_legacy_group(world):
    """A mapping belongs to its project: under another project the same id is an unmapped group, the
    legacy endpoint's, and SDRS is not contacted."""
    target = f"/v2/{OTHER_PROJECT}/{COLLECTION}/{RCG}/action"
    headers = token_headers(**{"X-Project-Id": PROJECT})  # a header naming the owner changes nothing

    answer = await one(world.shim, request("POST", target, headers, REPROTECT_BODY))

    assert (answer.status, answer.body) == (200, b'{"upstream": true}')
    assert world.legacy.paths() == [target]
    assert world.legacy.seen[0].body == REPROTECT_BODY  # as sent
    assert world.sim.requests == []
    assert world.trap.connections == 0


async def test_reading_a_mapped_rcg_under_another_project_never_reads_sdrs(world):
    path = f"/v2/{OTHER_PROJECT}/{COLLECTION}/{RCG}"

    answer = await one(world.shim, request("GET", path, token_headers(**{"X-Project-Id": PROJECT})))

    assert answer.status == 200
    assert world.legacy.paths() == [path]  # the other project's own (legacy) business
    assert world.sim.requests == []


# ---------------------------------------------------------------------------------------------
# request ids


@pytest.mark.parametrize("value", [
    "A" * 129, "req-" + "x" * 300, "a b", "<script>alert(1)</script>", "req-1%0d%0aSet-Cookie:x=1",
    "req-1\tx", "req-\xff\xfe", "req-\xc3\xa9", '"req-1"', "req-1,req-2", "../../etc/passwd",
])
async def test_a_hostile_request_id_is_never_echoed_nor_sent_on(world, value):
    headers = token_headers(**{"X-Request-Id": value, "X-Openstack-Request-Id": value})

    answer = await one(world.shim, request("POST", ACTION_PATH, headers, REPROTECT_BODY))

    assert answer.status == 200
    assert NEW_REQUEST_ID.match(answer.headers["X-Request-Id"]), answer.headers
    assert answer.headers["X-Openstack-Request-Id"] == answer.headers["X-Request-Id"]
    assert b"Set-Cookie" not in answer.head
    for _, _, sent in world.sim.requests:
        assert sent["X-Request-Id"] == answer.headers["X-Request-Id"]


async def test_a_plain_request_id_of_128_characters_is_kept(world):
    value = "req-" + "a" * 124
    answer = await one(world.shim, request("POST", ACTION_PATH, token_headers(**{"X-Request-Id": value}),
                                           REPROTECT_BODY))
    assert answer.headers["X-Request-Id"] == value


# ---------------------------------------------------------------------------------------------
# request smuggling: one request to the shim is never two to the legacy upstream


SMUGGLING = [
    ("CL then TE", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("TE then CL", b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("TE chunked, identity", b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("TE xchunked", b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("TE with space before colon", b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("TE twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("TE in obs-fold", b"X-A: 1\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    ("two different CL", b"Content-Length: 0\r\nContent-Length: 36\r\n", SMUGGLED),
    ("CL with plus", b"Content-Length: +36\r\n", SMUGGLED),
    ("CL list", b"Content-Length: 36, 0\r\n", SMUGGLED),
    ("CL negative", b"Content-Length: -1\r\n", SMUGGLED),
    ("CL hex", b"Content-Length: 0x24\r\n", SMUGGLED),
    ("chunk extension with CRLF", b"Transfer-Encoding: chunked\r\n", b'3;x="a\r\nb"\r\nabc\r\n0\r\n\r\n' + SMUGGLED),
    ("chunk size overflow", b"Transfer-Encoding: chunked\r\n", b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n" + SMUGGLED),
    ("chunks with bare LF", b"Transfer-Encoding: chunked\r\n", b"3\nabc\n0\n\n" + SMUGGLED),
    ("HTTP/1.0 with TE", None, b"0\r\n\r\n" + SMUGGLED),
]


@pytest.mark.parametrize(("name", "framing", "body"), SMUGGLING, ids=[row[0] for row in SMUGGLING])
@pytest.mark.parametrize("target", [b"/v2/p/volumes", ACTION_PATH.encode()])
async def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(world, caplog, name, framing, body, target):
    caplog.set_level(logging.INFO)
    if framing is None:
        data = b"POST " + target + b" HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    else:
        data = (b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + TOKEN.encode() + b"\r\n"
                + framing + b"\r\n" + body + FINAL)

    answers = await exchange(world.shim, data, replies=3)

    assert len(answers) == 1, [a.head for a in answers]
    assert_parser_rejection(answers[0])
    world.assert_nothing_forwarded()
    assert "Traceback" not in formatted_log(caplog)


async def test_identity_then_chunked_is_read_as_chunked_and_relayed_as_one_request(world):
    """`Transfer-Encoding: identity, chunked` is accepted (chunked is last): the empty chunked body
    ends the POST and what follows is the client's own next request, answered and relayed in order."""
    data = (b"POST /v2/p/volumes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
            b"0\r\n\r\n" + FINAL)

    answers = await exchange(world.shim, data, replies=3)

    assert [a.status for a in answers] == [200, 200]
    assert [(s.method, s.raw_path, s.body) for s in world.legacy.seen] == [
        ("POST", "/v2/p/volumes", b""), ("GET", "/final", b"")]
    assert "identity" not in str(world.legacy.seen[0].headers).lower()


@pytest.mark.parametrize(("name", "first"), [
    ("action body over the limit", request("POST", ACTION_PATH, token_headers(**{"Content-Length": "20000"}),
                                           close=False, length=False) + SMUGGLED + b" " * (20000 - len(SMUGGLED))),
    ("action without token", request("POST", ACTION_PATH, {"Content-Type": "application/json"}, SMUGGLED, close=False)),
    ("GET with a body on the action URL", request("GET", ACTION_PATH, token_headers(), SMUGGLED, close=False)),
    ("action on an id that is not a UUID",
     request("POST", f"/v2/{PROJECT}/{COLLECTION}/x/action", token_headers(), SMUGGLED, close=False)),
    ("action with an unparsable body", request("POST", ACTION_PATH, token_headers(), SMUGGLED, close=False)),
])
async def test_a_body_the_shim_refuses_unread_never_becomes_a_request(world, name, first):
    """The shim may answer before reading a body; the unread body is still that request's body,
    never parsed as the next request on the keep-alive connection."""
    answers = await exchange(world.shim, first + FINAL, replies=3)

    assert [a.status for a in answers][1:] == [200], [a.head for a in answers]
    assert answers[0].status in (400, 401, 405)
    answers[0].legacy_fault()
    assert world.legacy.paths() == ["/final"]
    assert world.sim.requests == []


async def test_pipelined_requests_are_relayed_one_by_one_in_order(world):
    data = (request("GET", "/v2/p/one", close=False) + request("POST", ACTION_PATH, token_headers(), REPROTECT_BODY,
                                                              close=False) + FINAL)

    answers = await exchange(world.shim, data, replies=4)

    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[1].body == b""  # the translated reprotect
    assert world.legacy.paths() == ["/v2/p/one", "/final"]
    assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]


# ---------------------------------------------------------------------------------------------
# other things an attacker tries against a proxy


@pytest.mark.parametrize("target", [b"/v2/\xc3\xa9/volumes", b"/v2/p/vol umes", b"/v2/p/\x7f", b"/v2/p/\x00"])
async def test_raw_bytes_outside_the_uri_grammar_are_refused_by_the_parser(world, target):
    """A request target with raw non-ASCII, space, DEL or NUL is refused by aiohttp's parser: legacy 400."""
    answer = await one(world.shim, request("GET", target))

    assert_parser_rejection(answer)
    world.assert_nothing_forwarded()


@pytest.mark.parametrize(("method", "path", "body"), [("POST", ACTION_PATH, REPROTECT_BODY), ("GET", READ_PATH, b"")],
                         ids=["action", "read"])
async def test_an_unknown_expectation_on_a_translated_route_gets_a_legacy_answer(world, method, path, body):
    answer = await one(world.shim, request(method, path, token_headers(Expect="bogus-expectation"), body))

    assert answer.status in LEGACY_STATUSES, (answer.status, answer.body)
    if answer.status != 200:
        answer.legacy_fault()
        assert world.sim.action_calls == []


async def test_method_override_headers_do_not_change_the_translated_route(world):
    headers = token_headers(**{"X-HTTP-Method-Override": "DELETE", "X-Method-Override": "PUT"})

    answer = await one(world.shim, request("GET", ACTION_PATH, headers))

    assert answer.status == 405
    assert answer.headers["Allow"] == "POST"
    world.assert_nothing_forwarded()


async def test_credentials_other_than_the_token_never_reach_sdrs(world):
    """Authorization, Proxy-Authorization and cookies stay with the shim; SDRS gets the token only."""
    headers = token_headers(**{"Proxy-Authorization": "Basic Zm9vOmJhcg==", "Cookie": "s=1",
                               "Authorization": "Bearer x"})

    answer = await one(world.shim, request("POST", ACTION_PATH, headers, REPROTECT_BODY, close=True))

    assert answer.status == 200
    for _, _, sent in world.sim.requests:
        assert {"Proxy-Authorization", "Cookie", "Authorization"}.isdisjoint(sent.keys())
        assert sent["X-Auth-Token"] == TOKEN


async def test_a_slow_body_on_the_action_url_does_not_block_other_requests(world):
    """Slowloris-style: a client that sends the head of an action and then nothing holds its own
    connection only; another client's reprotect is answered meanwhile."""
    url = URL(world.shim)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request("POST", ACTION_PATH, token_headers(**{"Content-Length": "100"}), length=False)
                     + b'{"os-reprotect')
        await writer.drain()

        reprotect = request("POST", ACTION_PATH, token_headers(), REPROTECT_BODY)
        other = await asyncio.wait_for(one(world.shim, reprotect), 3)

        assert (other.status, other.body) == (200, b"")
        assert world.sim.action_calls == [(PROJECT, GROUP, "start-server-group")]
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------
# the disguise check's shortcut (a path with nothing to decode and no collection name in it is
# ruled out without canonicalising it) never changes its answer

_NAMES = ["os-vendor-replication-consistency-groups", "os-vendor-replications"]


def _spellings(name: str) -> list[str]:
    """`name`, and ways a path can spell it that only decoding or dropping blanks reveals."""
    return [name, name.upper(), f"%6F{name[1:]}", f"{name[:9]}\t{name[9:]}", f"{name[:9]} {name[9:]}",
            f"{name[:9]}\x85{name[9:]}", f"{name}.json", f"{name[:9]}%20{name[9:]}", "volumes"]


@st.composite
def _paths(draw: st.DrawFn) -> str:
    """Translated-looking paths: each segment spelled one way or another, odd separators, and now
    and then a dot segment or other junk between them."""
    name = draw(st.sampled_from(_NAMES))
    segments = [draw(st.sampled_from(["v2", "V2", "%76%32", "v3"])), PROJECT,
                draw(st.sampled_from(_spellings(name))), *draw(st.sampled_from([[], [RCG], [RCG, "action"]]))]
    path = ""
    for segment in segments:
        path += draw(st.sampled_from(["/", "/", "/", "//", "%2F", "/./", "/x/../", "/\u00e9/", "\\"])) + segment
    return path + draw(st.sampled_from(["", "", "/", ";x"]))


@given(_paths())
def test_the_disguise_shortcut_agrees_with_the_full_reading(path):
    """A plain path is judged by its lower case alone; the full reading (every decoding, folding and
    dropped character) says the same of it."""
    assert names_a_translated_collection(path) == paths._any_reading_names_a_collection(path), path
    assert disguises_a_translated_url(path) == (paths._any_reading_names_a_collection(path)
                                                and not paths.is_canonical_route(path)), path
