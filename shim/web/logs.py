"""Structured logs: one JSON object per line, with the request id, and secrets redacted.

Lines go out through one `LineSink`: on the event loop's thread the shim's own process writes them
in batches (every 0.1 s, at 64 KiB, at once for a warning or worse, and at exit), so an access line
costs no system call of its own; the access line itself is built as one string, not as a logging
record, when nothing but the sink would see the record (see `JsonAccessLogger`).

Fields passed with `extra={...}` become top-level keys. Anything that looks like a credential
(token, Authorization header, AK/SK signature), and the exact credentials of the request being
handled wherever they appear, is replaced by "[REDACTED]" before it is written, whatever the level,
so a stray value in a message or an exception text cannot leak. Errors that quote a peer's bytes
(aiohttp's parser errors, client and upstream side) are logged by kind only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
import time
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from shim.context import AUDIT, PASSTHROUGH, REQUEST_ID, REQUEST_SECRETS, ROUTE, UPSTREAM_REQUEST_ID
from shim.translate import url_space
from shim.upstreams.peer_errors import QUOTING_ERRORS, describe_peer_error

REDACTED = "[REDACTED]"
SENSITIVE_KEYS = frozenset(
    {"x-auth-token", "authorization", "x-security-token", "x-subject-token", "cookie", "set-cookie",
     "token", "signature", "password", "secret", "sk"}
)
_SENSITIVE_TEXT = [
    # Header-like `Name: value` or `name=value` pairs for credential headers, also as a quoted
    # mapping entry (`'X-Auth-Token': 'value'`, the repr of a headers dict).
    re.compile(
        r"(?i)((?:x-auth-token|x-security-token|x-subject-token|authorization)['\"]?\s*[:=]\s*['\"]?)"
        r"([^\s,;'\"}]+(?: [^\s,;'\"}]+)?)"
    ),
    # AK/SK signing parameters inside an Authorization value.
    re.compile(r"(?i)((?:signature|access)=)([^\s,;'\"}]+)"),
    # Keystone/IAM token bodies: fernet `gAAAA...`, PKI `MII...` and PKIZ `PKIZ_...` (base64 in which
    # Keystone writes `/` as `-`, so a token runs on across dashes and stops at a `/`).
    re.compile(r"()(\bgAAAA[A-Za-z0-9_\-=]{8,}|\bMII[A-Za-z0-9+=_\-]{20,}|\bPKIZ_[A-Za-z0-9+=_\-]{20,})"),
]
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
# Credential headers whose values are the request's secrets (see REQUEST_SECRETS).
SECRET_HEADERS = ("X-Auth-Token", "X-Security-Token", "X-Subject-Token", "Authorization", "Proxy-Authorization",
                  "Cookie")
_SHORTEST_SECRET = 8  # shorter values (a test's "t") would blank out ordinary words
_AUTHORIZATION_PARTS = re.compile(r"(?i)(?:signature|access|credential)=([^\s,;]+)")


def request_secrets(headers: Any) -> tuple[str, ...]:
    """The credential values a request carries, longest first, each at least 8 characters: header
    values, and the access key and signature inside an AK/SK Authorization header."""
    found: set[str] = set()
    for name in SECRET_HEADERS:
        if name not in headers:
            continue
        for value in headers.getall(name):
            found.add(value.strip())
            if "=" in value:
                found.update(_AUTHORIZATION_PARTS.findall(value))
            if " " in value:
                found.update(part.strip() for part in value.split(" ", 1)[1:])  # `Bearer <token>`
    if not found:
        return ()
    return tuple(sorted((value for value in found if len(value) >= _SHORTEST_SECRET), key=len, reverse=True))




def _may_hold_credentials(text: str) -> bool:
    """What every pattern above needs somewhere in `text`: a few substring checks rule most texts
    out (ten times cheaper than the first pattern's scan)."""
    lowered = text.lower()
    return ("token" in lowered or "authorization" in lowered or "signature=" in lowered or "access=" in lowered
            or "gAAAA" in text or "MII" in text or "PKIZ_" in text)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not _may_hold_credentials(text):
        return text
    for pattern in _SENSITIVE_TEXT:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


# One encoder for every line: json.dumps with an option builds a new one per call.
_encode_line = json.JSONEncoder(default=str).encode

def redact(value: Any, key: str = "", secrets: tuple[str, ...] = ()) -> Any:
    """`value` with every credential replaced: whole values under a sensitive key, and credential
    texts (and the request's own `secrets`) inside strings, at any depth."""
    if key.lower() in SENSITIVE_KEYS:
        return REDACTED
    return _redacted(value, secrets)


def _redacted(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SENSITIVE_KEYS else _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, secrets) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`log_format: json`, the default)."""

    def format(self, record: logging.LogRecord) -> str:
        return self.render(self.document(record))

    def render(self, document: dict[str, Any]) -> str:
        """A redacted document as its line (without the newline)."""
        return _encode_line(document)

    def fields_line(self, level: int, logger: str, message: str, fields: dict[str, Any]) -> str:
        """The line (newline included) `format` writes for a record of `logger` at `level` with
        `message` and these extras, built without a logging record (see `log_fields`)."""
        document = {"time": timestamp(time.time()), "level": logging.getLevelName(level).lower(), "logger": logger,
                    "pid": _pid, "message": message, **fields}
        return self.render(redact(document, secrets=REQUEST_SECRETS.get())) + "\n"

    def document(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as a redacted mapping: time, level, logger, pid, message, then its extras."""
        document: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # tells the workers of `--workers N` apart
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                document[key] = value
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            # aiohttp's parser puts up to 100 raw bytes of the offending line (an oversized token
            # header, say) in this error's text: keep the kind only. A client's bad request is not
            # the shim's error.
            document.update(level="warning", message="rejected a malformed HTTP request",
                            error=type(error).__name__, status=error.code)
        elif error is not None and (quoting := _peer_quoting_errors(error)):
            # Somewhere in the chain is a peer's parser error: its text (and the traceback's) may
            # quote the peer's bytes. The kinds only.
            document["exception"] = (f"{type(error).__name__} caused by {', '.join(quoting)} "
                                     "(text withheld: it may quote a peer's bytes)")
        elif record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return redact(document, secrets=REQUEST_SECRETS.get())  # type: ignore[no-any-return]

    def access_line(self, level: int, logger: str, fields: dict[str, Any]) -> str:
        """The line `format` writes for an access record with these (already redacted) `fields`:
        request_id, method, path, status, duration_ms, route; built directly (JsonAccessLogger)."""
        return (f'{{"time": "{timestamp(time.time())}", "level": "{logging.getLevelName(level).lower()}", '
                f'"logger": {_json_string(logger)}, "pid": {_pid}, "message": "access", '
                f'"request_id": {_json_value(fields["request_id"])}, "method": {_json_string(fields["method"])}, '
                f'"path": {_json_string(fields["path"])}, "status": {fields["status"]:d}, '
                f'"duration_ms": {fields["duration_ms"]!r}, "route": {_json_value(fields["route"])}'
                + (f', "upstream_request_id": {_json_string(fields["upstream_request_id"])}}}\n'
                   if "upstream_request_id" in fields else "}\n"))


