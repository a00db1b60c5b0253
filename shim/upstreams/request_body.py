"""Reading the client's request body with an idle timeout (`timeouts.request_body_idle`): a client
that stops sending in the middle of a body is cut off instead of holding its connection, and any
legacy connection the body streams to, for as long as it likes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from shim.translate.legacy import LegacyError

# Set on a request whose body stalled while it streamed to the legacy endpoint (aiohttp's client
# reports that only as a failed upload).
BODY_STALLED = web.RequestKey("body_stalled", bool)
_UPLOAD_CHUNK = 64 * 1024


class BodyStalled(Exception):
    """No byte of the request body arrived for `idle` seconds."""


def stalled_error(idle: float) -> LegacyError:
    """408, and the connection is closed: the rest of the body may still come, and is not wanted."""
    return LegacyError(408, f"The request body stalled: nothing arrived for {idle:g} seconds.",
                       headers=(("Connection", "close"),))


async def read_some(request: web.BaseRequest, most: int, idle: float) -> bytes:
    """Up to `most` bytes of the body as they arrive (b"" at its end); BodyStalled after `idle`
    seconds without a byte."""
    try:
        async with asyncio.timeout(idle):
            return await request.content.read(most)
    except TimeoutError:
        request[BODY_STALLED] = True
        raise BodyStalled(f"no request body byte for {idle:g} s") from None


async def read_body_prefix(request: web.BaseRequest, limit: int, idle: float) -> tuple[bytes, bool]:
    """The first bytes of the body, up to `limit` (+1 to tell): (body, True) when that is all of it,
    (prefix, False) when more follows. A body announced larger than `limit` is not read here at all.
    A stall is a legacy 408."""
    if request.content_length is not None and request.content_length > limit:
        return b"", False
    content = request.content
    if content.is_eof():  # all of it has arrived (a small body usually comes with the head): no timer
        body = content.read_nowait(limit + 1)
        return body, len(body) <= limit
    buffer = bytearray()
    try:
        while len(buffer) <= limit:
            chunk = await read_some(request, limit + 1 - len(buffer), idle)
            if not chunk:
                return bytes(buffer), True
            buffer += chunk
    except BodyStalled:
        raise stalled_error(idle) from None
    return bytes(buffer), False


async def stream_body(request: web.BaseRequest, prefix: bytes, idle: float) -> AsyncIterator[bytes]:
    """`prefix`, then the rest of the body as it arrives (aiohttp streams an async generator without
    buffering it); a stall ends the upload with BodyStalled."""
    if prefix:
        yield prefix
    while chunk := await read_some(request, _UPLOAD_CHUNK, idle):
        yield chunk
