"""Thin HTTP edge toward SDRS v1: one pooled session, explicit timeouts, no interpretation.

Transport failures become `SdrsUnreachable` / `SdrsTimeout` / `SdrsAnswerTooLarge`; every HTTP answer,
error or not, comes back as an `SdrsAnswer` for the pure translation code to judge. Action POSTs are sent exactly once:
nothing here retries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from shim import __version__
from shim.config import Timeouts
from shim.translate.sdrs_models import (
    SdrsAnswer,
    SdrsAnswerTooLarge,
    SdrsTimeout,
    SdrsTransportError,
    SdrsUnreachable,
)
from shim.upstreams.bodies import AnswerTooLarge, read_capped
from shim.upstreams.peer_errors import describe_peer_error

USER_AGENT = f"evs-sdrs-shim/{__version__}"


# Told about every exchange once it ends: (monotonic start time, the answer or None, the transport
# error or None). For metrics; it must not raise or block.
SdrsObserver = Callable[[float, "SdrsAnswer | None", "SdrsTransportError | None"], None]


class SdrsClient:
    def __init__(
        self, base_url: str, timeouts: Timeouts, pool_connections: int, observer: SdrsObserver | None = None,
        max_answer_bytes: int = 4 * 1048576,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._observer = observer
        self._max_answer_bytes = max_answer_bytes  # SDRS answers are small JSON documents
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read
        )
        self._pool_connections = pool_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_connections),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # never share one client's cookies with another
            auto_decompress=True,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None = None
    ) -> SdrsAnswer:
        """One HTTP exchange with SDRS; `path` is built by the caller from validated ids only."""
        started = time.monotonic()
        try:
            answer = await self._exchange(method, path, headers, json_body)
        except SdrsTransportError as err:
            if self._observer is not None:
                self._observer(started, None, err)
            raise
        if self._observer is not None:
            self._observer(started, answer, None)
        return answer

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], json_body: Any | None
    ) -> SdrsAnswer:
        assert self._session is not None, "SdrsClient.start() was not awaited"
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            async with self._session.request(  # encoded=True: the path is built from validated ids
                method, URL(self.base_url + path, encoded=True), data=data, headers=headers,
                allow_redirects=False,
            ) as response:
                body = await read_capped(response, self._max_answer_bytes)
                return SdrsAnswer(response.status, body, CIMultiDict(response.headers))
        except AnswerTooLarge as err:
            raise SdrsAnswerTooLarge(f"{err} ({method} {path})") from None
        except TimeoutError as err:
            raise SdrsTimeout(f"no answer from SDRS within the timeout ({method} {path})") from err
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
            raise SdrsUnreachable(describe_peer_error(err)) from err
        except aiohttp.ClientResponseError as err:  # malformed HTTP from SDRS; its text quotes the bytes
            raise SdrsUnreachable(f"malformed answer ({describe_peer_error(err)})") from err

