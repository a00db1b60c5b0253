"""The data tables the translation reads (pure models, loaded from `mappings/` by shim.mappings): which
groups SDRS serves (`Mappings`), how SDRS errors read to a legacy client (`SdrsErrorTable`) and how SDRS
statuses read (`StatusTable`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shim.translate.identity import GroupIdentity, PairIdentity
from shim.translate.legacy import LEGACY_ERROR_STATUSES, LegacyErrorStatus, id_key
from shim.translate.sdrs_models import SDRS_GROUP_STATUSES, SDRS_PAIR_STATUSES

SdrsCode = Annotated[str, Field(pattern=r"^SDRS\.\d{4}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LegacyFault(_Strict):
    fault: str = Field(pattern=r"^[a-zA-Z]+$")
    code: str


class SdrsCodeRow(_Strict):
    sdrs: int = Field(ge=400, le=599, description="HTTP status the SDRS appendix documents")
    legacy: LegacyErrorStatus
    message: str
    code: str | None = Field(None, description="EVS code for the legacy body, instead of the fault's")


class SdrsErrorTable(_Strict):
    legacy_faults: dict[LegacyErrorStatus, LegacyFault]
    by_sdrs_status: dict[Annotated[int, Field(ge=400, le=599)], LegacyErrorStatus]
    by_sdrs_class: dict[Literal["4xx", "5xx"], LegacyErrorStatus]
    codes: dict[SdrsCode, SdrsCodeRow]
    job_request_faults: frozenset[SdrsCode] = frozenset()

    @model_validator(mode="after")
    def _complete(self) -> SdrsErrorTable:
        missing = sorted(LEGACY_ERROR_STATUSES - set(self.legacy_faults))
        if missing:
            raise ValueError(f"legacy_faults has no entry for status {missing}")
        if set(self.by_sdrs_class) != {"4xx", "5xx"}:
            raise ValueError("by_sdrs_class needs both 4xx and 5xx")
        if unknown := sorted(self.job_request_faults - set(self.codes)):
            raise ValueError(f"job_request_faults names codes the table does not have: {', '.join(unknown)}")
        return self

    def legacy_status_of_failed_job(self, code: str | None) -> int:
        """A failed job is the server's failure (500) unless its code says the request was wrong."""
        row = self.codes.get(code or "")
        return row.legacy if row is not None and code in self.job_request_faults else 500

    def legacy_status(self, sdrs_status: int, sdrs_code: str | None) -> int:
        """The legacy status for an SDRS error answer (code first, then status, then class)."""
        row = self.codes.get(sdrs_code or "")
        if row is not None:
            return row.legacy
        if sdrs_status in self.by_sdrs_status:
            return self.by_sdrs_status[sdrs_status]
        return self.by_sdrs_class["4xx" if sdrs_status < 500 else "5xx"]

    def legacy_code(self, legacy_status: int, sdrs_code: str | None) -> str:
        row = self.codes.get(sdrs_code or "")
        if row is not None and row.code:
            return row.code
        return self.legacy_faults[legacy_status].code  # type: ignore[index]

    def fault_name(self, legacy_status: int) -> str:
        return self.legacy_faults[legacy_status].fault  # type: ignore[index]


LegacyGroupStatus = Literal[
    "creating", "available", "error", "deleting", "updating", "reversing", "error_reversing",
    "failovering", "failovered", "error_failovering", "error_deleting",
]  # fmt: skip
LegacyPairStatus = Literal["creating", "available", "error", "deleting", "error_deleting"]
LegacyReplicationStatus = Literal["active", "active-stopped", "copying", "inactive", "error"]


class GroupStatusRow(_Strict):
    status: LegacyGroupStatus
    replication_status: LegacyReplicationStatus | Literal["from-pairs"]


class PairStatusRow(_Strict):
    status: LegacyPairStatus
    replication_status: LegacyReplicationStatus | Literal["from-sdrs"]


class StatusTable(_Strict):
    group_statuses: dict[str, GroupStatusRow]
    pair_statuses: dict[str, PairStatusRow]

    @model_validator(mode="after")
    def _every_sdrs_status_has_a_row(self) -> StatusTable:
        for name, rows, documented in (
            ("group_statuses", self.group_statuses, SDRS_GROUP_STATUSES),
            ("pair_statuses", self.pair_statuses, SDRS_PAIR_STATUSES),
        ):
            if missing := sorted(documented - set(rows)):
                raise ValueError(f"{name} has no row for SDRS status {', '.join(missing)}")
            if unknown := sorted(set(rows) - documented):
                raise ValueError(f"{name} has a row for undocumented SDRS status {', '.join(unknown)}")
        return self


# Who serves a mapped group (README, Migration): `sdrs` SDRS (translated); `shadow` the legacy endpoint,
# with the shim comparing SDRS's view beside it; `legacy` the legacy endpoint alone (parked, rolled back).
Mode = Literal["legacy", "shadow", "sdrs"]
MODES: tuple[Mode, ...] = ("legacy", "shadow", "sdrs")
DEFAULT_MODE: Mode = "sdrs"  # a mapping file without modes keeps its meaning: mapped means SDRS serves it
# Where an entry's effective mode came from: its own `mode`, its project's default, DEFAULT_MODE, or the
# fleet's switch in the state store (translate/fleet.py), which overrides the file once seeded.
ModeSource = Literal["entry", "project", "default", "fleet"]


