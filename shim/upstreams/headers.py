"""Pure header helpers for forwarding a message through the shim (no I/O, no aiohttp sessions).

Why this exists: a proxy must not forward headers that describe one TCP connection to the next hop
(RFC 9110 section 7.6.1), and it must keep every value of a repeated header: `dict(headers)` keeps
only one value per name, which silently loses a second `Set-Cookie` or `X-Forwarded-For` line.
Everything here therefore works on case-insensitive multidicts and keeps order and repeats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web
from multidict import CIMultiDict

# RFC 9110 section 7.6.1 (plus the de facto Keep-Alive and Proxy-Connection): these describe one
# connection only, so they are never copied from one hop to the next. Names are compared
# case-insensitively: use `is_hop_by_hop`, not `in HOP_BY_HOP`, on names from the wire.
HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authenticate",
        "Proxy-Authorization",
    }
)
_HOP_BY_HOP_LOWER = frozenset(name.lower() for name in HOP_BY_HOP)


def is_hop_by_hop(name: str) -> bool:
    """True for a field of the fixed hop-by-hop set, whatever its spelling."""
    return name.lower() in _HOP_BY_HOP_LOWER


HeaderSource = Mapping[str, str] | Iterable[tuple[str, str]]


def _items(headers: HeaderSource) -> list[tuple[str, str]]:
    # Multidicts and plain mappings both expose `.items()`; a multidict's items() yields every value.
    if hasattr(headers, "items"):
        return list(headers.items())  # type: ignore[union-attr]
    return list(headers)


def connection_tokens(headers: HeaderSource) -> frozenset[str]:
    """The lower-cased header names listed in every `Connection` header (RFC 9110 section 7.6.1).

    A sender may name any extra per-connection header there (e.g. `Connection: close, X-Foo`); those
    must be dropped by a proxy just like the fixed hop-by-hop set.
    """
    tokens: set[str] = set()
    for name, value in _items(headers):
        if name.lower() == "connection":
            tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return frozenset(tokens)


def without_hop_by_hop(headers: HeaderSource) -> CIMultiDict[str]:
    """A copy of `headers` minus hop-by-hop fields and every field named in a `Connection` header.

    Multi-valued headers keep all their values, in their original order and original spelling.
    """
    items = _items(headers)
    dropped = _HOP_BY_HOP_LOWER | connection_tokens(items)
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        if name.lower() not in dropped:
            result.add(name, value)
    return result


def forwarded_request_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The client's request headers as the next hop should see them.

    Hop-by-hop fields are removed; `X-Forwarded-For` gains the peer address of this connection
    (appended to whatever earlier proxies wrote, folded into one field as RFC 7230 allows for a
    comma-separated list), and `X-Forwarded-Proto` is the scheme the client used to reach the shim
    (any incoming value is replaced: this hop is the one that knows the scheme it accepted).
    `Host` is left as the client sent it; the caller decides whether the next hop keeps it.
    """
    headers = without_hop_by_hop(request.headers)
    chain = [value.strip() for value in headers.getall("X-Forwarded-For", []) if value.strip()]
    peer = request.remote
    if peer:
        chain.append(peer)
    if chain:
        headers["X-Forwarded-For"] = ", ".join(chain)  # replaces in place: keeps the field's position
    headers["X-Forwarded-Proto"] = request.scheme
    return headers
