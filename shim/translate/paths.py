"""Canonical spellings of request paths (pure): what a normalising server would read a raw path as.

A translated URL must reach the shim's handlers, never a legacy endpoint that could normalise a
disguised spelling and act on a migrated group behind the shim's back.
"""

from __future__ import annotations

import re

from shim.translate.legacy import PAIR_COLLECTION, RCG_COLLECTION

_TRANSLATED_URL = re.compile(
    r"^/v2/[^/]+/(?:" + re.escape(RCG_COLLECTION) + "|" + re.escape(PAIR_COLLECTION) + r")(?:/|$)"
)


_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
_SLASH_ESCAPE = re.compile(r"%(2[fF]|5[cC])")


def _decode_unreserved(raw_path: str) -> str:
    """Escapes of unreserved characters mean the character itself (RFC 3986 6.2.2.2): `%62` is `b`."""
    return _UNRESERVED_ESCAPE.sub(lambda match: chr(int(match[1], 16)), raw_path)


def canonical_path(raw_path: str) -> str:
    """The path as the most eager normalising server reads it: unreserved escapes decoded, encoded
    slashes and backslashes taken as `/`, dot segments resolved, empty segments (`//`, a trailing
    `/`) merged."""
    decoded = _SLASH_ESCAPE.sub("/", _decode_unreserved(raw_path))
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


def disguises_a_translated_url(raw_path: str) -> bool:
    """A spelling of a URL the shim translates that differs from it in structure (`//v2/...`, `/./`,
    dot segments, `%2F`, a trailing slash). Relayed as is, a normalising legacy endpoint could act
    on a migrated group behind the shim's back (a reprotect without the duplicate guard). Mere
    escapes of unreserved characters change nothing: routing decodes them too."""
    canonical = canonical_path(raw_path)
    return canonical != _decode_unreserved(raw_path) and _TRANSLATED_URL.match(canonical) is not None


def names_a_translated_url(raw_path: str) -> bool:
    """Whether the path, read as eagerly as any server would, is in the translated URL space. A path
    the router matched as a translated URL that canonicalises to something else (`COLL/..%2F{id}`)
    is not about a group at all: it is relayed like any other path."""
    return _TRANSLATED_URL.match(canonical_path(raw_path)) is not None
