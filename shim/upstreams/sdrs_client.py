"""Thin HTTP edge toward SDRS v1: pooled keep-alive connections, explicit timeouts, no interpretation.

Exchanges go over `shim.upstreams.http1` (httptools: a few microseconds of CPU per exchange instead of
aiohttp's tens), except through an egress proxy (`upstreams.trust_env` with a proxy that applies to
SDRS), which aiohttp's client handles. Transport failures become `SdrsNotSent` (nothing left the
shim) / `SdrsUnreachable` / `SdrsTimeout` / `SdrsAnswerTooLarge`; every HTTP answer, error or not,
comes back as an `SdrsAnswer` for the pure translation code to judge. Nothing but a GET is ever sent
twice (once more, on a new connection, when a kept-alive one closed before answering).
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
from shim.translate.sdrs_models import (
    SdrsAnswer,
    SdrsAnswerTooLarge,
    SdrsNotSent,
    SdrsTimeout,
    SdrsTransportError,
    SdrsUnreachable,
)
from shim.translate.signing import KeyPair, payload_hash_of_body
from shim.upstreams import http1
from shim.upstreams.bodies import AnswerTooLarge, read_capped
from shim.upstreams.egress import direct_pool, needs_proxy
from shim.upstreams.http1 import Http1Pool
from shim.upstreams.peer_errors import describe_peer_error
from shim.upstreams.resign import resign

USER_AGENT = f"evs-sdrs-shim/{__version__}"


# Told about every exchange once it ends: (monotonic start time, the answer or None, the transport
# error or None). For metrics; it must not raise or block.
# The key pair to sign with and the header names to sign (the client's; None: the shim's own request).
Signer = tuple[KeyPair, "tuple[str, ...] | None"]
SdrsObserver = Callable[[float, "SdrsAnswer | None", "SdrsTransportError | None"], None]


class SdrsClient:
    def __init__(
        self, base_url: str, timeouts: Timeouts, pool_connections: int, observer: SdrsObserver | None = None,
        *, tls: ssl.SSLContext | None = None, trust_env: bool = False, max_answer_bytes: int = 4 * 1048576,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._observer = observer
        self._tls = tls  # None: aiohttp's default verification
        self._trust_env = trust_env
        self._max_answer_bytes = max_answer_bytes  # SDRS answers are small JSON documents
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read
        )
        self._pool_connections = pool_connections
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._pool: Http1Pool | None = None
        origin = URL(self.base_url)
        self._host_header = origin.raw_authority
        self._fixed_headers = (("Host", self._host_header), ("User-Agent", USER_AGENT), ("Accept", "application/json"))

    async def start(self) -> None:
        origin = URL(self.base_url)
        if not needs_proxy(origin, self._trust_env):
            self._pool = direct_pool(origin, tls=self._tls, limit=self._pool_connections, timeouts=self._timeouts,
                                     max_body=self._max_answer_bytes, name="SDRS")
            return
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
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None = None,
        key: KeyPair | None = None, client_signed: tuple[str, ...] | None = None,
    ) -> SdrsAnswer:
        """One HTTP exchange with SDRS; `path` is built by the caller from validated ids only. With
        `key`, the request is AK/SK-signed for SDRS's host, over the header names `client_signed`
        (the verified client's; None: the shim's own request)."""
        started = time.monotonic()
        signer = None if key is None else (key, client_signed)
        try:
            answer = await self._exchange(method, path, headers, json_body, signer)
        except SdrsTransportError as err:
            if self._observer is not None:
                self._observer(started, None, err)
            raise
        if self._observer is not None:
            self._observer(started, answer, None)
        return answer

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None, signer: Signer | None
    ) -> SdrsAnswer:
        """One exchange; a GET whose kept-alive connection dropped before the answer is sent once more
        on a new connection (RFC 9112 9.3.1), never another method."""
        try:
            return await self._exchange_once(method, path, headers, json_body, signer)
        except SdrsUnreachable as err:
            dropped = err.__cause__
            if method != "GET" or isinstance(err, SdrsNotSent) or not (
                isinstance(dropped, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
                or isinstance(dropped, http1.NoAnswer)
            ):
                raise
            return await self._exchange_once(method, path, headers, json_body, signer)

    async def _exchange_once(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None, signer: Signer | None
    ) -> SdrsAnswer:
        if self._pool is not None:
            return await self._exchange_http1(method, path, headers, json_body, signer)
        assert self._session is not None, "SdrsClient.start() was not awaited"
        url = URL(self.base_url + path, encoded=True)  # encoded=True: the path is built from validated ids
        data = None
        outgoing: Mapping[str, str] = headers
        if json_body is not None:
            data = json.dumps(json_body).encode()
            outgoing = {**headers, "Content-Type": "application/json"}
        if signer is not None:
            signed = CIMultiDict(outgoing)
            resign(signed, signer[0], method, url, payload_hash_of_body(signed, data or b""), signer[1])
            outgoing = signed
        try:
            async with self._session.request(
                method, url, data=data, headers=outgoing, allow_redirects=False,
            ) as response:
                body = await read_capped(response, self._max_answer_bytes)
                return SdrsAnswer(response.status, body, CIMultiDict(response.headers))
        except AnswerTooLarge as err:
            raise SdrsAnswerTooLarge(f"{err} ({method} {path})") from None
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as err:
            # Raised before a byte was written (connect, or waiting for a pooled connection).
            raise SdrsNotSent(f"no connection to SDRS: {describe_peer_error(err)}") from err
        except TimeoutError as err:
            raise SdrsTimeout(f"no answer from SDRS within the timeout ({method} {path})") from err
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
            raise SdrsUnreachable(describe_peer_error(err)) from err
        except aiohttp.ClientResponseError as err:  # malformed HTTP from SDRS; its text quotes the bytes
            raise SdrsUnreachable(f"malformed answer ({describe_peer_error(err)})") from err

    async def _exchange_http1(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None, signer: Signer | None
    ) -> SdrsAnswer:
        assert self._pool is not None
        data = None if json_body is None else json.dumps(json_body).encode()
        fields: list[tuple[str, str]] = [*self._fixed_headers, *headers.items()]
        if data is not None:
            fields.append(("Content-Type", "application/json"))
        if signer is not None:
            signed = CIMultiDict(fields)
            resign(signed, signer[0], method, URL(self.base_url + path, encoded=True),
                   payload_hash_of_body(signed, data or b""), signer[1])
            fields = list(signed.items())
        try:
            answer = await self._pool.request(method, path, fields, data)
        except http1.NotSent as err:
            raise SdrsNotSent(str(err)) from err
        except http1.AnswerTimeout as err:
            raise SdrsTimeout(f"no answer from SDRS within the timeout ({method} {path})") from err
        except http1.AnswerTooLarge as err:
            raise SdrsAnswerTooLarge(f"{err} ({method} {path})") from None
        except http1.MalformedAnswer as err:
            raise SdrsUnreachable(str(err)) from err
        except http1.NoAnswer as err:
            raise SdrsUnreachable(str(err)) from err
        return SdrsAnswer(answer.status, answer.body, CIMultiDict(answer.headers))

