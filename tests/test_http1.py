"""The lean HTTP/1.1 client of both upstream hops (shim/upstreams/http1.py), against raw asyncio servers
on loopback that answer exactly as each test needs: framing, keep-alive, the failures it must tell
apart (nothing sent / no answer / too slow / malformed / too large) and the pool's bounds; streaming
exchanges (backpressure, streamed request bodies, 1xx, HEAD, answers that end with the connection);
and, through the shim, the passthrough's one repeat of a dropped idempotent request and its cut of a
client whose answer stalls."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from shim.upstreams.http1 import (
    AnswerTimeout,
    AnswerTooLarge,
    Http1Pool,
    MalformedAnswer,
    NoAnswer,
    NotSent,
    UploadFailed,
)

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Behaviour], Awaitable[RawServer]]]:
    servers: list[asyncio.AbstractServer] = []

    async def start(behaviour: Behaviour) -> RawServer:
        record = RawServer()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            record.connections += 1
            try:
                await behaviour(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        async def recorded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            original = reader.readuntil

            async def readuntil(separator: bytes = b"\n") -> bytes:
                data = await original(separator)
                record.requests.append(data)
                return data

            reader.readuntil = readuntil  # type: ignore[method-assign]
            await handle(reader, writer)

        server = await asyncio.start_server(recorded, "127.0.0.1", 0)
        servers.append(server)
        record.port = server.sockets[0].getsockname()[1]
        return record

    yield start
    for server in servers:
        server.close()


def pool(port: int, **options: float) -> Http1Pool:
    settings = {"limit": 4, "connect_timeout": 1.0, "read_timeout": 1.0, "total_timeout": 3.0, "max_body": 1024}
    settings.update(options)
    return Http1Pool("127.0.0.1", port, tls=None, **settings)  # type: ignore[arg-type]


def answer(body: bytes, status: str = "200 OK", *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(answer(b'{"ok": true}'))
        await writer.drain()


async def test_answers_come_back_whole_on_one_kept_alive_connection(serve):
    server = await serve(keep_answering)
    client = pool(server.port)
    try:
        answers = [await client.request("GET", f"/v1/p/jobs/{n}", [("Host", "sdrs")], None) for n in range(5)]
        posted = await client.request("POST", "/v1/p/x", [("Host", "sdrs")], b'{"a": 1}')
    finally:
        await client.close()
    assert [(a.status, a.body) for a in answers] == [(200, b'{"ok": true}')] * 5
    assert ("Content-Type", "application/json") in answers[0].headers
    assert posted.status == 200
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /v1/p/jobs/0 HTTP/1.1\r\nHost: sdrs\r\n")
    assert b"Content-Length: 8\r\n" in server.requests[-1]


async def test_chunked_unsized_and_gzip_answers(serve):
    async def varied(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if b"/chunked" in request:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            elif b"/gzip" in request:
                writer.write(answer(gzip.compress(b'{"zipped": 1}'), "200 OK", "Content-Encoding: gzip"))
            else:  # no length: the answer ends with the connection
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                await writer.drain()
                return
            await writer.drain()

    server = await serve(varied)
    client = pool(server.port)
    try:
        chunked = await client.request("GET", "/chunked", [], None)
        zipped = await client.request("GET", "/gzip", [], None)
        unsized = await client.request("GET", "/unsized", [], None)
    finally:
        await client.close()
    assert chunked.body == b"hello world"
    assert zipped.body == b'{"zipped": 1}'
    assert unsized.body == b"until the end"


@pytest.mark.parametrize("reply", [
    answer(b"x" * 2000),  # announced too large
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"400\r\n" + b"y" * 1024 + b"\r\n") * 2,
])
async def test_an_answer_over_the_cap_is_too_large(serve, reply):
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(1)

    client = pool((await serve(big)).port)
    try:
        with pytest.raises(AnswerTooLarge):
            await client.request("GET", "/", [], None)
    finally:
        await client.close()


async def test_garbage_is_a_malformed_answer_and_a_cut_answer_is_no_answer(serve):
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"0123456789")[:-4])  # promises 10 bytes, sends 6, closes

    malformed, truncated = pool((await serve(garbage)).port), pool((await serve(cut)).port)
    try:
        with pytest.raises(MalformedAnswer):
            await malformed.request("GET", "/", [], None)
        with pytest.raises(NoAnswer) as lost:
            await truncated.request("POST", "/", [], b"{}")
        assert not lost.value.reused
    finally:
        await malformed.close()
        await truncated.close()


async def test_nothing_sent_when_no_connection_can_be_made_or_no_pooled_one_frees_in_time(serve):
    refused = pool(9)  # nothing listens on the discard port on loopback
    with pytest.raises(NotSent):
        await refused.request("POST", "/", [], b"{}")
    await refused.close()

    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(answer(b"{}"))
            await writer.drain()

    server = await serve(slow)
    busy = pool(server.port, limit=1, connect_timeout=0.2)
    holder = asyncio.create_task(busy.request("GET", "/held", [], None))
    await asyncio.sleep(0.05)
    try:
        with pytest.raises(NotSent):
            await busy.request("POST", "/never-sent", [], b"{}")
        assert all(b"/never-sent" not in request for request in server.requests)
        release.set()
        assert (await holder).status == 200
        assert (await busy.request("GET", "/next", [], None)).status == 200  # the slot came back
    finally:
        release.set()
        await busy.close()


async def test_read_and_total_timeouts(serve):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    quiet = pool((await serve(silent)).port, read_timeout=0.2)
    slow = pool((await serve(trickle)).port, read_timeout=0.2, total_timeout=0.6)
    try:
        with pytest.raises(AnswerTimeout):
            await quiet.request("GET", "/", [], None)
        with pytest.raises(AnswerTimeout):  # never silent for 0.2 s, but longer than 0.6 s in all
            await slow.request("GET", "/", [], None)
    finally:
        await quiet.close()
        await slow.close()


async def test_a_kept_alive_connection_the_server_closed_is_no_answer_from_a_reused_one(serve):
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        await read_request(reader)  # reads the second request, then closes without answering

    client = pool((await serve(once)).port)
    try:
        assert (await client.request("GET", "/", [], None)).status == 200
        with pytest.raises(NoAnswer) as lost:
            await client.request("GET", "/", [], None)
        assert lost.value.reused
    finally:
        await client.close()


async def test_a_cancelled_exchange_gives_its_slot_back(serve):
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    client = pool((await serve(slow)).port, limit=1, read_timeout=10, total_timeout=10)
    waiting = asyncio.create_task(client.request("GET", "/", [], None))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    second = asyncio.create_task(client.request("GET", "/", [], None))
    await asyncio.sleep(0.1)
    assert not second.done()  # it got the slot and is waiting for the answer, not for a slot
    second.cancel()
    await client.close()


# -- streaming exchanges (the legacy passthrough) -------------------------------------------------


async def eventually(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def read_chunked_body(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")  # no trailers
    return bytes(body)


async def test_a_large_answer_streams_through_with_backpressure(serve):
    """Nobody reads: the client stops reading from the socket once a little is buffered (the rest
    waits in the upstream), and each read hands over a bounded amount; the bytes arrive intact."""
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB
    upstream_buffer: list[int] = []

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        upstream_buffer.append(writer.transport.get_write_buffer_size())
        await writer.drain()
        await asyncio.sleep(5)

    client = pool((await serve(big)).port)
    try:
        answer = await client.exchange("GET", "/big", [])
        transport = answer._connection.transport
        await eventually(lambda: not transport.is_reading(), "reading paused while nobody takes the body")
        sizes, body = [], bytearray()
        while chunk := await answer.read():
            sizes.append(len(chunk))
            body += chunk
        answer.release()
    finally:
        await client.close()
    assert answer.status == 200 and answer.content_length == len(payload)
    assert body == payload
    assert max(sizes) <= 1024 * 1024  # never the whole answer at once
    assert upstream_buffer[0] > len(payload) // 2  # most of it waited on the upstream's side


async def test_the_read_timeout_does_not_run_while_the_caller_is_behind(serve):
    """The read timeout measures the upstream's silence, not the caller's: reading paused for longer
    than it, the answer still comes whole."""
    payload = b"z" * (4 * 1024 * 1024)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()
        await asyncio.sleep(5)

    client = pool((await serve(big)).port, read_timeout=0.2, total_timeout=10)
    try:
        async with await client.exchange("GET", "/big", []) as answer:
            await asyncio.sleep(0.6)  # the caller is busy elsewhere, three read timeouts long
            body = bytearray()
            while chunk := await answer.read():
                body += chunk
    finally:
        await client.close()
    assert len(body) == len(payload)


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_streamed_request_body_goes_chunked_or_with_the_callers_length(serve, declared):
    pieces = [b"a" * 70_000, b"", b"b" * 5, b"c" * 300_000]
    payload = b"".join(pieces)
    received: list[tuple[bytes, bytes]] = []

    async def upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await read_chunked_body(reader) if b"chunked" in head else await reader.readexactly(len(payload))
            received.append((head, body))
            writer.write(answer(b"{}"))
            await writer.drain()

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            await asyncio.sleep(0)
            yield piece

    server = await serve(upload)
    client = pool(server.port)
    headers = [("Host", "legacy")] + ([("Content-Length", str(len(payload)))] if declared else [])
    try:
        async with await client.exchange("PUT", "/blob", headers, chunks()) as first:
            assert first.status == 200 and await first.read() == b"{}"
        async with await client.exchange("PUT", "/blob", headers, chunks()) as second:
            assert await second.read() == b"{}"
    finally:
        await client.close()
    (head, body), _ = received
    assert body == payload
    assert (b"Transfer-Encoding: chunked" in head) is not declared
    assert head.count(b"Content-Length") == int(declared)
    assert server.connections == 1  # the whole request sent and the whole answer read: kept alive


async def test_a_failing_or_short_request_body_ends_the_exchange_and_its_connection(serve):
    closed = asyncio.Event()

    async def patient(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # until the client closes
        closed.set()

    async def broken() -> AsyncIterator[bytes]:
        yield b"first"
        raise OSError("the client went away")

    async def short() -> AsyncIterator[bytes]:
        yield b"12345"

    client = pool((await serve(patient)).port)
    try:
        with pytest.raises(UploadFailed) as failed:
            await client.exchange("POST", "/", [], broken())
        assert isinstance(failed.value.__cause__, OSError)
        await asyncio.wait_for(closed.wait(), 5)
        closed.clear()
        with pytest.raises(UploadFailed, match="ended before its Content-Length"):
            await client.exchange("POST", "/", [("Content-Length", "10")], short())
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        await client.close()


async def test_an_answer_before_the_whole_request_body_is_not_followed_by_another_request(serve):
    """The upstream answered without reading the whole upload: that connection is never reused (the
    rest of the body would be read as the next request)."""
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b'{"too": "large"}', "413 Payload Too Large"))
        await writer.drain()
        await asyncio.sleep(5)

    endless = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await endless.wait()
        yield b"never"

    server = await serve(early)
    client = pool(server.port)
    try:
        async with await client.exchange("PUT", "/", [], body()) as early_answer:
            assert early_answer.status == 413 and await early_answer.read() == b'{"too": "large"}'
        async with await client.exchange("GET", "/", []) as next_answer:
            assert next_answer.status == 413
    finally:
        await client.close()
    assert server.connections == 2


async def test_an_answer_that_ends_with_the_connection_streams_to_its_end(serve):
    async def unsized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"second part")
        await writer.drain()

    server = await serve(unsized)
    client = pool(server.port)
    try:
        async with await client.exchange("GET", "/", []) as streamed:
            parts = []
            while chunk := await streamed.read():
                parts.append(chunk)
        assert streamed.content_length is None and b"".join(parts) == b"first part, second part"
        assert (await client.request("GET", "/", [], None)).body == b"first part, second part"
    finally:
        await client.close()
    assert server.connections == 2  # such a connection is never reused


async def test_interim_1xx_answers_are_skipped(serve):
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            writer.write(answer(b'{"final": true}', "201 Created", "X-Final: yes"))
            await writer.drain()

    server = await serve(interim)
    client = pool(server.port)
    try:
        async with await client.exchange("POST", "/", [], b"{}") as streamed:
            assert (streamed.status, streamed.reason) == (201, b"Created")
            assert (b"X-Final", b"yes") in streamed.raw_headers
            assert all(name != b"Link" for name, _ in streamed.raw_headers)
            assert await streamed.read() == b'{"final": true}'
        whole = await client.request("GET", "/", [], None)
    finally:
        await client.close()
    assert (whole.status, whole.body) == (201, b'{"final": true}')
    assert server.connections == 1


async def test_a_head_answer_has_no_body_whatever_its_length_says(serve):
    async def head_then_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if request.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"v1\"\r\n\r\n")
            else:
                writer.write(answer(b"[]"))
            await writer.drain()

    server = await serve(head_then_get)
    client = pool(server.port)
    try:
        async with await client.exchange("HEAD", "/thing", []) as head:
            assert (head.status, head.content_length) == (200, 1234)
            assert await head.read() == b""
        whole = await client.request("GET", "/thing", [], None)
    finally:
        await client.close()
    assert whole.body == b"[]"
    assert server.connections == 1  # the HEAD answer was complete: the connection served the GET


async def test_a_timeout_or_a_cut_while_the_body_streams_fails_the_read(serve):
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await reader.read()  # silent until the client hangs up

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()

    silent = pool((await serve(stalls)).port, read_timeout=0.2, total_timeout=30)
    dropped = pool((await serve(cut)).port)
    try:
        async with await silent.exchange("GET", "/", []) as answer_:
            assert await answer_.read() == b"x" * 10
            with pytest.raises(AnswerTimeout, match="read timeout"):
                await answer_.read()
        async with await dropped.exchange("GET", "/", []) as answer_:
            assert await answer_.read() == b"hello"
            with pytest.raises(NoAnswer) as lost:
                await answer_.read()
            assert lost.value.answered
    finally:
        await silent.close()
        await dropped.close()


# -- through the shim: retries and cuts ---------------------------------------------------------------


async def test_a_request_on_a_kept_alive_connection_the_upstream_dropped_is_repeated_once_if_idempotent(
    make_shim, serve
):
    """The upstream answers the first request on each connection, then reads the next and closes
    without a byte (a keep-alive race): a GET goes once more on a new connection; a POST never."""
    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b'{"upstream": true}'))
        await writer.drain()
        await read_request(reader)

    server = await serve(answers_once)
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=f"http://127.0.0.1:{server.port}")
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "POST"):
            async with session.get(f"{shim}/v2/p/warm-{method}") as warm:
                assert warm.status == 200
            async with session.request(method, f"{shim}/v2/p/{method}", data=b"{}") as reply:
                statuses = (reply.status, reply.headers.get("Retry-After"))
            lines = [request.split(b"\r\n")[0] for request in server.requests]
            assert lines.count(f"{method} /v2/p/{method} HTTP/1.1".encode()) == (2 if method == "GET" else 1)
            assert statuses == ((200, None) if method == "GET" else (503, "5"))


async def test_a_read_timeout_while_the_answer_streams_cuts_the_client_connection(make_shim, serve):
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        await writer.drain()
        await reader.read()  # silent until the shim hangs up

    server = await serve(stalls)
    shim = await make_shim(sdrs="http://127.0.0.1:9", legacy=f"http://127.0.0.1:{server.port}",
                           timeouts={"legacy": {"connect": 1, "read": 0.3, "total": 60}})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{shim}/v2/p/volumes") as reply:
            assert reply.status == 200 and reply.headers["Content-Length"] == "100000"
            with pytest.raises(aiohttp.ClientPayloadError):
                await reply.read()  # a short body, seen as short: the shim closed the connection


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Field-%d: v\r\n" % n for n in range(200)) + b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Endless: " + b"v" * (4 * 1024 * 1024),  # never ends: not gathered for ever
], ids=["too many fields", "field too long", "endless field"])
async def test_an_answer_head_beyond_the_limits_is_malformed(serve, head):
    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        await writer.drain()
        await reader.read()

    client = pool((await serve(hostile)).port)
    try:
        with pytest.raises(MalformedAnswer):
            await client.exchange("GET", "/", [])
    finally:
        await client.close()


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade",
                                         b"HTTP/1.1 099 Too Early"], ids=["101", "below 100"])
async def test_a_protocol_switch_or_a_status_below_100_is_malformed(serve, status_line):
    async def odd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(status_line + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    client = pool((await serve(odd)).port)
    try:
        with pytest.raises(MalformedAnswer):
            await client.request("GET", "/", [], None)
    finally:
        await client.close()
