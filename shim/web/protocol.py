"""The shim's HTTP server protocol: aiohttp's, bounded against hostile clients.

aiohttp's server limits each request line and header line, but holds an unfinished request head
for as long as the client keeps the connection (up to `keepalive_timeout`, an hour), lets the head
grow to `max_headers` x `max_field_size` (1 MiB), accepts any number of connections, and answers
what its parser refuses with a plain-text 400 quoting the client's bytes. Here:

- a request head must arrive within `timeouts.request_head` seconds (counted from the connection's
  opening for its first request, from the first byte for the next ones) and within
  `limits.request_head_bytes`: otherwise 408 / 400 and the connection is closed (a connection that
  sent nothing at all is closed without an answer);
- at most `limits.client_connections` connections are open: at the limit the oldest idle keep-alive
  connection is closed to make room, and when none is idle the new connection is closed at once;
- what aiohttp answers itself (a request its parser refuses, a head over a bound) is a legacy JSON
  error with a request id, never an echo of the request.

Built on aiohttp's `RequestHandler`/`Server` (the pinned 3.14 series): the parser is wrapped to count
head bytes, and `handle_error` makes the legacy answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from shim.translate.legacy import LegacyError
from shim.translate.tables import SdrsErrorTable
from shim.web.metrics import ShimMetrics
from shim.web.responses import legacy_error_response, new_request_id

log = logging.getLogger("shim.server")

_NO_MESSAGES: tuple[Any, bool, bytes] = ((), False, b"")


@dataclass(frozen=True)
class ConnectionBounds:
    head_seconds: float = 30.0
    head_bytes: int = 65536
    max_connections: int = 512


class HeadTimeout(BadHttpMessage):
    """The request head did not arrive in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request head did not arrive within {seconds:g} seconds.")
        self.code = 408


class HeadTooLarge(BadHttpMessage):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request head is larger than {limit} bytes.")


class _HeadBoundParser:
    """aiohttp's request parser, counting the bytes of each request head.

    A head is being read from the end of the previous request's body (or the connection's start)
    until the parser emits the next request. The bytes of a head still incomplete after a read count
    against `limit` (so the parser never holds more than `limit` plus one read of them), and a head
    that completes within a read is measured from the parsed request. Past the limit, or once
    `refuse()` was called, `feed_data` raises the error (aiohttp answers it through `handle_error`)
    and then drops whatever else arrives.
    """

    def __init__(self, parser: Any, limit: int, head_started: Callable[[], None],
                 head_complete: Callable[[], None]) -> None:
        self._parser = parser
        self._limit = limit
        self._head_started = head_started
        self._head_complete = head_complete
        self._last_payload: Any = None
        self._refusal: HttpProcessingError | None = None
        self._refused = False
        self.head_bytes = 0

    @property
    def reading_head(self) -> bool:
        return self._last_payload is None or self._last_payload.is_eof()

    def refuse(self, error: HttpProcessingError) -> None:
        self._refusal = error

    def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
        if self._refused:
            return _NO_MESSAGES
        if self._refusal is None:
            was_reading_head = self.reading_head
            messages, upgraded, tail = self._parser.feed_data(data)
            if messages:
                if any(_head_size(message) > self._limit for message, _ in messages):
                    self._refusal = HeadTooLarge(self._limit)  # a whole head in one read, but too big
                else:
                    self._last_payload = messages[-1][1]
                    self.head_bytes = 0  # what followed the head in this read is its body (or the next head)
                    self._head_complete()
                    return messages, upgraded, tail
            elif was_reading_head and data:  # part of a head: held by the parser until it is complete
                if self.head_bytes == 0:
                    self._head_started()
                self.head_bytes += len(data)
                if self.head_bytes > self._limit:
                    self._refusal = HeadTooLarge(self._limit)
            if self._refusal is None:
                return messages, upgraded, tail
        self._refused = True
        raise self._refusal

    def __getattr__(self, name: str) -> Any:  # feed_eof, pause_reading, message_consumed, ...
        return getattr(self._parser, name)


def _head_size(message: Any) -> int:
    """The bytes of a parsed request head: request line and header lines as sent (bar optional spaces)."""
    size = len(message.method) + len(message.path) + len(" HTTP/1.1\r\n\r\n") + 1
    return size + sum(len(name) + len(value) + len(": \r\n") for name, value in message.raw_headers)


