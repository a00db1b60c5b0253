"""Reading an upstream answer whole, but never more than a cap (`limits.upstream_body_bytes`): a peer
that sends hundreds of megabytes must not take the shim's memory with it."""

from __future__ import annotations

import aiohttp

_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):
    """The answer's body is larger than the cap; reading stopped there (the connection is not reused)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or AnswerTooLarge as soon as it is known to exceed `limit` bytes (at once for a
    Content-Length over it). A short or cut-off body raises ClientPayloadError as `read()` does."""
    if response.content_length is not None:
        if response.content_length > limit:
            raise AnswerTooLarge(limit)
        return await response.read()  # sized and small: one read
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(limit)
    return bytes(body)
