"""Structured logs: one JSON object per line, with the request id, and secrets redacted.

Fields passed with `extra={...}` become top-level keys. Anything that looks like a credential
(token, Authorization header, AK/SK signature), and the exact credentials of the request being
handled wherever they appear, is replaced by "[REDACTED]" before it is written, whatever the level,
so a stray value in a message or an exception text cannot leak. Errors that quote a peer's bytes
(aiohttp's parser errors, client and upstream side) are logged by kind only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from shim.context import AUDIT, PASSTHROUGH, REQUEST_ID, REQUEST_SECRETS, ROUTE
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
        for value in headers.getall(name, ()):
            found.add(value.strip())
            found.update(_AUTHORIZATION_PARTS.findall(value))
            found.update(part.strip() for part in value.split(" ", 1)[1:])  # `Bearer <token>`
    return tuple(sorted((value for value in found if len(value) >= _SHORTEST_SECRET), key=len, reverse=True))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    for pattern in _SENSITIVE_TEXT:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact(value: Any, key: str = "", secrets: tuple[str, ...] = ()) -> Any:
    if key.lower() in SENSITIVE_KEYS:
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k), secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets=secrets) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`log_format: json`, the default)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.document(record), default=str)

    def document(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as a redacted mapping: time, level, logger, pid, message, then its extras."""
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


class TextFormatter(JsonFormatter):
    """`log_format: text`, for people reading it by hand: `time LEVEL logger: message key=value ...`,
    redacted exactly as the JSON lines are; a traceback follows on its own lines."""

    _HEAD = ("time", "level", "logger", "message", "exception")

    def format(self, record: logging.LogRecord) -> str:
        document = self.document(record)
        line = f"{document['time']} {document['level'].upper():<7} {document['logger']}: {document['message']}"
        extras = " ".join(f"{key}={_text_value(value)}" for key, value in document.items() if key not in self._HEAD)
        text = f"{line} {extras}" if extras else line
        return text + "\n" + document["exception"] if "exception" in document else text


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(char.isspace() or char in "\"=" for char in value):
        return value
    return json.dumps(value, default=str)


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


class JsonAccessLogger(AbstractAccessLogger):
    """One line per answered request: method, path without query, status, duration, request id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> None:
        path = request.rel_url.raw_path  # still percent-encoded; the query (filters, markers) is left out
        level = logging.DEBUG if path in MANAGEMENT_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(level, "access", extra={
            "request_id": request.get(REQUEST_ID) or response.headers.get("X-Request-Id"),
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": round(seconds * 1000, 3),
            "route": _route_kind(path, request),
        })

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)  # INFO off means DEBUG is off too


def _route_kind(path: str, request: web.BaseRequest) -> str | None:
    """As in the metrics; None for a request aiohttp refused before the shim saw it."""
    if path in MANAGEMENT_PATHS:
        return "management"
    if request.get(AUDIT) is None:
        return None
    return request.get(ROUTE, PASSTHROUGH)


LOG_FORMATTERS: dict[str, type[JsonFormatter]] = {"json": JsonFormatter, "text": TextFormatter}


def configure_logging(level: str = "info", stream: Any = None, log_format: str = "json") -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LOG_FORMATTERS[log_format]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the shim writes its own: shim.access
