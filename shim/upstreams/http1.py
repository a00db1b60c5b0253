"""A lean HTTP/1.1 client for the shim's two upstream hops, on httptools (llhttp, the parser uvicorn
builds on).

aiohttp's ClientSession costs 65-110 us of CPU per exchange here (request and response objects,
tracing hooks, cookie and redirect machinery the shim never uses); this client writes one request and
parses one answer on a pooled keep-alive connection for a fraction of that. One mechanism, two ways in:
- `Http1Pool.exchange` (the legacy passthrough): the request body is bytes or an async iterator of
  chunks (sent with the caller's Content-Length when it gave one, else chunked); the answer's head
  (status, reason, every header in order with repeats and original spelling) comes back as soon as it
  is parsed, its body is then read chunk by chunk, never decoded, with backpressure: reading from the
  upstream pauses while more than `_HIGH_WATER` bytes wait unread;
- `Http1Pool.request` (the SDRS hop: small JSON documents): the same exchange read whole, capped at
  `max_body` as it arrives, gzip/deflate decoded.
What it keeps, as the shim needs:
- timeouts with aiohttp's meaning: `connect` covers waiting for a free pooled connection and the TCP
  (and TLS) connect; `read` the longest silence while the answer arrives (counted from the end of the
  request body, and not while reading is paused because the caller has not taken what came); `total`
  the whole exchange, the answer's body included;
- 1xx interim answers skipped, HEAD / 204 / 304 answers without a body, answers that end with the
  connection, a connection reused only after a complete answer to a completely sent request;
- failures that say what happened: `NotSent` (no connection could be used: nothing left the shim;
  `ConnectTimeout` when that took too long), `NoAnswer` (the connection ended before a complete answer;
  `reused` when it was a kept-alive one, `answered` when part of the answer had come), `UploadFailed`
  (the request body's iterator failed or fell short of its length), `AnswerTimeout`,
  `MalformedAnswer`, `AnswerTooLarge`;
- nothing is ever sent twice: this module never retries (`fresh=True` asks for a new connection, for
  a caller that repeats a request itself).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httptools

# Answer bytes that may wait unread before reading from the upstream pauses.
_HIGH_WATER = 64 * 1024
# An answer's head within aiohttp's client limits (a field's name and value, the number of fields);
# the bytes of a head are capped as they arrive, since httptools gathers a field whole before
# handing it over.
_MAX_FIELD_BYTES = 8190
_MAX_FIELDS = 128
_MAX_HEAD_BYTES = (_MAX_FIELDS + 1) * (_MAX_FIELD_BYTES + 4)
# Control characters a header line must not carry (aiohttp's client refuses the same).
_FORBIDDEN_IN_HEAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

RequestBody = bytes | AsyncIterable[bytes] | None
T = TypeVar("T")


class Http1Error(Exception):
    pass


class NotSent(Http1Error):
    """No connection could be used (refused, unreachable, TLS failure, no pooled connection free in time)."""


class ConnectTimeout(NotSent):
    """No pooled connection came free, or no connection was made, within the connect timeout."""


class NoAnswer(Http1Error):
    """The connection ended before a complete answer; the request may have been received."""

    def __init__(self, message: str, reused: bool, answered: bool = False) -> None:
        super().__init__(message)
        self.reused = reused  # the connection had served an exchange before
        self.answered = answered  # some of the answer had arrived


class UploadFailed(Http1Error):
    """The request body could not be sent: its iterator failed (the cause) or ended short of its length."""


class AnswerTimeout(Http1Error):
    pass


class MalformedAnswer(Http1Error):
    pass


class AnswerTooLarge(Http1Error):
    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


class _Unsolicited(Exception):
    """Bytes after a complete answer: the connection cannot be trusted with another exchange."""


@dataclass
class Http1Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One pooled connection and the exchange under way on it: the parser's callbacks fill in the
    answer's head and queue its body; `wait_head` and `read` wait for them. Waiters only wake their
    owner (the state says what happened), so no future ever holds an exception nobody retrieves."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.active = False  # an exchange is under way (between start and end)
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upload: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None
        self.chunked = False
        self.encoding = b""
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.answered = False
        self._head_bytes = 0
        self.uploaded = True
        self._head_only = False
        self._interim = False
        self._error: Http1Error | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._last_data = 0.0
        self._total_due = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake_drain()
        if not self.active or self.complete or self._error is not None:
            return
        if self.head_done and self.length is None and not self.chunked and exc is None:
            self._finish()  # an answer without a length ends with the connection (RFC 9112 6.3)
            return
        self._set_error(NoAnswer("the connection closed before a complete answer", self.reused, self.answered))

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            self.close()  # nothing was asked, or the answer was whole: unsolicited bytes
            return
        self.answered = True
        self._last_data = self._loop.time()
        if not self.head_done:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self.fail(MalformedAnswer(f"malformed answer: its head is over {_MAX_HEAD_BYTES} bytes"))
                return
        try:
            self._parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserUpgrade:
            self.fail(MalformedAnswer("malformed answer: 101 Switching Protocols"))
        except httptools.HttpParserError as err:
            if self.complete:
                self.close()
                return
            # An error raised in a callback comes out wrapped (HttpParserCallbackError).
            cause = err.__context__ or err.__cause__
            self.fail(cause if isinstance(cause, Http1Error)
                      else MalformedAnswer(f"malformed answer: {type(err).__name__}"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Unsolicited

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > _MAX_FIELD_BYTES or len(self.raw_headers) >= _MAX_FIELDS:
            raise MalformedAnswer(f"malformed answer: a field over {_MAX_FIELD_BYTES} bytes or over "
                                  f"{_MAX_FIELDS} fields")
        self.raw_headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.strip().isdigit():
                raise httptools.HttpParserError("bad Content-Length")
            self.length = int(value)
        elif lowered == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        elif lowered == b"content-encoding":
            self.encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:
            if status < 100:
                raise MalformedAnswer(f"malformed answer: status {status}")
            if status == 101:  # the request asked for no protocol switch (Upgrade is hop-by-hop)
                raise MalformedAnswer("malformed answer: 101 Switching Protocols")
            self._interim = True  # 100 Continue, 103 Early Hints...: the real answer follows
            return
        self.status = status
        self.head_done = True
        if self._head_only:
            # No body whatever the length says; llhttp cannot be told so, so the rest is ignored.
            self.keep_alive = self._parser.should_keep_alive()  # type: ignore[union-attr]
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            raise _Unsolicited
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self.reason, self.raw_headers, self.length, self.chunked, self.encoding = b"", [], None, False, b""
            self._interim = False
            return
        if self.complete:
            return
        self.keep_alive = self._parser.should_keep_alive()  # type: ignore[union-attr]
        self._finish()

    # -- one exchange ------------------------------------------------------------------------------

    def start(self, method: str, target: str, headers: Sequence[tuple[str, str]], body: RequestBody,
              total_due: float) -> None:
        """Write the request (the body's first bytes, or all of them); the answer is parsed as it comes."""
        assert self.transport is not None
        self._reset()
        self.active = True
        self._head_only = method == "HEAD"
        self._parser = httptools.HttpResponseParser(self)
        self._total_due = total_due
        self._last_data = now = self._loop.time()
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers]
        declared: int | None = None
        if isinstance(body, bytes):
            lines.append(f"Content-Length: {len(body)}")
        elif body is not None:
            declared = _declared_length(headers)
            if declared is None:
                lines.append("Transfer-Encoding: chunked")
        text = "\r\n".join(lines)
        if _FORBIDDEN_IN_HEAD.search(text.replace("\r\n", "  ")) is not None:
            raise ValueError("a control character in the request line or a header (header injection?)")
        head = (text + "\r\n\r\n").encode("utf-8")
        if isinstance(body, bytes) or body is None:
            self.transport.write(head + body if body else head)
        else:
            self.transport.write(head)
            self.uploaded = False
            self._upload = self._loop.create_task(self._send_body(body, declared))
        self._timer = self._loop.call_at(min(total_due, now + self._read_timeout), self._check_timeouts)

    async def wait_head(self) -> None:
        """Until the answer's head (1xx skipped) has been parsed; its failure else."""
        while not self.head_done:
            if self._error is not None:
                raise self._error
            if self.complete:  # cannot happen with llhttp; never wait for nothing
                raise MalformedAnswer("malformed answer: it ended before its head")
            self._waiter = self._loop.create_future()
            await self._waiter

    async def read(self) -> bytes:
        """The answer's body bytes that arrived since the last read (waiting for some); b"" at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    self._last_data = self._loop.time()  # the read timeout measures the peer, not the caller
                    if not self.closed and self.transport is not None:
                        self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            await self._waiter

    def reusable(self) -> bool:
        return self.complete and self.uploaded and self.keep_alive and not self.closed

    def end(self) -> None:
        """The caller is done with this exchange (whole or not)."""
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._upload is not None:
            if not self._upload.done():
                self._upload.cancel()
            self._upload = None
        self._chunks.clear()

    def fail(self, err: Http1Error) -> None:
        self._set_error(err)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- inside --------------------------------------------------------------------------------------

    def _set_error(self, err: Http1Error) -> None:
        if self._error is None and not self.complete:
            self._error = err
            self._wake()

    def _finish(self) -> None:
        self.complete = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        _resolve(waiter, None)

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        _resolve(waiter, None)

    def _check_timeouts(self) -> None:
        """One timer per exchange, moved on as data arrives (instead of a wait_for per read)."""
        self._timer = None
        if not self.active or self.complete or self._error is not None:
            return
        now = self._loop.time()
        if now >= self._total_due:
            self.fail(AnswerTimeout("the exchange took longer than the total timeout"))
            return
        if self.uploaded and not self._paused:
            due = self._last_data + self._read_timeout
            if now >= due:
                self.fail(AnswerTimeout("no answer byte within the read timeout"))
                return
        else:
            due = now + self._read_timeout  # sending, or the caller is behind: only `total` runs
        self._timer = self._loop.call_at(min(due, self._total_due), self._check_timeouts)

    async def _send_body(self, chunks: AsyncIterable[bytes], declared: int | None) -> None:
        """The rest of the request body, as the iterator yields it, at the pace the upstream reads."""
        transport = self.transport
        assert transport is not None
        sent = 0
        try:
            async for chunk in chunks:
                if self.closed:
                    return
                if not chunk:
                    continue  # an empty chunk would end a chunked body
                sent += len(chunk)
                if declared is None:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                elif sent > declared:
                    raise UploadFailed("the request body is longer than its Content-Length")
                else:
                    transport.write(chunk)
                while self._write_paused and not self.closed:
                    self._drain_waiter = self._loop.create_future()
                    await self._drain_waiter
            if self.closed:
                return
            if declared is None:
                transport.write(b"0\r\n\r\n")
            elif sent != declared:
                raise UploadFailed("the request body ended before its Content-Length")
            self.uploaded = True
            self._last_data = self._loop.time()  # the read timeout starts once the request is sent
        except UploadFailed as err:
            self.fail(err)
        except Exception as err:
            failure = UploadFailed(f"the request body failed: {type(err).__name__}")
            failure.__cause__ = err
            self.fail(failure)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None and not self.uploaded:
                try:
                    await aclose()
                except Exception:  # noqa: S110 - already failed; closing the generator is housekeeping
                    pass


def _declared_length(headers: Sequence[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


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
        timer = loop.call_later(timeout, _resolve, waiter, False)  # no slot in time
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
            if _resolve(self._waiting.popleft(), True):
                return
        self._free += 1


class Http1Exchange:
    """One request's answer as it arrives: its head at once, its body through `read()`. `release()`
    (always, whole answer or not) gives the connection back to the pool, or closes it."""

    __slots__ = ("status", "reason", "raw_headers", "content_length", "content_encoding", "_pool", "_connection",
                 "_released")

    def __init__(self, pool: Http1Pool, connection: _Connection) -> None:
        self.status = connection.status
        self.reason = connection.reason  # bytes, as sent
        self.raw_headers = connection.raw_headers  # (name, value) bytes, in order, repeats kept
        self.content_length = connection.length
        self.content_encoding = connection.encoding  # lower-cased bytes; b"" without one
        self._pool = pool
        self._connection = connection
        self._released = False

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw_headers]

    async def read(self) -> bytes:
        """The body bytes that arrived since the last read; b"" at the end. Raises NoAnswer (cut off),
        AnswerTimeout, MalformedAnswer (bad chunk framing) or UploadFailed."""
        if self._released:
            raise RuntimeError("read after release")
        return await self._connection.read()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._finish(self._connection)

    async def __aenter__(self) -> Http1Exchange:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()


class Http1Pool:
    """Pooled keep-alive connections to one origin (`host`, `port`, TLS when `tls` is given)."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext | None, limit: int,
        connect_timeout: float, read_timeout: float, total_timeout: float, max_body: int,
        name: str = "the upstream",
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._name = name  # in failure messages
        self._slots = _Slots(limit)
        self._idle: deque[_Connection] = deque()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._max_body = max_body
        self._open: set[_Connection] = set()

    async def exchange(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: RequestBody = None,
        *, fresh: bool = False,
    ) -> Http1Exchange:
        """Send one request and return once its answer's head is in. `target` is the request target
        (path and query), `headers` exactly the fields to send besides the framing: `Content-Length`
        is added for a bytes body; for an iterator, `Transfer-Encoding: chunked` unless `headers` carry
        a Content-Length. `fresh`: a new connection, never a kept-alive one."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        connection = await self._connection(started, fresh)
        try:
            connection.start(method, target, headers, body, started + self._total_timeout)
            await connection.wait_head()
        except BaseException:
            self._finish(connection)
            raise
        return Http1Exchange(self, connection)

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None,
        *, decompress: bool = True,
    ) -> Http1Answer:
        """One exchange read whole: AnswerTooLarge beyond `max_body` (at once for a Content-Length over
        it); a gzip or deflate body is decoded unless `decompress` is False."""
        limit = self._max_body
        async with await self.exchange(method, target, headers, body) as answer:
            if answer.content_length is not None and answer.content_length > limit:
                raise AnswerTooLarge(limit)
            parts: list[bytes] = []
            size = 0
            while chunk := await answer.read():
                size += len(chunk)
                if size > limit:
                    raise AnswerTooLarge(limit)
                parts.append(chunk)
            content = parts[0] if len(parts) == 1 else b"".join(parts)
            if decompress and answer.content_encoding in (b"gzip", b"x-gzip", b"deflate"):
                content = _decompressed(content, answer.content_encoding.decode(), limit)
            return Http1Answer(answer.status, answer.headers, content)

    def _finish(self, connection: _Connection) -> None:
        """The exchange on `connection` is over: keep the connection for the next one when it can be."""
        connection.end()
        if connection.reusable():
            connection.reused = True
            self._idle.append(connection)
        else:
            connection.close()
            self._open.discard(connection)
        self._slots.give_back()

    async def _connection(self, started: float, fresh: bool) -> _Connection:
        """A slot, and an open connection in it (a kept-alive one when there is): else NotSent."""
        budget = min(self._connect_timeout, self._total_timeout)
        if not await self._slots.take(budget):
            raise ConnectTimeout(f"no pooled connection to {self._name} was free within {budget:g} s")
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        remaining = budget - (loop.time() - started)
        read_timeout = self._read_timeout
        try:
            _, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(loop, read_timeout), self._host, self._port, ssl=self._tls,
                server_hostname=self._host if self._tls is not None else None,
            ), max(remaining, 0.001))
        except TimeoutError:
            self._slots.give_back()
            raise ConnectTimeout(f"no connection to {self._name} within {budget:g} s") from None
        except (OSError, ssl.SSLError) as err:
            self._slots.give_back()
            raise NotSent(f"no connection to {self._name}: {type(err).__name__}: {err.strerror or err}"
                          if isinstance(err, OSError) else f"TLS failure: {err}") from None
        except BaseException:
            self._slots.give_back()
            raise
        self._open.add(protocol)
        return protocol

    async def close(self) -> None:
        for connection in list(self._open):
            connection.end()
            connection.close()
        self._open.clear()
        self._idle.clear()


def _resolve(waiter: asyncio.Future[T] | None, result: T) -> bool:
    """Wake whoever awaits `waiter` with `result`, if anyone still does (True then)."""
    if waiter is None or waiter.done():
        return False
    waiter.set_result(result)
    return True
