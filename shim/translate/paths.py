"""Canonical spellings of request paths (pure): what a normalising server would read a raw path as.

A translated URL must reach the shim's handlers, never a legacy endpoint that could normalise a
disguised spelling and act on a migrated group behind the shim's back.
"""

from __future__ import annotations

import functools
import re

from shim.translate.legacy import PAIR_COLLECTION, RCG_COLLECTION

_COLLECTIONS = frozenset({RCG_COLLECTION, PAIR_COLLECTION})
# What both collection names start with: a path without it (in any case, once decoded) names neither.
_COLLECTION_STEM = "os-vendor-replication"
assert all(name.startswith(_COLLECTION_STEM) for name in _COLLECTIONS)
_TRANSLATED_URL = re.compile(
    r"^/v2/[^/]+/(?:" + re.escape(RCG_COLLECTION) + "|" + re.escape(PAIR_COLLECTION) + r")(?:/|$)"
)

_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
_SLASH_ESCAPE = re.compile(r"%(2[fF]|5[cC])")
# Servlet containers cut `;params` off each segment (Tomcat, Jetty); `%3B` is read the same way here.
_SEGMENT_PARAMETERS = re.compile(r"(?:;|%3[bB]).*", re.DOTALL)
# Whitespace and control characters, raw or escaped (`%20`, `%09`, `%0A`, `%00`, ...): servers that
# strip or ignore them would read `action%20` as `action`.
_BLANKS = re.compile(r"%(?:[01][0-9a-fA-F]|20|7[fF])|[\s\x00-\x1f\x7f]")
# OpenStack Routes maps `{id}.json` / `.xml` to `{id}` with a format.
_FORMAT_SUFFIX = re.compile(r"\.(?:json|xml)$", re.IGNORECASE)


def _decode_unreserved(raw_path: str) -> str:
    """Escapes of unreserved characters mean the character itself (RFC 3986 6.2.2.2): `%62` is `b`."""
    return _UNRESERVED_ESCAPE.sub(lambda match: chr(int(match[1], 16)), raw_path)


def _canonical_segment(segment: str) -> str:
    segment = _SEGMENT_PARAMETERS.sub("", segment)
    segment = _BLANKS.sub("", segment)
    return _FORMAT_SUFFIX.sub("", segment)


def _fold_fixed_words(segments: list[str]) -> list[str]:
    """`v2`, the collection names and `action` compared without case (ids and project keep theirs)."""
    if len(segments) >= 3 and segments[0].lower() == "v2" and segments[2].lower() in _COLLECTIONS:
        segments = ["v2", segments[1], segments[2].lower(), *segments[3:]]
        if len(segments) >= 5 and segments[4].lower() == "action":
            segments[4] = "action"
    return segments


def canonical_path(raw_path: str) -> str:
    """`_canonical_path`, remembered for the paths of the moment (a translated request asks twice:
    is it disguised, is it in the translated space); a long path is never kept."""
    if len(raw_path) > _REMEMBERED_PATH_LENGTH:
        return _canonical_path(raw_path)
    return _remembered_canonical_path(raw_path)


_REMEMBERED_PATH_LENGTH = 512  # at most 512 paths of 512 characters: a quarter of a megabyte


def _canonical_path(raw_path: str) -> str:
    """The path as the most eager normalising server reads it: unreserved escapes decoded, encoded
    slashes and backslashes taken as `/`; per segment, `;parameters`, whitespace and control
    characters (raw or escaped) and a `.json`/`.xml` format suffix dropped; dot segments resolved,
    empty segments (`//`, a trailing `/`) merged; `v2`, the collection names and `action` in lower
    case."""
    decoded = _SLASH_ESCAPE.sub("/", _decode_unreserved(raw_path))
    segments: list[str] = []
    for raw_segment in decoded.split("/"):
        segment = _canonical_segment(raw_segment)
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(_fold_fixed_words(segments))


_remembered_canonical_path = functools.lru_cache(maxsize=512)(_canonical_path)


def _plain(raw_path: str) -> bool:
    """Printable ASCII without spaces: `_BLANKS` finds nothing to drop."""
    return raw_path.isascii() and raw_path.isprintable() and " " not in raw_path


def disguises_a_translated_url(raw_path: str) -> bool:
    """A path that, read canonically, names a URL the shim translates (the group or pair collection
    of any project, or anything under them) but is not spelled canonically: `//v2/...`, dot
    segments, `%2F`, a trailing slash, `;x`, `.json`, `%20`, `V2`. Relayed as is, a normalising
    legacy endpoint could act on a migrated group behind the shim's back (a reprotect without the
    duplicate guard). Mere escapes of unreserved characters change nothing: routing decodes them too."""
    if "%" not in raw_path and _plain(raw_path) and _COLLECTION_STEM not in raw_path.lower():
        return False  # nothing to decode and no blank to drop: no spelling of a collection name in it
    canonical = canonical_path(raw_path)
    return canonical != _decode_unreserved(raw_path) and _TRANSLATED_URL.match(canonical) is not None


def names_a_translated_url(raw_path: str) -> bool:
    """Whether the path, read as eagerly as any server would, is in the translated URL space. A path
    the router matched as a translated URL that canonicalises to something else (`COLL/..%2F{id}`)
    is not about a group at all: it is relayed like any other path."""
    return _TRANSLATED_URL.match(canonical_path(raw_path)) is not None
