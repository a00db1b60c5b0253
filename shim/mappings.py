"""Mapping tables (data, not code): which SDRS protection group answers for which legacy group, and
how SDRS errors read to a legacy client. Loaded from YAML, validated by pydantic, immutable after load.

Files in the mappings directory:
- `consistency-groups.yaml`: legacy replication consistency group -> SDRS protection group, per project,
  each with its mode (`legacy` | `shadow` | `sdrs`; default: its project's, under `projects:`, else `sdrs`).
- `sdrs-errors.yaml`: SDRS error code / HTTP status -> legacy status, and the legacy fault names.
- `statuses.yaml`: SDRS group / pair status -> legacy `status` and `replication_status`.
When the directory has no `sdrs-errors.yaml` or `statuses.yaml`, the table shipped with the shim is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shim.translate.identity import GroupIdentity, PairIdentity
from shim.translate.legacy import canonical_id, canonical_project_id, id_key, is_legacy_id
from shim.translate.tables import DEFAULT_MODE, GroupMapping, Mappings, Mode, SdrsErrorTable, StatusTable
from shim.validation import ConfigError, describe_validation_error, error_location, read_yaml

CONSISTENCY_GROUPS_FILE = "consistency-groups.yaml"
SDRS_ERRORS_FILE = "sdrs-errors.yaml"
STATUSES_FILE = "statuses.yaml"


def default_mappings_dir() -> Path:
    """The tables shipped with the shim: inside the wheel, or the checkout's `mappings/`."""
    packaged = Path(__file__).parent / "_default_mappings"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "mappings"


def _checked(value: str) -> str:
    if not is_legacy_id(value):
        raise ValueError("must be a UUID or 32 hexadecimal digits")
    return value


def _resource_id(value: str) -> str:
    return canonical_id(_checked(value))


def _project_id(value: str) -> str:
    return canonical_project_id(_checked(value))


