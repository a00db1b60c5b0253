"""Streaming passthrough to the legacy EVS endpoint for every call the shim does not translate.

The request goes out as the client sent it: method, raw path and query (percent-encoding untouched),
body bytes and end-to-end headers, plus X-Forwarded-For / X-Forwarded-Proto. The answer comes back
as the legacy endpoint sent it: status, reason, every header value (repeats kept) and the body bytes
(no decompression, no redirect following, no cookie jar), streamed in both directions.

Failures before the answer has started become legacy errors (501 not configured, 502 malformed
answer, 503 unreachable, 504 too slow). Once the answer is streaming, a failure can only cut the
client's connection; the client then sees a short body, never a well-formed but wrong one.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import HttpVersion11, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from shim.config import Timeouts
from shim.context import RELAY_OBSERVER, REQUEST_ID, REQUEST_ID_HEADERS, RelayObserver
from shim.translate.legacy import LegacyError
from shim.translate.signing import EMPTY_PAYLOAD_HASH
from shim.upstreams.bodies import AnswerTooLarge, read_capped
from shim.upstreams.headers import forwarded_request_headers, without_hop_by_hop
from shim.upstreams.peer_errors import describe_peer_error
from shim.upstreams.request_body import BODY_STALLED, read_body_prefix, stalled_error, stream_body
from shim.upstreams.resign import VERIFIED, resign

log = logging.getLogger("shim.passthrough")

# aiohttp would otherwise add headers the client never sent (`Accept: */*`, its own User-Agent and
# Accept-Encoding, `Content-Type: application/octet-stream` for a streamed body): skip them all.
_SKIP_AUTO_HEADERS = frozenset({hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE})
_NO_BODY_STATUSES = frozenset({204, 304})
_RETRY_AFTER_SECONDS = 5
_POOL_RETRY_AFTER_SECONDS = 1


class LegacyObserver(Protocol):
    """Told about the pool and about each exchange with the legacy endpoint (for metrics); must not
    raise or block."""

    def pool_changed(self, in_use: int, refused: bool) -> None: ...

    def exchange_done(self, status: int | None, failure: str | None) -> None:
        """`status` of an answer, or the `failure` kind: timeout, unreachable, malformed, too_large."""


@dataclass(frozen=True)
class BodyLimits:
    """How the client's request body is read: bodies up to `buffer_bytes` whole, before a pooled
    connection is taken; a pause over `idle_seconds` ends the request (408)."""

    buffer_bytes: int = 65536
    idle_seconds: float = 30.0


class LegacyPassthrough:
    """One pooled client session toward the legacy EVS endpoint, for the app's lifetime.

    The pool is never waited for: a request that finds all `pool_connections` in use gets a legacy
    503 with Retry-After at once (instead of a 504 after the connect timeout), and a request body is
    read before a connection is taken when it is small, so a few slow clients cannot hold the pool.
    """

    def __init__(
        self, base_url: str | None, timeouts: Timeouts, pool_connections: int, preserve_host: bool = False,
        *, tls: ssl.SSLContext | None = None, trust_env: bool = False,
        max_answer_bytes: int = 4 * 1048576, body_limits: BodyLimits | None = None,
        observer: LegacyObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.preserve_host = preserve_host
        self._tls = tls  # None: aiohttp's default verification
        self._trust_env = trust_env
        self._max_answer_bytes = max_answer_bytes  # what get_json reads whole; relayed answers stream
        self._body_limits = body_limits or BodyLimits()
        self._timeout = aiohttp.ClientTimeout(
            total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read
        )
        self._pool_connections = pool_connections
        self._in_use = 0
        self._observer = observer
        self._session: aiohttp.ClientSession | None = None

    def _take_connection(self) -> None:
        """Count one of the pool's connections as in use, or a legacy 503 at once when none is free.
        (Not a contextmanager: LegacyError is frozen and contextlib rewrites a raised error's traceback.)"""
        if self._in_use >= self._pool_connections:
            if self._observer is not None:
                self._observer.pool_changed(self._in_use, True)
            raise LegacyError(503, f"All {self._pool_connections} connections to the legacy EVS endpoint are "
                                   "in use (limits.pool_connections); try again shortly.",
                              retry_after=_POOL_RETRY_AFTER_SECONDS)
        self._in_use += 1
        if self._observer is not None:
            self._observer.pool_changed(self._in_use, False)

    def _give_back_connection(self) -> None:
        self._in_use -= 1
        if self._observer is not None:
            self._observer.pool_changed(self._in_use, False)

    async def start(self) -> None:
        if self.base_url is None or self._session is not None:
            return  # nothing to connect to: forward() answers 501
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_connections, ssl=self._tls or True),
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep one client's cookies for another
            auto_decompress=False,  # gzip stays gzip: the body is relayed byte for byte
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            trust_env=self._trust_env,  # upstreams.trust_env: HTTPS_PROXY / NO_PROXY, else never a proxy
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target_url(self, request: web.BaseRequest) -> URL:
        """`base_url` + the raw path and query the client sent.

        Only `base_url` chooses where the request goes: neither the Host header nor an absolute-form
        request target (`GET http://elsewhere/...`) can redirect it. The path and query are taken
        raw (still percent-encoded) and the URL is built with `encoded=True`, so bytes such as
        `%2F` reach the legacy endpoint exactly as the client sent them.
        """
        assert self.base_url is not None
        rel = request.rel_url
        target = self.base_url + rel.raw_path
        if rel.raw_query_string:
            target += "?" + rel.raw_query_string
        return URL(target, encoded=True)

    def upstream_headers(self, request: web.BaseRequest, body: bytes | None) -> CIMultiDict[str]:
        """The client's end-to-end headers, X-Forwarded-*, and the request id when it sent none.

        `Host` becomes the legacy endpoint's own (a sidecar's clients address it as 127.0.0.1:8080,
        a name the real endpoint's gateway does not route); the client's Host goes on in
        `X-Forwarded-Host`. With `preserve_host`, for clients that reach the shim under the legacy
        endpoint's own name (a DNS or hosts override), the client's Host is kept, which also keeps
        AK/SK signatures valid (they cover Host). Either way the TCP connection, TLS SNI and
        certificate check use `base_url`'s host.
        """
        headers = forwarded_request_headers(request)
        for name, value in headers.items():
            if not _is_utf8(value):
                # aiohttp decoded the bytes with surrogateescape and would drop them on the way
                # out: refuse rather than relay an altered value.
                raise LegacyError(400, f"The {name[:64]} header holds bytes that are not UTF-8 text; "
                                       "it cannot be relayed unchanged.")
        if not self.preserve_host and self.base_url is not None:
            client_host = headers.popall(hdrs.HOST, None)
            if client_host:
                headers[hdrs.X_FORWARDED_HOST] = client_host[0]
            headers[hdrs.HOST] = URL(self.base_url).raw_authority
        request_id = request.get(REQUEST_ID)
        if request_id:
            for name in REQUEST_ID_HEADERS:
                if name not in headers:
                    headers[name] = request_id
        if body is not None:
            # The handler already read the body: its real length replaces whatever framing the
            # client used (aiohttp sets Content-Length from the bytes).
            headers.popall(hdrs.CONTENT_LENGTH, None)
        return headers

    async def forward(self, request: web.Request, body: bytes | None = None) -> web.StreamResponse:
        """Relay `request` to the legacy endpoint and stream its answer back.

        `body` is the request body when a handler has already read it; otherwise the body (if any)
        is streamed from the client as it arrives.
        """
        if self.base_url is None or self._session is None:
            raise LegacyError(
                501,
                "This call is not translated by the EVS-to-SDRS shim and no legacy EVS endpoint is "
                "configured to pass it to.",
            )
        verified = request.get(VERIFIED)
        if body is None and verified is not None:
            body = verified.body  # read to check its signed hash: it goes on as checked
        observer = request.get(RELAY_OBSERVER)  # shadow mode: sees what is relayed, changes nothing
        data: bytes | AsyncIterator[bytes] | None = body
        if body is None and request.body_exists:
            # A small body is read first (the pool is not held while a slow client sends it); a
            # larger one streams: Content-Length, when the client sent one, stays in the headers and
            # aiohttp sends the stream with that length; without it aiohttp sends it chunked.
            limits = self._body_limits
            prefix, complete = await read_body_prefix(request, limits.buffer_bytes, limits.idle_seconds)
            if complete:
                body = data = prefix
            else:
                data = _observed(stream_body(request, prefix, limits.idle_seconds), observer)
        if body is not None and observer is not None:
            observer.request_chunk(body)
        # No body: a GET must not gain `Transfer-Encoding: chunked`. (aiohttp adds `Content-Length: 0`
        # to a body-less DELETE/POST/PUT/PATCH; harmless.)
        url = self.target_url(request)
        headers = self.upstream_headers(request, body)
        if verified is not None:
            # Signed again for the Host this request goes out with; the body hash is what the client
            # signed (a hash checked above, UNSIGNED-PAYLOAD for a streamed body, or the empty body's).
            resign(headers, verified.key, request.method, url, verified.payload_hash, verified.signed_headers)
        self._take_connection()
        try:
            upstream = await self._request(request, url, data, headers)
            try:
                return await self._relay(request, upstream, observer)
            finally:
                # After a complete body the connection goes back to the pool; after a cut-off one
                # `release` finds the protocol unusable and closes it.
                upstream.release()
        finally:
            self._give_back_connection()

    async def _request(
        self, request: web.Request, url: URL, data: bytes | AsyncIterator[bytes] | None, headers: CIMultiDict[str]
    ) -> aiohttp.ClientResponse:
        """The legacy endpoint's answer (head) to `request`, or the legacy error for its failure."""
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False,
            )
        except Exception as err:
            if request.get(BODY_STALLED):  # the client stopped sending: the upload (and its connection) is cut
                raise stalled_error(self._body_limits.idle_seconds) from None
            raise self._failure(request, err) from None
        self._exchange_done(upstream.status, None)
        return upstream

    def _exchange_done(self, status: int | None, failure: str | None) -> None:
        if self._observer is not None:
            self._observer.exchange_done(status, failure)

    def _failure(self, request: web.Request, err: Exception) -> Exception:
        """The legacy error for a failed exchange (logged once, counted); anything unexpected as it is."""
        if isinstance(err, TimeoutError):  # also aiohttp's ConnectionTimeoutError/SocketTimeoutError
            _warn(request, "timed out before answering", err)
            self._exchange_done(None, "timeout")
            return LegacyError(504, "The legacy EVS endpoint did not answer in time.")
        if isinstance(err, aiohttp.ClientResponseError):  # unparseable status line or headers
            _warn(request, "sent a malformed answer", err)
            self._exchange_done(None, "malformed")
            return LegacyError(502, "The legacy EVS endpoint sent a malformed answer.")
        if isinstance(err, aiohttp.ClientConnectionError):  # refused, reset, closed before answering
            _warn(request, "is unreachable", err)
            self._exchange_done(None, "unreachable")
            return LegacyError(503, "The legacy EVS endpoint is unreachable; try again later.",
                               retry_after=_RETRY_AFTER_SECONDS)
        if isinstance(err, aiohttp.ClientError):
            _warn(request, "failed", err)
            self._exchange_done(None, "unreachable")
            return LegacyError(502, "The legacy EVS endpoint failed to answer.")
        return err

    async def get_json(self, request: web.Request, query: dict[str, str], path: str | None = None) -> tuple[int, Any]:
        """GET the request's path (or `path`) with `query` from the legacy endpoint, for the shim to read
        itself (a merged list; shadow mode's reads): the client's end-to-end headers, an uncompressed
        JSON answer."""
        if self.base_url is None or self._session is None:
            raise LegacyError(501, "No legacy EVS endpoint is configured.")
        headers = self.upstream_headers(request, None)
        for name in (hdrs.CONTENT_LENGTH, hdrs.CONTENT_TYPE, hdrs.ACCEPT_ENCODING):
            headers.popall(name, None)
        headers[hdrs.ACCEPT] = "application/json"
        url = URL(self.base_url + (path or request.rel_url.raw_path), encoded=True).with_query(query)
        verified = request.get(VERIFIED)
        if verified is not None:
            resign(headers, verified.key, hdrs.METH_GET, url, EMPTY_PAYLOAD_HASH, verified.signed_headers)
        try:
            self._take_connection()
            try:
                async with self._session.get(url, headers=headers, allow_redirects=False) as upstream:
                    body = await read_capped(upstream, self._max_answer_bytes)
                    status = upstream.status
            finally:
                self._give_back_connection()
        except AnswerTooLarge as err:
            _warn(request, "sent a list larger than the shim reads (limits.upstream_body_bytes)", err)
            self._exchange_done(None, "too_large")
            raise LegacyError(502, f"The legacy EVS endpoint's list is too large for the migration proxy "
                                   f"({err}).") from None
        except TimeoutError as err:
            _warn(request, "timed out before answering", err)
            self._exchange_done(None, "timeout")
            raise LegacyError(504, "The legacy EVS endpoint did not answer in time.") from None
        except aiohttp.ClientError as err:
            _warn(request, "is unreachable", err)
            self._exchange_done(None, "unreachable")
            raise LegacyError(503, "The legacy EVS endpoint is unreachable; try again later.",
                              retry_after=_RETRY_AFTER_SECONDS) from None
        self._exchange_done(status, None)
        observer = request.get(RELAY_OBSERVER)
        if observer is not None:
            observer.answer_chunk(body)
            observer.answer_complete(status)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, observer: RelayObserver | None = None,
    ) -> web.StreamResponse:
        # Content-Length is copied with the other headers, so a fixed-length answer stays
        # fixed-length; without one (the legacy side used chunked) aiohttp streams it chunked.
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=without_hop_by_hop(upstream.headers),
        )
        if request.version < HttpVersion11 and _ends_with_the_connection(request, upstream):
            # HTTP/1.0 has no chunked framing: the body ends where the connection does. (aiohttp
            # would send it unframed yet keep the connection for a keep-alive client.)
            response.force_close()
        try:
            await response.prepare(request)
        except ConnectionError:
            return response  # the client went away; aiohttp notices on write_eof and moves on
        if request.method != hdrs.METH_HEAD and upstream.status not in _NO_BODY_STATUSES:
            try:
                async for chunk in upstream.content.iter_any():
                    try:
                        await response.write(chunk)
                    except ConnectionError:
                        return response  # the client went away: stop reading from upstream
                    if observer is not None:
                        observer.answer_chunk(chunk)
            except (TimeoutError, aiohttp.ClientError) as err:
                _warn(request, "failed while its answer was streaming; cutting the client connection", err)
                _abort(request, response)
                return response
        try:
            await response.write_eof()
        except ConnectionError:
            return response  # the client went away right at the end: nothing left to tell it
        if observer is not None:
            observer.answer_complete(upstream.status)
        return response