@dataclass(frozen=True)
class GroupMapping:
    """One mapped group, ids in canonical form (`canonical_project_id`, `canonical_id`), with its
    effective mode (resolved at load) and, when discovery recorded it, the group as old clients knew
    it (`identity`: legacy name, description and pair ids; translate/identity.py)."""

    project_id: str
    rcg_id: str
    protection_group_id: str
    mode: Mode = DEFAULT_MODE
    mode_source: ModeSource = "default"
    identity: GroupIdentity | None = None


@dataclass(frozen=True)
class Mappings:
    """Everything loaded from the mappings directory, ready for lookups. Every lookup compares ids by
    `id_key`, so any spelling of an id finds its entry.

    `group` and `groups_of_project` answer "does SDRS serve it" (entries in mode `sdrs` only), so
    every handler that asks them leaves `legacy` and `shadow` groups to the legacy endpoint; `entry`
    and `entries_of_project` find an entry whatever its mode."""

    groups: dict[tuple[str, str], GroupMapping]  # (id_key(project), id_key(rcg)) -> entry, any mode
    errors: SdrsErrorTable
    statuses: StatusTable
    source: Path
    project_modes: dict[str, Mode] = field(default_factory=dict)  # id_key(project) -> its default mode
    # The fleet's view (translate/fleet.py): groups and projects being switched between sides (every call
    # about them is a 503 until the switch completes), whether the view is fresh enough for writes and
    # actions, and the fleet's mode version it comes from (None: the file alone).
    fenced: frozenset[tuple[str, str]] = frozenset()
    fenced_projects: frozenset[str] = frozenset()
    unconfirmed: bool = False
    mode_version: int | None = None
    by_project: dict[str, dict[str, GroupMapping]] = field(init=False)  # id_key(project) -> id_key(pg) -> entry
    sdrs_by_project: dict[str, dict[str, GroupMapping]] = field(init=False)  # the same, mode sdrs only
    shadow_by_project: dict[str, dict[str, GroupMapping]] = field(init=False)  # -> id_key(rcg) -> shadow entry
    # id_key(project) -> id_key(legacy pair id) -> (entry, its pair), entries in mode sdrs only
    legacy_pairs_by_project: dict[str, dict[str, tuple[GroupMapping, PairIdentity]]] = field(init=False)

    def __post_init__(self) -> None:
        by_project: dict[str, dict[str, GroupMapping]] = {}
        sdrs_by_project: dict[str, dict[str, GroupMapping]] = {}
        shadow_by_project: dict[str, dict[str, GroupMapping]] = {}
        legacy_pairs: dict[str, dict[str, tuple[GroupMapping, PairIdentity]]] = {}
        for (project, rcg), entry in self.groups.items():
            by_project.setdefault(project, {})[id_key(entry.protection_group_id)] = entry
            if entry.mode == "sdrs":
                sdrs_by_project.setdefault(project, {})[id_key(entry.protection_group_id)] = entry
                for pair in entry.identity.pairs if entry.identity is not None else ():
                    legacy_pairs.setdefault(project, {})[id_key(pair.legacy_id)] = (entry, pair)
            elif entry.mode == "shadow":
                shadow_by_project.setdefault(project, {})[rcg] = entry
        object.__setattr__(self, "by_project", by_project)
        object.__setattr__(self, "sdrs_by_project", sdrs_by_project)
        object.__setattr__(self, "shadow_by_project", shadow_by_project)
        object.__setattr__(self, "legacy_pairs_by_project", legacy_pairs)

    def entry(self, project_id: str, rcg_id: str) -> GroupMapping | None:
        """The mapping entry of this group, whatever its mode; None when the file does not name it."""
        return self.groups.get((id_key(project_id), id_key(rcg_id)))

    def switching(self, project_id: str, rcg_id: str | None = None) -> bool:
        """The group (or, without one, any group of the project) is being switched between sides."""
        if not self.fenced_projects:
            return False
        if rcg_id is None:
            return id_key(project_id) in self.fenced_projects
        return (id_key(project_id), id_key(rcg_id)) in self.fenced or id_key(project_id) in self.fenced_projects

    def group(self, project_id: str, rcg_id: str) -> GroupMapping | None:
        """The entry that hands this group to SDRS (mode `sdrs`). A mapping belongs to its project:
        the same RCG id under another project is unmapped."""
        found = self.entry(project_id, rcg_id)
        return found if found is not None and found.mode == "sdrs" else None

    def protection_group_for(self, project_id: str, rcg_id: str) -> str | None:
        found = self.group(project_id, rcg_id)
        return found.protection_group_id if found else None

    def groups_of_project(self, project_id: str) -> dict[str, GroupMapping]:
        """id_key(protection group id) -> entry, for every group of the project SDRS serves."""
        return self.sdrs_by_project.get(id_key(project_id), {})

    def entries_of_project(self, project_id: str) -> dict[str, GroupMapping]:
        """id_key(protection group id) -> entry, for every mapped group of the project, any mode."""
        return self.by_project.get(id_key(project_id), {})

    def legacy_pair(self, project_id: str, pair_id: str) -> tuple[GroupMapping, PairIdentity] | None:
        """The group SDRS serves (mode `sdrs`) whose recorded legacy pair this id is, with the pair's
        correspondence; None for any other id (an SDRS pair id, or a pair the legacy endpoint owns)."""
        return self.legacy_pairs_by_project.get(id_key(project_id), {}).get(id_key(pair_id))

    def project_mode(self, project_id: str) -> Mode | None:
        """The project's default mode (`projects:` in the mapping file), None when it has none."""
        return self.project_modes.get(id_key(project_id))

    def fully_migrated(self, project_id: str) -> bool:
        """A project whose default is `sdrs` no longer uses the legacy RCG API at all."""
        return self.project_modes.get(id_key(project_id)) == "sdrs"
