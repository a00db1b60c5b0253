"""The legacy EVS v2 contract as old clients see it: statuses, ids and the error envelope."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

# The only statuses a translated route may answer with (the legacy pages' list, minus 407).
LegacyErrorStatus = Literal[400, 401, 403, 404, 405, 406, 408, 409, 500, 501, 502, 503, 504]
LEGACY_ERROR_STATUSES: frozenset[int] = frozenset(get_args(LegacyErrorStatus))

RCG_COLLECTION = "os-vendor-replication-consistency-groups"
PAIR_COLLECTION = "os-vendor-replications"

# Legacy ids: UUIDs (dashes optional, as EVS accepted both) or 32 hex digits for project ids.
_ID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def is_legacy_id(value: str) -> bool:
    """True for a UUID or a 32-hex id: the only ids that may ever reach an SDRS URL."""
    return _ID.fullmatch(value) is not None  # not match(): `$` also matches before a trailing newline


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


def normalise_id(value: str) -> str:
    """The form ids are kept in: lower case (SDRS URLs use it)."""
    return value.lower()


def id_key(value: str) -> str:
    """What ids are compared by: case and dashes do not matter (`BD35D31B7AB9...` is `bd35d31b-7ab9-...`)."""
    return value.replace("-", "").lower()


@dataclass(frozen=True)
class LegacyError(Exception):
    """An error answered to the legacy client: status, human message, optional EVS code override.

    `retry_after` (seconds) becomes a Retry-After header; `sdrs_code` is kept for logs and metrics.
    """

    status: int
    message: str
    code: str | None = None
    retry_after: int | None = None
    sdrs_code: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.status not in LEGACY_ERROR_STATUSES:
            raise ValueError(f"{self.status} is not a legacy error status")

    def __str__(self) -> str:
        return f"{self.status} {self.message}"
