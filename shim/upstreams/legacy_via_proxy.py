"""The legacy hop through an egress proxy (`upstreams.trust_env` with a proxy that applies to the legacy
endpoint): aiohttp's ClientSession, which speaks the proxy's CONNECT, seen through the lean client's
interface (shim/upstreams/http1.py: an exchange with `status`, `reason`, `raw_headers`,
`content_length`, `read()`, `release()`, and its failure classes), so the passthrough has one path.

aiohttp repeats a request with an idempotent method and a replayable body once by itself when the
server closed the connection before answering; the passthrough does the same on the lean client."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import aiohttp
from yarl import URL

from shim.config import Timeouts
from shim.upstreams import http1
from shim.upstreams.bodies import AnswerTooLarge, read_capped
from shim.upstreams.peer_errors import describe_peer_error

# aiohttp would otherwise add headers the client never sent (`Accept: */*`, its own User-Agent and
# Accept-Encoding, `Content-Type: application/octet-stream` for a body): skip them all.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class ProxiedExchange:
    """aiohttp's answer as an http1.Http1Exchange."""

    __slots__ = ("status", "reason", "raw_headers", "content_length", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status = response.status
        self.reason = (response.reason or "").encode("utf-8", "surrogateescape")
        self.raw_headers = list(response.raw_headers)
        self.content_length = response.content_length
        self._response = response

    async def read(self) -> bytes:
        try:
            return await self._response.content.readany()
        except TimeoutError as err:
            raise http1.AnswerTimeout(describe_peer_error(err)) from err
        except aiohttp.ClientError as err:
            raise http1.NoAnswer(describe_peer_error(err), reused=False, answered=True) from err

    def release(self) -> None:
        self._response.release()


class ProxiedLegacyClient:
    """One pooled aiohttp session toward the legacy endpoint, through the environment's proxy."""

    def __init__(self, timeouts: Timeouts, pool_connections: int, *, tls: ssl.SSLContext | None,
                 max_answer_bytes: int) -> None:
        self._timeouts = timeouts
        self._pool_connections = pool_connections
        self._tls = tls
        self._max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeouts = self._timeouts
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_connections, ssl=self._tls or True),
            timeout=aiohttp.ClientTimeout(total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read),
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep one client's cookies for another
            auto_decompress=False,  # gzip stays gzip: the body is relayed byte for byte
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            trust_env=True,  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def exchange(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: http1.RequestBody,
    ) -> ProxiedExchange:
        """The answer's head to one request (`url` already percent-encoded); http1's failure classes."""
        assert self._session is not None, "ProxiedLegacyClient.start() was not awaited"
        try:
            response = await self._session.request(
                method, URL(url, encoded=True), headers=list(headers), data=body, allow_redirects=False,
            )
        except Exception as err:
            _raise_as_http1(err)
            raise
        return ProxiedExchange(response)

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]]) -> http1.Http1Answer:
        """One body-less exchange read whole (not decompressed), capped at `max_answer_bytes`."""
        assert self._session is not None, "ProxiedLegacyClient.start() was not awaited"
        try:
            async with self._session.request(
                method, URL(url, encoded=True), headers=list(headers), allow_redirects=False,
            ) as response:
                body = await read_capped(response, self._max_answer_bytes)
                return http1.Http1Answer(response.status, list(response.headers.items()), body)
        except AnswerTooLarge as err:
            raise http1.AnswerTooLarge(err.limit) from None
        except Exception as err:
            _raise_as_http1(err)
            raise


def _raise_as_http1(err: Exception) -> None:
    """aiohttp's failure raised as the lean client's class (its text tells aiohttp's kind, never the
    peer's bytes); returns for anything else, which the caller raises as it is."""
    text = describe_peer_error(err)
    mapped: http1.Http1Error
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        mapped = http1.ConnectTimeout(text)
    elif isinstance(err, TimeoutError):
        mapped = http1.AnswerTimeout(text)
    elif isinstance(err, aiohttp.ClientConnectorError):
        mapped = http1.NotSent(text)
    elif isinstance(err, aiohttp.ClientResponseError):
        mapped = http1.MalformedAnswer(text)
    elif isinstance(err, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        mapped = http1.NoAnswer(text, reused=False)
    elif isinstance(err, aiohttp.ClientError):
        mapped = http1.Http1Error(text)
    else:
        return
    raise mapped from err