class TextFormatter(JsonFormatter):
    """`log_format: text`, for people reading it by hand: `time LEVEL logger: message key=value ...`,
    redacted exactly as the JSON lines are; a traceback follows on its own lines."""

    _HEAD = ("time", "level", "logger", "message", "exception")

    def render(self, document: dict[str, Any]) -> str:
        line = f"{document['time']} {document['level'].upper():<7} {document['logger']}: {document['message']}"
        extras = " ".join(f"{key}={_text_value(value)}" for key, value in document.items() if key not in self._HEAD)
        text = f"{line} {extras}" if extras else line
        return text + "\n" + document["exception"] if "exception" in document else text

    def access_line(self, level: int, logger: str, fields: dict[str, Any]) -> str:
        extras = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return (f"{timestamp(time.time())} {logging.getLevelName(level):<7} {logger}: access "
                f"pid={_pid} {extras}\n")


def _json_value(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(char.isspace() or char in "\"=" for char in value):
        return value
    return _encode_line(value)


def _peer_quoting_errors(error: BaseException) -> list[str]:
    """The peer parser errors (by kind) in `error`'s chain of causes and contexts."""
    found: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, QUOTING_ERRORS):
            found.append(describe_peer_error(current))
        current = current.__cause__ or current.__context__
    return found


# Probes and scrapes: their access lines are DEBUG, so they do not drown the traffic.
MANAGEMENT_PATHS = frozenset(url_space.MANAGEMENT_PATHS)

_second = -1
_second_text = ""
_pid = os.getpid()  # the access line's; a forked child learns its own below


def _learn_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_learn_pid)


def timestamp(created: float) -> str:
    """`2026-11-28T04:00:23.123Z` (UTC, milliseconds); the seconds part is formatted once a second."""
    global _second, _second_text
    whole = int(created)
    if whole != _second:
        _second, _second_text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second_text}.{int((created - whole) * 1000):03d}Z"