class ShimRequestHandler(RequestHandler):
    """One client connection (see the module docstring)."""

    def __init__(self, manager: ShimServer, *, bounds: ConnectionBounds, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._bounds = bounds
        self._shim_server = manager
        self._head_timer: asyncio.TimerHandle | None = None
        self._head = _HeadBoundParser(self._parser, bounds.head_bytes, self._arm_head_timer, self._head_arrived)
        self._parser = self._head  # type: ignore[assignment]

    @property
    def idle(self) -> bool:
        """Waiting for a request of which no byte has arrived (a fresh or kept-alive connection)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages and self._head.head_bytes == 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._shim_server.admit(self):
            self._manager = None  # never registered: connection_lost has nothing to undo
            cast(asyncio.Transport, transport).abort()  # a stream transport (TCP or TLS)
            return
        super().connection_made(transport)
        self._arm_head_timer()  # the first head is due within head_seconds of the opening

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self._loop.call_later(self._bounds.head_seconds, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_arrived(self) -> None:
        self._disarm_head_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close or self._close:
            return
        if self._head.head_bytes == 0 and self.idle:
            # Nothing of a request arrived: no request to answer, just close.
            self._shim_server.head_refused("timeout")
            self.force_close()
            return
        self._head.refuse(HeadTimeout(self._bounds.head_seconds))
        self.data_received(b"")  # the parser raises the refusal; aiohttp answers it via handle_error

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's own answers (a request its parser refused, a head over a bound, a handler that
        escaped the app's middleware): the legacy JSON error, never the client's bytes quoted back."""
        if request.writer.output_size > 0:
            raise ConnectionError("an answer had already started; the connection is closed instead")
        err = _legacy_error(status, exc, self._bounds)
        if isinstance(exc, HttpProcessingError):
            reason = "timeout" if isinstance(exc, HeadTimeout) else "too_large" if isinstance(
                exc, HeadTooLarge) else "malformed"
            self._shim_server.head_refused(reason)
            # The error's own text quotes up to 100 bytes of the offending line (a token, say): the kind only.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) and self._request_count == 1 else logging.WARNING
            log.log(level, "rejected a malformed HTTP request", extra={
                "error": type(exc).__name__, "status": err.status, "peer": _peer_host(self.peername)})
        elif err.status == 504:
            log.warning("a request handler timed out", extra={"error": type(exc).__name__})
        else:
            log.error("a request failed outside the shim's handlers", exc_info=exc)
        response = legacy_error_response(err, self._shim_server.errors())
        request_id = new_request_id()
        response.headers["X-Request-Id"] = response.headers["X-Openstack-Request-Id"] = request_id
        response.force_close()
        response.headers["Connection"] = "close"  # said outright: aiohttp answers these as HTTP/1.0
        return response


def _legacy_error(status: int, exc: BaseException | None, bounds: ConnectionBounds) -> LegacyError:
    if isinstance(exc, HeadTimeout | HeadTooLarge):
        return LegacyError(exc.code, exc.message)
    if isinstance(exc, LineTooLong):
        return LegacyError(400, "Malformed request: a request line or header line is longer than the "
                                "migration proxy accepts.")
    if isinstance(exc, HttpProcessingError):
        if exc.message.startswith("Too many headers"):
            return LegacyError(400, "Malformed request: more header lines than the migration proxy accepts.")
        if isinstance(exc, BadHttpMethod):
            return LegacyError(400, "Malformed request: the method is not a valid HTTP method.")
        return LegacyError(400, f"Malformed HTTP request ({type(exc).__name__}).")
    if status == 504:
        return LegacyError(504, "The request took too long.")
    return LegacyError(500, "The shim failed to handle the request; see its log.")


def _peer_host(peername: Any) -> str | None:
    return str(peername[0]) if isinstance(peername, tuple) and peername else None


class ShimServer(web.Server):
    """aiohttp's server with the shim's protocol and a cap on open connections (with metrics)."""

    def __init__(self, handler: Any, *, bounds: ConnectionBounds, metrics: ShimMetrics,
                 errors: Callable[[], SdrsErrorTable], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._bounds = bounds
        self._metrics = metrics
        self.errors = errors
        self._open: dict[ShimRequestHandler, None] = {}  # insertion order: oldest first

    def __call__(self) -> ShimRequestHandler:
        return ShimRequestHandler(self, loop=self._loop, bounds=self._bounds, **self._kwargs)

    def admit(self, handler: ShimRequestHandler) -> bool:
        """Room for one more connection: below the cap, or after closing the oldest idle one."""
        if len(self._open) >= self._bounds.max_connections:
            idle = next((other for other in self._open if other.idle), None)
            if idle is None:
                self._metrics.client_connections_refused.inc()
                return False
            self._metrics.client_connections_reclaimed.inc()
            self._forget(idle)
            idle.force_close()
        self._open[handler] = None
        self._metrics.client_connections.set(len(self._open))
        return True

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if isinstance(handler, ShimRequestHandler):
            self._forget(handler)

    def _forget(self, handler: ShimRequestHandler) -> None:
        if handler in self._open:
            del self._open[handler]
            self._metrics.client_connections.set(len(self._open))

    def head_refused(self, reason: str) -> None:
        self._metrics.request_heads_refused.labels(reason).inc()


class ShimRunner(web.AppRunner):
    """An AppRunner whose server is a `ShimServer`."""

    def __init__(self, app: web.Application, *, bounds: ConnectionBounds, metrics: ShimMetrics,
                 errors: Callable[[], SdrsErrorTable], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._shim = (bounds, metrics, errors)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # app startup, then aiohttp's own Server
        bounds, metrics, errors = self._shim
        return ShimServer(plain.request_handler, request_factory=plain.request_factory,
                          handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                          bounds=bounds, metrics=metrics, errors=errors, **plain._kwargs)
