"""Pure header helpers for forwarding a message through the shim (no I/O, no aiohttp sessions).

Why this exists: a proxy must not forward headers that describe one TCP connection to the next hop
(RFC 9110 section 7.6.1), and it must keep every value of a repeated header: `dict(headers)` keeps
only one value per name, which silently loses a second `Set-Cookie` or `X-Forwarded-For` line.
Everything here therefore works on case-insensitive multidicts and keeps order and repeats.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

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


_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in _HOP_BY_HOP_LOWER)


class NotUtf8Header(ValueError):
    """A request header value holds bytes that are not UTF-8 (aiohttp decoded them with surrogateescape;
    they would be dropped on the way out, so the value cannot be relayed unchanged)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def outgoing_request_fields(
    items: Collection[tuple[str, str]], *, peer: str | None, scheme: str, host: str, keep_client_host: bool,
    request_ids: Sequence[tuple[str, str]], drop_length: bool,
) -> tuple[list[tuple[str, str]], bool]:
    """The client's header fields as the passthrough sends them on, built in one pass; and whether a
    Content-Length is among them.

    The same fields, in the same order, as `forwarded_request_headers` followed by the passthrough's
    edits (and aiohttp's client, which put Host first): hop-by-hop fields and those named in
    `Connection` dropped; `X-Forwarded-For` extended with `peer` and `X-Forwarded-Proto` set to
    `scheme` (each where its first occurrence was, else appended); `Host` first: `host`, the client's
    then going on in `X-Forwarded-Host`, or with `keep_client_host` the client's (`host` when it sent
    none); each `request_ids` field appended unless the client sent it; the client's Content-Length
    dropped with `drop_length` (the body was read and goes with its real length). NotUtf8Header for a
    value that is not UTF-8 text.
    """
    fields: list[tuple[str, str]] = [("Host", host)]
    forwarded_for: list[int] = []
    forwarded_proto: list[int] = []
    forwarded_host: list[int] = []
    chain: list[str] = []
    client_host: str | None = None
    last_host = ""
    not_utf8: str | None = None
    has_length = False
    id_names = {name.lower() for name, _ in request_ids}
    sent_ids: set[str] = set()
    for name, value in items:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP_LOWER:
            if lowered == "connection":  # rare: find every field it names, then start again without them
                dropped = connection_tokens(items) | {"connection"}
                return outgoing_request_fields(
                    [(n, v) for n, v in items if n.lower() not in dropped], peer=peer, scheme=scheme, host=host,
                    keep_client_host=keep_client_host, request_ids=request_ids, drop_length=drop_length)
            continue
        if lowered == "x-forwarded-proto":  # replaced by `scheme` whatever it says
            forwarded_proto.append(len(fields))
            fields.append((name, value))
            continue
        if not_utf8 is None and not value.isascii() and not _is_utf8(value):
            not_utf8 = name  # refused once the pass is over (a later Connection may drop the field)
        if lowered == "host":
            if client_host is None:
                client_host = value
            last_host = value  # aiohttp's client sent the last one
            continue
        if lowered == "x-forwarded-for":
            forwarded_for.append(len(fields))
            if stripped := value.strip():
                chain.append(stripped)
        elif lowered == "x-forwarded-host":
            forwarded_host.append(len(fields))
        elif lowered == "content-length":
            if drop_length:
                continue
            has_length = True
        elif lowered in id_names:
            sent_ids.add(lowered)
        fields.append((name, value))
    if not_utf8 is not None:
        raise NotUtf8Header(not_utf8)
    if peer:
        chain.append(peer)
    removed: list[int] = []
    if chain:
        _put(fields, "X-Forwarded-For", ", ".join(chain), forwarded_for, removed)
    _put(fields, "X-Forwarded-Proto", scheme, forwarded_proto, removed)
    if keep_client_host:
        if client_host is not None:
            fields[0] = ("Host", last_host)
    elif client_host is not None:
        _put(fields, "X-Forwarded-Host", client_host, forwarded_host, removed)
    if removed:
        gone = set(removed)
        fields = [field for index, field in enumerate(fields) if index not in gone]
    for name, value in request_ids:
        if name.lower() not in sent_ids:
            fields.append((name, value))
    return fields, has_length


def _put(fields: list[tuple[str, str]], name: str, value: str, at: list[int], removed: list[int]) -> None:
    """`fields[name] = value` as a multidict does it: in place of the first occurrence (the others
    removed), else appended."""
    if at:
        fields[at[0]] = (name, value)
        removed.extend(at[1:])
    else:
        fields.append((name, value))


def relayed_answer_fields(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """An upstream answer's header fields minus hop-by-hop ones and those its `Connection` names, in
    order with repeats and original spelling, decoded as aiohttp decodes them (UTF-8, surrogateescape)."""
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP_BYTES:
            if lowered == b"connection":
                named = named or set()
                named.update(token.strip().lower() for token in value.split(b",") if token.strip())
            continue
        kept.append((name, value))
    if named:
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    return [(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            for name, value in kept]