class LineSink:
    """Where every log line goes. Buffered (the shim serving), lines written on the event loop's
    thread wait at most `FLUSH_SECONDS` or `FLUSH_BYTES` and are written together; a line at WARNING
    or worse, a line from another thread and the end of the process write everything at once, so
    order is kept and nothing waits behind a problem. Unbuffered, each line is written as it comes."""

    FLUSH_SECONDS = 0.1
    FLUSH_BYTES = 65536

    def __init__(self, stream: TextIO, buffered: bool) -> None:
        self.stream = stream
        self.buffered = buffered
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is due on
        self._lock = threading.Lock()

    def write(self, line: str, urgent: bool = False) -> None:
        """`line` ends with a newline."""
        if not self.buffered or urgent:
            self._write_now(line)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop on this thread (start-up, a worker thread): write at once
            self._write_now(line)
            return
        with self._lock:
            self._pending.append(line)
            self._pending_bytes += len(line)
            full = self._pending_bytes >= self.FLUSH_BYTES
        if full:
            self.flush()
        elif self._timer_loop is not loop:  # none pending (or one on a loop that has since ended)
            self._timer_loop = loop
            loop.call_later(self.FLUSH_SECONDS, self._flush_from_timer)

    def _flush_from_timer(self) -> None:
        self._timer_loop = None
        self.flush()

    def _write_now(self, line: str) -> None:
        with self._lock:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            pending.append(line)
            self._emit("".join(pending))

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            self._emit("".join(pending))

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: a log line is not worth a crash
            pass


class SinkHandler(logging.Handler):
    """The root handler: formats a record and hands the line to the sink."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.sink.write(line + "\n", urgent=record.levelno >= logging.WARNING)

    def flush(self) -> None:
        self.sink.flush()  # also at exit: logging.shutdown flushes every handler


class JsonAccessLogger(AbstractAccessLogger):
    """One line per answered request: method, path without query, status, duration, request id.

    When the line would only reach the shim's own sink (no other handler or filter anywhere on the
    way, as `shim serve` runs), it is built directly as the text the formatter would write: it is
    the one line every request writes. Otherwise (a test's capture handler, say) it goes through
    logging as a record with the same fields."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> None:
        path = request.rel_url.raw_path  # still percent-encoded; the query (filters, markers) is left out
        level = logging.DEBUG if path in MANAGEMENT_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "request_id": request.get(REQUEST_ID) or response.headers.get("X-Request-Id"),
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": round(seconds * 1000, 3),
            "route": _route_kind(path, request),
        }
        upstream_id = request.get(UPSTREAM_REQUEST_ID)
        if upstream_id is not None:  # a relayed answer carried the legacy endpoint's own id
            fields["upstream_request_id"] = upstream_id[:128]
        handler = _only_sink_handler(self.logger, level)
        if handler is None:
            self.logger.log(level, "access", extra=fields)
            return
        fields["path"] = redact_text(path, REQUEST_SECRETS.get())
        if fields["request_id"] is not None:
            fields["request_id"] = redact_text(fields["request_id"])
        if upstream_id is not None:
            fields["upstream_request_id"] = redact_text(fields["upstream_request_id"])
        line = handler.formatter.access_line(level, self.logger.name, fields)  # type: ignore[union-attr]
        handler.sink.write(line)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)  # INFO off means DEBUG is off too


def _only_sink_handler(logger: logging.Logger, level: int) -> SinkHandler | None:
    """The root's SinkHandler when it is the only handler (and no filter) a record of `logger` at
    `level` would meet."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.parent is None:  # the root
            handlers = current.handlers
            if len(handlers) != 1:
                return None
            handler = handlers[0]
            if (not isinstance(handler, SinkHandler) or handler.filters or level < handler.level
                    or not isinstance(handler.formatter, JsonFormatter)):
                return None
            return handler
        if current.handlers or not current.propagate:
            return None
        current = current.parent
    return None


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """`logger.log(level, message, extra=fields)`; when the shim's own sink is all that would see the
    record (as `shim serve` runs), the line is built directly, as the access line is: a translated
    call's audit line costs a third of a logging record's way."""
    if not logger.isEnabledFor(level):
        return
    handler = _only_sink_handler(logger, level)
    if handler is None:
        logger.log(level, message, extra=fields)
        return
    line = handler.formatter.fields_line(level, logger.name, message, fields)  # type: ignore[union-attr]
    handler.sink.write(line, urgent=level >= logging.WARNING)


def _route_kind(path: str, request: web.BaseRequest) -> str | None:
    """As in the metrics; None for a request aiohttp refused before the shim saw it."""
    if path in MANAGEMENT_PATHS:
        return "management"
    if request.get(AUDIT) is None:
        return None
    return request.get(ROUTE, PASSTHROUGH)


LOG_FORMATTERS: dict[str, type[JsonFormatter]] = {"json": JsonFormatter, "text": TextFormatter}

def configure_logging(level: str = "info", stream: Any = None, log_format: str = "json",
                      buffered: bool | None = None) -> None:
    """Every line to `stream` (stderr by default) in `log_format`. `buffered` (the default for
    stderr) batches lines on the event loop's thread: see LineSink."""
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, SinkHandler):
            old.flush()
    sink = LineSink(stream or sys.stderr, buffered=stream is None if buffered is None else buffered)
    handler = SinkHandler(sink)
    handler.setFormatter(LOG_FORMATTERS[log_format]())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the shim writes its own: shim.access

