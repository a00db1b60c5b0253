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


def id_key(value: str) -> str:
    """What ids are compared and keyed by: case and dashes do not matter (`BD35D31B7AB9...` is
    `bd35d31b-7ab9-...`). Every lookup, list de-duplication and state-store key uses this form."""
    return value.replace("-", "").lower()


def canonical_id(value: str) -> str:
    """The form a group or pair id is answered with and put in SDRS URLs: a dashed lower-case UUID."""
    key = id_key(value)
    return f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}"


def canonical_project_id(value: str) -> str:
    """The form a project id is put in SDRS URLs: 32 lower-case hex digits, as IAM issues them."""
    return id_key(value)


@dataclass(eq=False)  # not frozen: exceptions get __traceback__ set as they travel
class LegacyError(Exception):
    """An error answered to the legacy client: status, human message, optional EVS code override.

    `retry_after` (seconds) becomes a Retry-After header; `sdrs_code` is kept for logs and metrics, and
    so is `refusal` (the guard's reason: job_running, in_progress, settle, state_store, lease_lost).
    """

    status: int
    message: str
    code: str | None = None
    retry_after: int | None = None
    sdrs_code: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    refusal: str | None = None  # why the duplicate-action guard refused an action (shim_actions_refused_total)

    def __post_init__(self) -> None:
        if self.status not in LEGACY_ERROR_STATUSES:
            raise ValueError(f"{self.status} is not a legacy error status")

    def __str__(self) -> str:
        return f"{self.status} {self.message}"