# Whatever the file's spelling (upper case, no dashes), ids are held in their canonical form.
ResourceId = Annotated[str, AfterValidator(_resource_id)]
ProjectId = Annotated[str, AfterValidator(_project_id)]
SdrsCode = Annotated[str, Field(pattern=r"^SDRS\.\d{4}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _legacy_text(value: str | None) -> str | None:
    if value is not None and len(value.encode()) > 255:
        raise ValueError("a legacy name or description is at most 255 bytes")
    return value


# Legacy names and descriptions are at most 255 bytes (the legacy create and update pages), or null.
LegacyText = Annotated[str | None, AfterValidator(_legacy_text)]


class LegacyPair(_Strict):
    """A legacy pair of the group and the SDRS pair on the same production disk."""

    id: ResourceId  # the legacy pair id old clients know
    sdrs_id: ResourceId  # the SDRS pair that serves it
    volume_id: ResourceId | None = None  # the production disk that matched them (evidence)
    name: LegacyText  # required, null allowed: what the legacy endpoint showed
    description: LegacyText


class LegacyIdentity(_Strict):
    """The group as old clients knew it before the mapping (`shim discover` records it)."""

    name: LegacyText  # required, null allowed
    description: LegacyText
    pairs: list[LegacyPair] = []

    @model_validator(mode="after")
    def _one_to_one(self) -> LegacyIdentity:
        for field_name in ("id", "sdrs_id"):
            first: dict[str, int] = {}
            for index, pair in enumerate(self.pairs):
                key = id_key(getattr(pair, field_name))
                if key in first:
                    raise _InvalidEntry(f"pairs[{index}].{field_name}", f"{getattr(pair, field_name)} is already "
                                        f"in pairs[{first[key]}]: a legacy pair corresponds to one SDRS pair")
                first[key] = index
        return self

    def identity(self) -> GroupIdentity:
        return GroupIdentity(self.name, self.description, tuple(
            PairIdentity(pair.id, pair.sdrs_id, pair.name, pair.description, pair.volume_id) for pair in self.pairs))


class ConsistencyGroupMapping(_Strict):
    project_id: ProjectId
    replication_consistency_group_id: ResourceId
    protection_group_id: ResourceId
    mode: Mode | None = None  # None: the project's default, else sdrs
    legacy: LegacyIdentity | None = None  # None: reads show SDRS's ids, names and descriptions


class ProjectDefault(_Strict):
    project_id: ProjectId
    mode: Mode


class ConsistencyGroupsFile(_Strict):
    projects: list[ProjectDefault] = []
    consistency_groups: list[ConsistencyGroupMapping] = []

    @model_validator(mode="after")
    def _each_id_once_per_project(self) -> ConsistencyGroupsFile:
        for field_name in ("replication_consistency_group_id", "protection_group_id"):
            first_entry: dict[tuple[str, str], int] = {}
            for index, entry in enumerate(self.consistency_groups):
                key = (id_key(entry.project_id), id_key(getattr(entry, field_name)))
                if key in first_entry:
                    raise _InvalidEntry(f"consistency_groups[{index}].{field_name}",
                                        f"{getattr(entry, field_name)} is already mapped by "
                                        f"consistency_groups[{first_entry[key]}] in project {entry.project_id}")
                first_entry[key] = index
        return self

    @model_validator(mode="after")
    def _each_legacy_pair_once_per_project(self) -> ConsistencyGroupsFile:
        """A legacy pair id (or an SDRS pair) belongs to one group's correspondence in its project."""
        for field_name in ("id", "sdrs_id"):
            first: dict[tuple[str, str], str] = {}
            for index, entry in enumerate(self.consistency_groups):
                for pair_index, pair in enumerate(entry.legacy.pairs if entry.legacy is not None else []):
                    location = f"consistency_groups[{index}].legacy.pairs[{pair_index}].{field_name}"
                    key = (id_key(entry.project_id), id_key(getattr(pair, field_name)))
                    if key in first:
                        raise _InvalidEntry(location, f"{getattr(pair, field_name)} is already in {first[key]}")
                    first[key] = location
        return self

    @model_validator(mode="after")
    def _each_project_once(self) -> ConsistencyGroupsFile:
        first_entry: dict[str, int] = {}
        for index, project in enumerate(self.projects):
            key = id_key(project.project_id)
            if key in first_entry:
                raise _InvalidEntry(f"projects[{index}].project_id", f"{project.project_id} already has its "
                                    f"default mode in projects[{first_entry[key]}]")
            first_entry[key] = index
        return self

    @model_validator(mode="after")
    def _migrated_projects_serve_every_entry_from_sdrs(self) -> ConsistencyGroupsFile:
        """A project whose default is `sdrs` has switched the legacy RCG API off: none of its groups
        can be served by the legacy endpoint any more."""
        migrated = {id_key(project.project_id): index for index, project in enumerate(self.projects)
                    if project.mode == "sdrs"}
        for index, entry in enumerate(self.consistency_groups):
            if entry.mode not in (None, "sdrs") and id_key(entry.project_id) in migrated:
                raise _InvalidEntry(
                    f"consistency_groups[{index}].mode",
                    f"{entry.mode} is not possible in project {entry.project_id}: projects"
                    f"[{migrated[id_key(entry.project_id)]}] makes it fully migrated (mode sdrs, no legacy RCG "
                    f"endpoint); to roll one group back, remove the project's default first")
        return self

    def resolved(self) -> list[GroupMapping]:
        """Every entry with its effective mode: its own, else its project's default, else sdrs."""
        defaults = {id_key(project.project_id): project.mode for project in self.projects}
        resolved = []
        for entry in self.consistency_groups:
            project_default = defaults.get(id_key(entry.project_id))
            mode, source = ((entry.mode, "entry") if entry.mode is not None
                            else (project_default, "project") if project_default is not None
                            else (DEFAULT_MODE, "default"))
            identity = entry.legacy.identity() if entry.legacy is not None else None
            resolved.append(GroupMapping(entry.project_id, entry.replication_consistency_group_id,
                                         entry.protection_group_id, mode, source, identity))  # type: ignore[arg-type]
        return resolved


class _InvalidEntry(ValueError):
    """A rule across entries broken: `location` names the entry and field at fault."""

    def __init__(self, location: str, problem: str) -> None:
        self.location = location
        super().__init__(problem)


def _validated(model: type[BaseModel], path: Path, data: Any) -> Any:
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        invalid = _find_invalid_entry(err)
        if invalid is not None:
            raise ConfigError(f"{path}: {invalid.location}: {invalid}") from None
        raise ConfigError(describe_validation_error(str(path), err)) from None


def _find_invalid_entry(err: ValidationError) -> _InvalidEntry | None:
    """The cross-entry rule broken, its location made whole (a nested model's rule names its own field)."""
    for item in err.errors():
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, _InvalidEntry):
            if item["loc"]:
                return _InvalidEntry(f"{error_location(tuple(item['loc']))}.{cause.location}", str(cause))
            return cause
    return None


def _load_table(directory: Path, file_name: str, model: type[BaseModel]) -> Any:
    """A table from the mappings directory, or the one shipped with the shim when it has none."""
    path = directory / file_name
    if not path.exists():
        path = default_mappings_dir() / file_name
    return _validated(model, path, read_yaml(path, "mapping file"))


def load_mappings(directory: Path) -> Mappings:
    """Load and validate every table; ConfigError names the file, entry and field at fault."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: mappings directory does not exist")
    groups_path = directory / CONSISTENCY_GROUPS_FILE
    groups: ConsistencyGroupsFile = _validated(
        ConsistencyGroupsFile, groups_path, read_yaml(groups_path, "mapping file")
    )
    errors: SdrsErrorTable = _load_table(directory, SDRS_ERRORS_FILE, SdrsErrorTable)
    statuses: StatusTable = _load_table(directory, STATUSES_FILE, StatusTable)
    return Mappings(
        groups={(id_key(entry.project_id), id_key(entry.rcg_id)): entry for entry in groups.resolved()},
        errors=errors,
        statuses=statuses,
        source=directory,
        project_modes={id_key(project.project_id): project.mode for project in groups.projects},
    )


def check_consistency_groups(path: Path, data: Any) -> None:
    """Validate a consistency-groups document (`shim discover --write` before it writes one) as
    `load_mappings` would; ConfigError names the file, entry and field."""
    _validated(ConsistencyGroupsFile, path, data)
