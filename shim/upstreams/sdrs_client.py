"""Thin HTTP edge toward SDRS v1: one pooled session, explicit timeouts, no interpretation.

Transport failures become `SdrsUnreachable` / `SdrsTimeout`; every HTTP answer, error or not, comes
back as an `SdrsAnswer` for the pure translation code to judge. Action POSTs are sent exactly once:
nothing here retries.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from shim import __version__
from shim.config import Timeouts
from shim.translate.sdrs_models import SdrsAnswer, SdrsNotSent, SdrsTimeout, SdrsTransportError, SdrsUnreachable
from shim.translate.signing import KeyPair, payload_hash_of_body
from shim.upstreams.resign import resign

USER_AGENT = f"evs-sdrs-shim/{__version__}"
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # SDRS answers are small JSON documents


# Told about every exchange once it ends: (monotonic start time, the answer or None, the transport
# error or None). For metrics; it must not raise or block.
SdrsObserver = Callable[[float, "SdrsAnswer | None", "SdrsTransportError | None"], None]


class SdrsClient:
    def __init__(
        self, base_url: str, timeouts: Timeouts, pool_connections: int, observer: SdrsObserver | None = None,
        *, tls: ssl.SSLContext | None = None, trust_env: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._observer = observer
        self._tls = tls  # None: aiohttp's default verification
        self._trust_env = trust_env
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read
        )
        self._pool_connections = pool_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_connections, ssl=self._tls or True),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # never share one client's cookies with another
            auto_decompress=True,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            trust_env=self._trust_env,  # upstreams.trust_env: HTTPS_PROXY / NO_PROXY
        )
        # aiohttp resends a PUT or DELETE (methods RFC 9110 calls idempotent) once by itself when a
        # kept-alive connection drops; an SDRS DELETE starts a job each time, so nothing is resent
        # behind the shim's back: only a GET is repeated, below. aiohttp has no public switch for
        # this (its own test client sets the same attribute).
        self._session._retry_connection = False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None = None,
        key: KeyPair | None = None,
    ) -> SdrsAnswer:
        """One HTTP exchange with SDRS; `path` is built by the caller from validated ids only. With
        `key`, the request is AK/SK-signed for SDRS's host."""
        started = time.monotonic()
        try:
            answer = await self._exchange(method, path, headers, json_body, key)
        except SdrsTransportError as err:
            if self._observer is not None:
                self._observer(started, None, err)
            raise
        if self._observer is not None:
            self._observer(started, answer, None)
        return answer

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None, key: KeyPair | None
    ) -> SdrsAnswer:
        """One exchange; a GET whose kept-alive connection dropped before the answer is sent once more
        on a new connection (RFC 9112 9.3.1), never another method."""
        try:
            return await self._exchange_once(method, path, headers, json_body, key)
        except SdrsUnreachable as err:
            if method != "GET" or isinstance(err, SdrsNotSent) or not isinstance(
                err.__cause__, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError
            ):
                raise
            return await self._exchange_once(method, path, headers, json_body, key)

    async def _exchange_once(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None, key: KeyPair | None
    ) -> SdrsAnswer:
        assert self._session is not None, "SdrsClient.start() was not awaited"
        url = URL(self.base_url + path, encoded=True)  # encoded=True: the path is built from validated ids
        data = None
        outgoing: Mapping[str, str] = headers
        if json_body is not None:
            data = json.dumps(json_body).encode()
            outgoing = {**headers, "Content-Type": "application/json"}
        if key is not None:
            signed = CIMultiDict(outgoing)
            resign(signed, key, method, url, payload_hash_of_body(signed, data or b""))
            outgoing = signed
        try:
            async with self._session.request(
                method, url, data=data, headers=outgoing, allow_redirects=False,
            ) as response:
                body = await _read_capped(response)
                return SdrsAnswer(response.status, body, CIMultiDict(response.headers))
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as err:
            # Raised before a byte was written (connect, or waiting for a pooled connection).
            raise SdrsNotSent(f"no connection to SDRS: {type(err).__name__}: {err}") from err
        except TimeoutError as err:
            raise SdrsTimeout(f"no answer from SDRS within the timeout ({method} {path})") from err
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
            raise SdrsUnreachable(f"{type(err).__name__}: {err}") from err
        except aiohttp.ClientResponseError as err:  # malformed HTTP from SDRS
            raise SdrsUnreachable(f"malformed answer: {err.message}") from err


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The whole body (a short or cut-off body raises ClientPayloadError); past the cap, unreachable."""
    if response.content_length is not None and response.content_length <= MAX_ANSWER_BYTES:
        return await response.read()  # sized and small: one read
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise SdrsUnreachable(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    return bytes(body)
