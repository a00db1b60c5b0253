"""The lean HTTP/1.1 client of the SDRS hop (shim/upstreams/http1.py), against raw asyncio servers on
loopback that answer exactly as each test needs: framing, keep-alive, the failures it must tell apart
(nothing sent / no answer / too slow / malformed / too large) and the pool's bounds."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from shim.upstreams.http1 import (
    AnswerTimeout,
    AnswerTooLarge,
    Http1Pool,
    MalformedAnswer,
    NoAnswer,
    NotSent,
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