def _ends_with_the_connection(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    """An answer with a body but no length (the legacy side sent it chunked)."""
    has_body = request.method != hdrs.METH_HEAD and upstream.status not in _NO_BODY_STATUSES
    return has_body and upstream.content_length is None


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _observed(chunks: AsyncIterator[bytes], observer: RelayObserver | None) -> AsyncIterator[bytes]:
    """The streamed body as it goes, each chunk shown to the shadow observer first."""
    async for chunk in chunks:
        if observer is not None:
            observer.request_chunk(chunk)
        yield chunk


def _abort(request: web.Request, response: web.StreamResponse) -> None:
    """Cut the client connection so a short body is seen as short (no final chunk, no keep-alive).

    The handler then returns normally: aiohttp's own write_eof hits the closed transport, which it
    treats as a client disconnect (debug log only), so no traceback is written.
    """
    response.force_close()
    transport = request.transport
    if transport is not None:
        transport.close()


def _warn(request: web.BaseRequest, what: str, err: BaseException) -> None:
    """One warning line: method, path without query, error kind. Never header values."""
    log.warning(
        "legacy EVS endpoint %s: %s %s (%s)",
        what, request.method, request.path, describe_peer_error(err),
        extra={"request_id": request.get(REQUEST_ID), "error": type(err).__name__},
    )
