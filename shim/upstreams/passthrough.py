"""Streaming passthrough to the legacy EVS endpoint for every call the shim does not translate.

The request goes out as the client sent it: method, raw path and query (percent-encoding untouched),
body bytes and end-to-end headers, plus X-Forwarded-For / X-Forwarded-Proto. The answer comes back
as the legacy endpoint sent it: status, reason, every header value (repeats kept) and the body bytes
(no decompression, no redirect following, no cookie jar), streamed. The request body is read whole
before a pooled connection is taken (memory, or a temporary file for a large one: request_body.py),
so a slow uploader never holds one of the pool's connections.

The exchange runs on the lean HTTP/1.1 client (shim/upstreams/http1.py), the per-request work kept
to one pass over the client's headers and no URL object; aiohttp's client only through an egress
proxy (shim/upstreams/legacy_via_proxy.py). A request with an idempotent method and a body that can
be sent again goes once more, on a new connection, when the connection closed before any answer
byte (a kept-alive connection the legacy endpoint had just closed), as aiohttp's client did.

Failures before the answer has started become legacy errors (501 not configured, 502 malformed
answer, 503 unreachable, 504 too slow). Once the answer is streaming, a failure can only cut the
client's connection; the client then sees a short body, never a well-formed but wrong one.
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import HttpVersion11, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from shim.config import Timeouts
from shim.context import RELAY_OBSERVER, REQUEST_ID, REQUEST_ID_HEADERS, RelayObserver
from shim.translate.legacy import LegacyError
from shim.translate.signing import EMPTY_PAYLOAD_HASH
from shim.upstreams import http1
from shim.upstreams.egress import direct_pool, needs_proxy
from shim.upstreams.headers import NotUtf8Header, outgoing_request_fields, relayed_answer_fields
from shim.upstreams.http1 import Http1Exchange, Http1Pool
from shim.upstreams.legacy_via_proxy import ProxiedExchange, ProxiedLegacyClient
from shim.upstreams.peer_errors import describe_peer_error
from shim.upstreams.request_body import (
    BODY_STALLED,
    BodyPace,
    BodySpool,
    SpooledBody,
    read_body_prefix,
    stalled_error,
)
from shim.upstreams.resign import VERIFIED, VerifiedSignature, resign

log = logging.getLogger("shim.passthrough")

_NO_BODY_STATUSES = frozenset({204, 304})
# Methods aiohttp's client sends without a body framing of their own; the others get
# `Content-Length: 0` when the client sent no body (some servers want a length on a POST).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Sent once more, on a new connection, when the legacy endpoint closed the connection before any
# answer byte (RFC 9112 9.3.1; what aiohttp's client did here): methods RFC 9110 calls idempotent,
# with a body that can be sent again (not one streaming from the client).
_REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_RETRY_AFTER_SECONDS = 5
_POOL_RETRY_AFTER_SECONDS = 1

UpstreamAnswer = Http1Exchange | ProxiedExchange


class LegacyObserver(Protocol):
    """Told about the pool and about each exchange with the legacy endpoint (for metrics); must not
    raise or block."""

    def pool_refused(self) -> None:
        """Every pooled connection was in use: a legacy 503 (the count in use is read from `in_use`)."""

    def exchange_done(self, status: int | None, failure: str | None) -> None:
        """`status` of an answer, or the `failure` kind: timeout, unreachable, malformed, too_large."""


@dataclass(frozen=True)
class BodyLimits:
    """How the client's request body is read, always whole before a pooled connection is taken: up to
    `buffer_bytes` in memory, beyond that into a temporary file in `spool_directory`, all such files
    within `spool_bytes`; a pause over `idle_seconds`, or an average below `min_rate` bytes a second
    once `idle_seconds` have passed, ends the request (408)."""

    buffer_bytes: int = 65536
    idle_seconds: float = 30.0
    spool_bytes: int = 8 * 1048576
    min_rate: int = 500
    spool_directory: str | None = None


class LegacyPassthrough:
    """Pooled connections toward the legacy EVS endpoint, for the app's lifetime: the lean HTTP/1.1
    client (shim/upstreams/http1.py), or aiohttp's through an egress proxy (legacy_via_proxy.py).

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
        self._tls = tls  # None: the system's CAs
        self._trust_env = trust_env
        self._max_answer_bytes = max_answer_bytes  # what get_json reads whole; relayed answers stream
        self._body_limits = body_limits = body_limits or BodyLimits()
        self.spool = BodySpool(body_limits.spool_directory, body_limits.spool_bytes)
        self._timeouts = timeouts
        self._pool_connections = pool_connections
        self._in_use = 0
        self._observer = observer
        self._pool: Http1Pool | None = None
        self._proxied: ProxiedLegacyClient | None = None
        # The legacy endpoint's own Host, worked out once.
        self._authority = URL(self.base_url).raw_authority if self.base_url else ""

    def _take_connection(self) -> None:
        """Count one of the pool's connections as in use, or a legacy 503 at once when none is free.
        (Not a contextmanager: LegacyError is frozen and contextlib rewrites a raised error's traceback.)"""
        if self._in_use >= self._pool_connections:
            if self._observer is not None:
                self._observer.pool_refused()
            raise LegacyError(503, f"All {self._pool_connections} connections to the legacy EVS endpoint are "
                                   "in use (limits.pool_connections); try again shortly.",
                              retry_after=_POOL_RETRY_AFTER_SECONDS)
        self._in_use += 1

    def _give_back_connection(self) -> None:
        self._in_use -= 1

    @property
    def in_use(self) -> int:
        """Pooled connections in use now (a gauge reads it at scrape time: nothing per request)."""
        return self._in_use

    @property
    def started(self) -> bool:
        return self._pool is not None or self._proxied is not None

    async def start(self) -> None:
        if self.base_url is None or self.started:
            return  # nothing to connect to: forward() answers 501
        origin = URL(self.base_url)
        if needs_proxy(origin, self._trust_env):  # upstreams.trust_env: HTTPS_PROXY / NO_PROXY
            self._proxied = ProxiedLegacyClient(self._timeouts, self._pool_connections, tls=self._tls,
                                                max_answer_bytes=self._max_answer_bytes)
            await self._proxied.start()
            return
        # The pool's own limit is never reached: _take_connection refuses first.
        self._pool = direct_pool(origin, tls=self._tls, limit=self._pool_connections, timeouts=self._timeouts,
                                 max_body=self._max_answer_bytes, name="the legacy EVS endpoint")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._proxied is not None:
            await self._proxied.close()
            self._proxied = None

    def upstream_headers(self, request: web.BaseRequest, body: bytes | None) -> list[tuple[str, str]]:
        """The client's end-to-end headers, X-Forwarded-*, and the request id when it sent none.

        `Host` becomes the legacy endpoint's own (a sidecar's clients address it as 127.0.0.1:8080,
        a name the real endpoint's gateway does not route); the client's Host goes on in
        `X-Forwarded-Host`. With `preserve_host`, for clients that reach the shim under the legacy
        endpoint's own name (a DNS or hosts override), the client's Host is kept, which also keeps
        AK/SK signatures valid (they cover Host). Either way the TCP connection, TLS SNI and
        certificate check use `base_url`'s host. With `body` (the handler already read it), its real
        length replaces whatever framing the client used.
        """
        return self._outgoing(request, body is not None)[0]

    def _outgoing(self, request: web.BaseRequest, body_read: bool) -> tuple[list[tuple[str, str]], bool]:
        request_id = request.get(REQUEST_ID)
        try:
            return outgoing_request_fields(
                request.headers.items(), peer=request.remote, scheme=request.scheme, host=self._authority,
                keep_client_host=self.preserve_host,
                request_ids=tuple((name, request_id) for name in REQUEST_ID_HEADERS) if request_id else (),
                drop_length=body_read,
            )
        except NotUtf8Header as err:
            # aiohttp decoded the bytes with surrogateescape and would drop them on the way out:
            # refuse rather than relay an altered value.
            raise LegacyError(400, f"The {err.name[:64]} header holds bytes that are not UTF-8 text; "
                                   "it cannot be relayed unchanged.") from None

    async def forward(self, request: web.Request, body: bytes | None = None) -> web.StreamResponse:
        """Relay `request` to the legacy endpoint and stream its answer back.

        `body` is the request body when a handler has already read it; otherwise the body (if any)
        is read whole first (memory or a temporary file, see `BodyLimits`), then a pooled connection
        is taken.
        """
        if self.base_url is None or not self.started:
            raise LegacyError(
                501,
                "This call is not translated by the EVS-to-SDRS shim and no legacy EVS endpoint is "
                "configured to pass it to.",
            )
        verified = request.get(VERIFIED)
        if body is None and verified is not None:
            body = verified.body  # read to check its signed hash: it goes on as checked
        observer = request.get(RELAY_OBSERVER)  # shadow mode: sees what is relayed, changes nothing
        data: http1.RequestBody = body
        spooled: SpooledBody | None = None
        if body is None and request.body_exists:
            # The whole body is read before a pooled connection is taken, so a slow client holds only
            # its own connection: a small one in memory, a larger one into a temporary file; either
            # goes with its real length.
            limits = self._body_limits
            # Paced (idle time and minimum rate) from here; a body that has all arrived with its head,
            # the usual case, needs no clock.
            pace = (None if request.content.is_eof() and (request.content_length or 0) <= limits.buffer_bytes
                    else BodyPace(limits.idle_seconds, limits.min_rate))
            prefix, complete = await read_body_prefix(request, limits.buffer_bytes, limits.idle_seconds, pace)
            if complete:
                body = data = prefix
            else:
                pace = pace or BodyPace(limits.idle_seconds, limits.min_rate)
                data = spooled = await self.spool.read(request, prefix, pace, observer)
        try:
            if body is not None and observer is not None:
                observer.request_chunk(body)
            target = request_target(request)
            headers, has_length = self._outgoing(request, body is not None or spooled is not None)
            if spooled is not None:
                headers.append(("Content-Length", str(spooled.size)))
                has_length = True
            if data is None and not has_length and request.method not in _BODYLESS_METHODS:
                data = b""  # `Content-Length: 0`, as aiohttp's client sent it; a GET gains no framing
            if verified is not None:
                # Signed again for the Host this request goes out with; the body hash is what the client
                # signed (a hash checked above, UNSIGNED-PAYLOAD for a body read unchecked, or the empty body's).
                headers = self._resigned(headers, verified, request.method, target, verified.payload_hash)
            self._take_connection()
            try:
                upstream = await self._open(request, target, headers, data)
                try:
                    return await self._relay(request, upstream, observer)
                finally:
                    # After a complete answer the connection goes back to the pool; after a cut-off one
                    # it is closed.
                    upstream.release()
            finally:
                self._give_back_connection()
        finally:
            if spooled is not None:
                spooled.close()  # its temporary file, and its room in the spool

    def _resigned(self, headers: list[tuple[str, str]], verified: VerifiedSignature, method: str, target: str,
                  payload_hash: str) -> list[tuple[str, str]]:
        assert self.base_url is not None
        signed = CIMultiDict(headers)
        resign(signed, verified.key, method, URL(self.base_url + target, encoded=True), payload_hash,
               verified.signed_headers)
        return list(signed.items())

    async def _open(
        self, request: web.Request, target: str, headers: list[tuple[str, str]], data: http1.RequestBody,
    ) -> UpstreamAnswer:
        """The legacy endpoint's answer (head) to `request`, or the legacy error for its failure."""
        method = request.method
        try:
            if self._pool is None:
                assert self._proxied is not None and self.base_url is not None
                upstream: UpstreamAnswer = await self._proxied.exchange(method, self.base_url + target, headers, data)
            else:
                try:
                    upstream = await self._pool.exchange(method, target, headers, data)
                except http1.NoAnswer as err:
                    replayable = data is None or isinstance(data, bytes | SpooledBody)
                    if err.answered or method not in _REPEATABLE_METHODS or not replayable:
                        raise
                    upstream = await self._pool.exchange(method, target, headers, data, fresh=True)
        except (http1.Http1Error, TimeoutError) as err:
            if request.get(BODY_STALLED):  # the client stopped sending: the upload (and its connection) is cut
                raise stalled_error(self._body_limits.idle_seconds) from None
            raise self._failure(request, err) from None
        self._exchange_done(upstream.status, None)
        return upstream

    def _exchange_done(self, status: int | None, failure: str | None) -> None:
        if self._observer is not None:
            self._observer.exchange_done(status, failure)

    def _failure(self, request: web.Request, err: Exception) -> LegacyError:
        """The legacy error for a failed exchange (logged once, counted)."""
        if isinstance(err, http1.ConnectTimeout | http1.AnswerTimeout | TimeoutError):
            _warn(request, "timed out before answering", err)
            self._exchange_done(None, "timeout")
            return LegacyError(504, "The legacy EVS endpoint did not answer in time.")
        if isinstance(err, http1.MalformedAnswer):  # unparseable status line or headers
            _warn(request, "sent a malformed answer", err)
            self._exchange_done(None, "malformed")
            return LegacyError(502, "The legacy EVS endpoint sent a malformed answer.")
        if isinstance(err, http1.NotSent | http1.NoAnswer | http1.UploadFailed):  # refused, reset, closed
            _warn(request, "is unreachable", err)
            self._exchange_done(None, "unreachable")
            return LegacyError(503, "The legacy EVS endpoint is unreachable; try again later.",
                               retry_after=_RETRY_AFTER_SECONDS)
        _warn(request, "failed", err)
        self._exchange_done(None, "unreachable")
        return LegacyError(502, "The legacy EVS endpoint failed to answer.")

    async def get_json(self, request: web.Request, query: dict[str, str], path: str | None = None) -> tuple[int, Any]:
        """GET the request's path (or `path`) with `query` from the legacy endpoint, for the shim to read
        itself (a merged list; shadow mode's reads): the client's end-to-end headers, an uncompressed
        JSON answer."""
        if self.base_url is None or not self.started:
            raise LegacyError(501, "No legacy EVS endpoint is configured.")
        fields = CIMultiDict(self._outgoing(request, False)[0])
        for name in (hdrs.CONTENT_LENGTH, hdrs.CONTENT_TYPE, hdrs.ACCEPT_ENCODING):
            fields.popall(name, None)
        fields[hdrs.ACCEPT] = "application/json"
        url = URL(self.base_url + (path or request.rel_url.raw_path), encoded=True).with_query(query)
        verified = request.get(VERIFIED)
        if verified is not None:
            resign(fields, verified.key, hdrs.METH_GET, url, EMPTY_PAYLOAD_HASH, verified.signed_headers)
        headers = list(fields.items())
        try:
            self._take_connection()
            try:
                answer = await self._fetch(url, headers)
            finally:
                self._give_back_connection()
        except http1.AnswerTooLarge as err:
            _warn(request, "sent a list larger than the shim reads (limits.upstream_body_bytes)", err)
            self._exchange_done(None, "too_large")
            raise LegacyError(502, f"The legacy EVS endpoint's list is too large for the migration proxy "
                                   f"({err}).") from None
        except (http1.ConnectTimeout, http1.AnswerTimeout) as err:
            _warn(request, "timed out before answering", err)
            self._exchange_done(None, "timeout")
            raise LegacyError(504, "The legacy EVS endpoint did not answer in time.") from None
        except http1.Http1Error as err:
            _warn(request, "is unreachable", err)
            self._exchange_done(None, "unreachable")
            raise LegacyError(503, "The legacy EVS endpoint is unreachable; try again later.",
                              retry_after=_RETRY_AFTER_SECONDS) from None
        status, body = answer.status, answer.body
        self._exchange_done(status, None)
        observer = request.get(RELAY_OBSERVER)
        if observer is not None:
            observer.answer_chunk(body)
            observer.answer_complete(status)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    async def _fetch(self, url: URL, headers: list[tuple[str, str]]) -> http1.Http1Answer:
        """One GET read whole (capped, not decompressed); once more on a new connection when a
        kept-alive one closed before any answer byte."""
        if self._pool is None:
            assert self._proxied is not None
            return await self._proxied.request(hdrs.METH_GET, str(url), headers)
        target = url.raw_path_qs
        try:
            return await self._pool.request(hdrs.METH_GET, target, headers, None, decompress=False)
        except http1.NoAnswer as err:
            if err.answered:
                raise
            return await self._pool.request(hdrs.METH_GET, target, headers, None, decompress=False)

    async def _relay(
        self, request: web.Request, upstream: UpstreamAnswer, observer: RelayObserver | None = None,
    ) -> web.StreamResponse:
        # Content-Length is copied with the other headers, so a fixed-length answer stays
        # fixed-length; without one (the legacy side used chunked) aiohttp streams it chunked.
        response = _RelayedAnswer(
            status=upstream.status,
            reason=upstream.reason.decode("utf-8", "surrogateescape"),
            headers=relayed_answer_fields(upstream.raw_headers),
        )
        has_body = request.method != hdrs.METH_HEAD and upstream.status not in _NO_BODY_STATUSES
        if request.version < HttpVersion11 and has_body and upstream.content_length is None:
            # HTTP/1.0 has no chunked framing: the body ends where the connection does. (aiohttp
            # would send it unframed yet keep the connection for a keep-alive client.)
            response.force_close()
        try:
            await response.prepare(request)
        except ConnectionError:
            return response  # the client went away; aiohttp notices on write_eof and moves on
        if has_body:
            try:
                while chunk := await upstream.read():
                    try:
                        await response.write(chunk)
                    except ConnectionError:
                        return response  # the client went away: stop reading from upstream
                    if observer is not None:
                        observer.answer_chunk(chunk)
            except http1.Http1Error as err:
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


class _RelayedAnswer(web.StreamResponse):
    """A relayed answer whose head leaves with its first body bytes, in one write. (A StreamResponse
    sends its head by itself at prepare(): a second system call and TCP segment for every answer. A
    later aiohttp without this class attribute only brings that back.)"""

    _send_headers_immediately = False


def request_target(request: web.BaseRequest) -> str:
    """The raw path and query the client sent (still percent-encoded, so bytes such as `%2F` reach the
    legacy endpoint exactly as sent).

    Only `base_url` chooses where the request goes: neither the Host header nor an absolute-form
    request target (`GET http://elsewhere/...`) can redirect it; a fragment and an empty query are
    dropped. The target as received serves when it is plain origin-form (no URL object is built).
    """
    raw = request.raw_path
    if raw.startswith("/") and "#" not in raw and not raw.endswith("?"):
        return raw
    rel = request.rel_url
    return rel.raw_path + "?" + rel.raw_query_string if rel.raw_query_string else rel.raw_path


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
