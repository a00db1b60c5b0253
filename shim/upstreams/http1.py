"""A lean HTTP/1.1 client for the SDRS hop, on httptools (llhttp, the parser uvicorn builds on).

The shim talks to SDRS in small JSON exchanges, two or three per translated call. aiohttp's
ClientSession costs 65-110 us of CPU per exchange here (request and response objects, tracing hooks,
cookie and redirect machinery the shim never uses); this client writes one request and parses one
answer on a pooled keep-alive connection for a fraction of that. What it keeps, as the shim needs:
- timeouts with aiohttp's meaning: `connect` covers waiting for a free pooled connection and the TCP
  (and TLS) connect; `read` the longest silence while the answer arrives; `total` the whole exchange;
- failures that say what happened: `NotSent` (no connection could be used: nothing left the shim, so
  nothing can have started), `NoAnswer` (the connection ended before a complete answer; `reused` when
  it was a kept-alive one, so a GET may be repeated once), `AnswerTimeout`, `MalformedAnswer`,
  `AnswerTooLarge` (a cap on the body, checked as it arrives);
- nothing is ever sent twice: this module never retries.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import httptools


class Http1Error(Exception):
    pass


class NotSent(Http1Error):
    """No connection could be used (refused, unreachable, TLS failure, no pooled connection free in time)."""


class NoAnswer(Http1Error):
    """The connection ended before a complete answer; the request may have been received."""

    def __init__(self, message: str, reused: bool) -> None:
        super().__init__(message)
        self.reused = reused


class AnswerTimeout(Http1Error):
    pass


class MalformedAnswer(Http1Error):
    pass


class AnswerTooLarge(Http1Error):
    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


@dataclass
class Http1Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _Answer:
    """What the parser has seen of the answer being received."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    headers_done: bool = False
    length: int | None = None
    chunked: bool = False
    encoding: str = ""


