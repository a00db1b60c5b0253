"""Mapping tables (data, not code): which SDRS protection group answers for which legacy group, and
how SDRS errors read to a legacy client. Loaded from YAML, validated by pydantic, immutable after load.

Files in the mappings directory:
- `consistency-groups.yaml`: legacy replication consistency group -> SDRS protection group, per project.
- `sdrs-errors.yaml`: SDRS error code / HTTP status -> legacy status, and the legacy fault names.
- `statuses.yaml`: SDRS group / pair status -> legacy `status` and `replication_status`.
When the directory has no `sdrs-errors.yaml` or `statuses.yaml`, the table shipped with the shim is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shim.translate.legacy import canonical_id, canonical_project_id, id_key, is_legacy_id
from shim.translate.tables import GroupMapping, Mappings, SdrsErrorTable, StatusTable
from shim.validation import ConfigError, describe_validation_error, read_yaml

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


class ConsistencyGroupMapping(_Strict):
    project_id: ProjectId
    replication_consistency_group_id: ResourceId
    protection_group_id: ResourceId


class ConsistencyGroupsFile(_Strict):
    consistency_groups: list[ConsistencyGroupMapping] = []

    @model_validator(mode="after")
    def _each_id_once_per_project(self) -> ConsistencyGroupsFile:
        for field_name in ("replication_consistency_group_id", "protection_group_id"):
            first_entry: dict[tuple[str, str], int] = {}
            for index, entry in enumerate(self.consistency_groups):
                key = (id_key(entry.project_id), id_key(getattr(entry, field_name)))
                if key in first_entry:
                    raise _DuplicateEntry(index, field_name, getattr(entry, field_name), first_entry[key],
                                          entry.project_id)
                first_entry[key] = index
        return self


class _DuplicateEntry(ValueError):
    def __init__(self, index: int, field_name: str, value: str, first: int, project_id: str) -> None:
        self.location = f"consistency_groups[{index}].{field_name}"
        super().__init__(
            f"{value} is already mapped by consistency_groups[{first}] in project {project_id}"
        )


def _validated(model: type[BaseModel], path: Path, data: Any) -> Any:
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        duplicate = _find_duplicate(err)
        if duplicate is not None:
            raise ConfigError(f"{path}: {duplicate.location}: {duplicate}") from None
        raise ConfigError(describe_validation_error(str(path), err)) from None


def _find_duplicate(err: ValidationError) -> _DuplicateEntry | None:
    for item in err.errors():
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, _DuplicateEntry):
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
        groups={
            (id_key(entry.project_id), id_key(entry.replication_consistency_group_id)): GroupMapping(
                entry.project_id, entry.replication_consistency_group_id, entry.protection_group_id)
            for entry in groups.consistency_groups
        },
        errors=errors,
        statuses=statuses,
        source=directory,
    )
