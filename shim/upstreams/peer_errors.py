"""Upstream failures described for a log line without quoting the peer: aiohttp's HTTP parser puts up
to a hundred raw bytes of a malformed status line, header or chunk into its error text, and those
bytes may carry a token (an echoed `X-Auth-Token`, a `Set-Cookie`)."""

from __future__ import annotations

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

# Errors whose text may quote the peer's bytes: only their kind (and status) is told.
QUOTING_ERRORS = (aiohttp.ClientResponseError, aiohttp.ClientPayloadError, HttpProcessingError)


def describe_peer_error(err: BaseException) -> str:
    """`Kind: text` for transport errors (addresses, errno), `Kind` alone when the text could quote
    the peer; at most 300 characters."""
    kind = type(err).__name__
    if isinstance(err, aiohttp.ClientResponseError):
        return f"{kind}: HTTP {err.status}" if err.status else kind
    if isinstance(err, QUOTING_ERRORS):
        return kind
    text = str(err)
    return f"{kind}: {text}"[:300] if text else kind