class _Connection(asyncio.Protocol):
    """One pooled connection: it parses the answer to the request written on it."""

    def __init__(self, max_body: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._max_body = max_body
        self._parser: httptools.HttpResponseParser | None = None
        self._answer = _Answer()
        self._header_name = b""
        self.waiter: asyncio.Future[None] | None = None
        self.keep_alive = False
        self.last_data = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        answer = self._answer
        if answer.headers_done and answer.length is None and not answer.chunked:
            waiter.set_result(None)  # an answer without a length ends with the connection (RFC 9112 6.3)
            return
        waiter.set_exception(NoAnswer("the connection closed before a complete answer", self.reused))

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return  # nothing was asked on this connection: unsolicited bytes, it will be closed
        self.last_data = asyncio.get_running_loop().time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            # An error raised in a callback comes out wrapped (HttpParserCallbackError).
            cause = err.__context__ or err.__cause__
            self._fail(cause if isinstance(cause, AnswerTooLarge)
                       else MalformedAnswer(f"malformed answer: {type(err).__name__}"))

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        header, text = name.decode("latin-1"), value.decode("latin-1")
        self._answer.headers.append((header, text))
        lowered = header.lower()
        if lowered == "content-length":
            if not text.strip().isdigit():
                raise httptools.HttpParserError("bad Content-Length")
            self._answer.length = int(text)
            if self._answer.length > self._max_body:
                raise AnswerTooLarge(self._max_body)
        elif lowered == "transfer-encoding":
            self._answer.chunked = "chunked" in text.lower()
        elif lowered == "content-encoding":
            self._answer.encoding = text.strip().lower()

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._answer.status = self._parser.get_status_code()
        self._answer.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._answer.body += body
        if len(self._answer.body) > self._max_body:
            raise AnswerTooLarge(self._max_body)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- one exchange ------------------------------------------------------------------------------

    def start(self, request: bytes) -> asyncio.Future[None]:
        """Write `request`; the future completes when its answer is complete."""
        assert self.transport is not None
        self._answer = _Answer()
        self._parser = httptools.HttpResponseParser(self)
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.keep_alive = False
        self.last_data = loop.time()
        self.transport.write(request)
        return self.waiter

    def answer(self) -> Http1Answer:
        answer = self._answer
        body = bytes(answer.body)
        if answer.encoding in ("gzip", "x-gzip", "deflate"):
            body = _decompressed(body, answer.encoding, self._max_body)
        return Http1Answer(answer.status, answer.headers, body)

    def _fail(self, err: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS)
    try:
        plain = decoder.decompress(body, limit + 1)
    except zlib.error as err:
        raise MalformedAnswer(f"malformed {encoding} body: {err}") from None
    if len(plain) > limit:
        raise AnswerTooLarge(limit)
    return plain


class _Slots:
    """At most `limit` exchanges at once; a free slot is taken without suspending (the common case)."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: deque[asyncio.Future[bool]] = deque()

    async def take(self, timeout: float) -> bool:
        """True once a slot is this caller's; False when none came free within `timeout`."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(waiter)
        timer = loop.call_later(timeout, lambda: waiter.done() or waiter.set_result(False))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.give_back()  # granted just as the caller went away: pass it on
            raise
        finally:
            timer.cancel()
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def give_back(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1


class Http1Pool:
    """Pooled keep-alive connections to one origin (`host`, `port`, TLS when `tls` is given)."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext | None, limit: int,
        connect_timeout: float, read_timeout: float, total_timeout: float, max_body: int,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._slots = _Slots(limit)
        self._idle: deque[_Connection] = deque()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._max_body = max_body
        self._open: set[_Connection] = set()

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None,
    ) -> Http1Answer:
        """One exchange: `target` is the request target (path and query), `headers` exactly the
        fields to send besides the framing (Content-Length is added for a body)."""
        if method == "HEAD":
            raise ValueError("HEAD is not supported: its answer's length describes no body")
        loop = asyncio.get_running_loop()
        started = loop.time()
        connection = await self._connection(started)
        try:
            waiter = connection.start(_serialised(method, target, headers, body))
            await self._wait(connection, waiter, started)
            answer = connection.answer()
        except BaseException:
            connection.close()
            self._open.discard(connection)
            self._slots.give_back()
            raise
        if connection.keep_alive and not connection.closed:
            connection.reused = True
            self._idle.append(connection)
        else:
            connection.close()
            self._open.discard(connection)
        self._slots.give_back()
        return answer

    async def _connection(self, started: float) -> _Connection:
        """A slot, and an open connection in it (a kept-alive one when there is): else NotSent."""
        budget = min(self._connect_timeout, self._total_timeout)
        if not await self._slots.take(budget):
            raise NotSent(f"no pooled connection to SDRS was free within {budget:g} s")
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        remaining = budget - (loop.time() - started)
        try:
            _, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self._max_body), self._host, self._port, ssl=self._tls,
                server_hostname=self._host if self._tls is not None else None,
            ), max(remaining, 0.001))
        except TimeoutError:
            self._slots.give_back()
            raise NotSent(f"no connection to SDRS within {budget:g} s") from None
        except (OSError, ssl.SSLError) as err:
            self._slots.give_back()
            raise NotSent(f"no connection to SDRS: {type(err).__name__}: {err.strerror or err}"
                          if isinstance(err, OSError) else f"TLS failure: {err}") from None
        except BaseException:
            self._slots.give_back()
            raise
        self._open.add(protocol)
        return protocol

    async def _wait(self, connection: _Connection, waiter: asyncio.Future[None], started: float) -> None:
        """Until the answer is complete, within the read timeout (silence while it arrives) and the
        total one: one timer, moved on when data arrived, instead of a wait_for per read."""
        loop = asyncio.get_running_loop()
        total_due = started + self._total_timeout

        def check() -> None:
            if waiter.done():
                return
            due = min(total_due, connection.last_data + self._read_timeout)
            if loop.time() >= due:
                waiter.set_exception(AnswerTimeout("no answer from SDRS within the timeout"))
                connection.close()
            else:
                timer[0] = loop.call_at(due, check)

        timer = [loop.call_at(min(total_due, loop.time() + self._read_timeout), check)]
        try:
            await waiter
        finally:
            timer[0].cancel()

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()


def _serialised(method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    return head + body if body else head
