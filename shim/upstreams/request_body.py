"""Reading the client's request body with an idle timeout (`timeouts.request_body_idle`) and, for a
passthrough, a minimum average rate (`limits.request_body_min_rate`): a client that stops sending, or
sends too slowly, is cut off instead of holding its connection for as long as it likes.

A passthrough body is read whole before a legacy connection is taken, as nginx does by default: in
memory up to `limits.request_buffer_bytes`, beyond that into an unlinked temporary file, all such
files together within `limits.request_spool_bytes` (`BodySpool`). So however slowly clients upload,
they hold no pooled legacy connection while they do.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Protocol

from aiohttp import web

from shim.context import ClientGone
from shim.translate.legacy import LegacyError

log = logging.getLogger("shim.passthrough")

# Set on a request whose body stalled while it streamed to the legacy endpoint (aiohttp's client
# reports that only as a failed upload).
BODY_STALLED = web.RequestKey("body_stalled", bool)
_UPLOAD_CHUNK = 64 * 1024
_SPOOL_RETRY_AFTER_SECONDS = 5


class BodyStalled(Exception):
    """No byte of the request body arrived for `idle` seconds (or it fell below the minimum rate)."""


class BodyObserver(Protocol):
    def request_chunk(self, chunk: bytes) -> None: ...


def stalled_error(idle: float) -> LegacyError:
    """408, and the connection is closed: the rest of the body may still come, and is not wanted."""
    return LegacyError(408, f"The request body stalled: nothing arrived for {idle:g} seconds.",
                       headers=(("Connection", "close"),))


def too_slow_error(min_rate: int) -> LegacyError:
    return LegacyError(408, f"The request body arrived too slowly: less than {min_rate} bytes a second on "
                            "average (limits.request_body_min_rate).", headers=(("Connection", "close"),))


@dataclass
class BodyPace:
    """When the body must have arrived by: the idle time from its start, plus one second per
    `min_rate` bytes received (mod_reqtimeout's MinRate); `min_rate` 0: pauses alone are bounded."""

    idle: float
    min_rate: int = 0
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.started or time.monotonic()

    def wait_for(self, received: int) -> float:
        """How long the next read may wait: at most `idle`, and no later than the deadline."""
        if not self.min_rate:
            return self.idle
        return min(self.idle, self.started + self.idle + received / self.min_rate - time.monotonic())



async def read_some(request: web.BaseRequest, most: int, idle: float) -> bytes:
    """Up to `most` bytes of the body as they arrive (b"" at its end); BodyStalled after `idle`
    seconds without a byte."""
    try:
        async with asyncio.timeout(idle):
            return await request.content.read(most)
    except TimeoutError:
        request[BODY_STALLED] = True
        raise BodyStalled(f"no request body byte for {idle:g} s") from None
    except ConnectionResetError:  # the client went away in the middle of its body: nobody to answer
        raise ClientGone("the client went away while sending its request body") from None


async def _read_paced(request: web.BaseRequest, most: int, pace: BodyPace, received: int) -> bytes:
    """The next bytes, within the pace: a read that waits its whole idle time is a stall, one cut
    short by the deadline a body that came too slowly."""
    wait = pace.wait_for(received)
    error = stalled_error(pace.idle) if wait >= pace.idle else too_slow_error(pace.min_rate)
    if wait <= 0:
        raise error
    try:
        return await read_some(request, most, wait)
    except BodyStalled:
        raise error from None


async def read_body_prefix(
    request: web.BaseRequest, limit: int, idle: float, pace: BodyPace | None = None,
) -> tuple[bytes, bool]:
    """The first bytes of the body, up to `limit` (+1 to tell): (body, True) when that is all of it,
    (prefix, False) when more follows. A body announced larger than `limit` is not read here at all.
    A stall (or, with `pace`, a body below its minimum rate) is a legacy 408."""
    if request.content_length is not None and request.content_length > limit:
        return b"", False
    content = request.content
    if content.is_eof():  # all of it has arrived (a small body usually comes with the head): no timer
        body = content.read_nowait(limit + 1)
        return body, len(body) <= limit
    pace = pace or BodyPace(idle)
    buffer = bytearray()
    while len(buffer) <= limit:
        chunk = await _read_paced(request, limit + 1 - len(buffer), pace, len(buffer))
        if not chunk:
            return bytes(buffer), True
        buffer += chunk
    return bytes(buffer), False


class BodySpool:
    """The temporary files passthrough bodies are read into: at most `max_bytes` in them at once, all
    requests together, in `directory` (None: the system's temporary directory). Files are unlinked
    from the start (`tempfile.TemporaryFile`), so a crash leaves nothing behind. Writes are plain
    blocking writes to the page cache, as nginx writes its client body temp files."""

    def __init__(self, directory: str | None, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.in_use = 0  # bytes reserved by bodies being read or relayed (a gauge reads it at scrape time)

    def _reserve(self, size: int) -> bool:
        if self.in_use + size > self.max_bytes:
            return False
        self.in_use += size
        return True

    def _full(self, wanted: int) -> LegacyError:
        if wanted > self.max_bytes:
            return LegacyError(400, f"Request body is too large: the migration proxy relays bodies of at most "
                                    f"{self.max_bytes} bytes (limits.request_spool_bytes).",
                               headers=(("Connection", "close"),))
        return LegacyError(503, "The migration proxy's room for request bodies is taken by other uploads "
                                "(limits.request_spool_bytes); try again shortly.",
                           retry_after=_SPOOL_RETRY_AFTER_SECONDS, headers=(("Connection", "close"),))

    async def read(self, request: web.BaseRequest, prefix: bytes, pace: BodyPace,
                   observer: BodyObserver | None = None) -> SpooledBody:
        """The whole body (`prefix` and the rest as it arrives) in a temporary file; a legacy 400/503
        when it does not fit, 408 when it stalls or arrives too slowly. The caller closes it."""
        announced = request.content_length
        reserved = announced if announced is not None else len(prefix)
        if not self._reserve(reserved):
            raise self._full(reserved)
        try:
            file: IO[bytes] = tempfile.TemporaryFile(dir=self.directory)
        except OSError as err:
            self.in_use -= reserved
            log.warning("cannot create a temporary file for a request body in %s: %s",
                        self.directory or tempfile.gettempdir(), type(err).__name__)
            raise LegacyError(503, "The migration proxy cannot hold this request body now; try again shortly.",
                              retry_after=_SPOOL_RETRY_AFTER_SECONDS, headers=(("Connection", "close"),)) from None
        body = SpooledBody(self, file, reserved)
        try:
            await body.fill(request, prefix, pace, observer)
        except BaseException:
            body.close()
            raise
        return body


class SpooledBody:
    """A request body in a temporary file, sent from its start each time it is iterated (so a request
    that must go again on a new connection can)."""

    def __init__(self, spool: BodySpool, file: IO[bytes], reserved: int) -> None:
        self._spool = spool
        self._file = file
        self._reserved = reserved
        self.size = 0

    async def fill(self, request: web.BaseRequest, prefix: bytes, pace: BodyPace,
                   observer: BodyObserver | None) -> None:
        chunk = prefix
        while True:
            if chunk:
                self._write(chunk)
                if observer is not None:
                    observer.request_chunk(chunk)
            chunk = await _read_paced(request, _UPLOAD_CHUNK, pace, self.size)
            if not chunk:
                break
        announced = request.content_length
        if announced is not None and self.size != announced:  # aiohttp's parser ends a short body with an error
            raise LegacyError(400, "The request body is shorter than its Content-Length.",
                              headers=(("Connection", "close"),))

    def _write(self, chunk: bytes) -> None:
        grown = self.size + len(chunk)
        if grown > self._reserved:  # chunked: reserve as it arrives
            if not self._spool._reserve(grown - self._reserved):
                raise self._spool._full(grown)
            self._reserved = grown
        try:
            self._file.write(chunk)
        except OSError as err:
            log.warning("cannot write a request body to its temporary file: %s", type(err).__name__)
            raise LegacyError(503, "The migration proxy cannot hold this request body now; try again shortly.",
                              retry_after=_SPOOL_RETRY_AFTER_SECONDS, headers=(("Connection", "close"),)) from None
        self.size = grown

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(_UPLOAD_CHUNK):
            yield chunk

    def close(self) -> None:
        if self._reserved:
            self._spool.in_use -= self._reserved
            self._reserved = 0
            self._file.close()
