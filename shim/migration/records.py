"""What shadow mode remembers per group in the state store (pure): counts, the last comparisons and
the last dry run, under `shadow:{project}:{protection group}` (ids by `id_key`).

Written with unfenced read-modify-write, one at a time per group within a process: two workers (or
shims sharing a store) comparing the same group at the same instant may lose one count, which a report
can live with; nothing here ever gates a client's answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from shim.translate.legacy import id_key

HISTORY = 5  # the last comparisons kept per group, newest first

Result = Literal["match", "mismatch", "error"]


def shadow_key(project_id: str, group_id: str) -> str:
    return f"shadow:{id_key(project_id)}:{id_key(group_id)}"


@dataclass(frozen=True)
class Comparison:
    at: float  # wall-clock seconds
    result: Result
    trigger: str  # the read it followed: "GET group", "GET groups", "GET pair", "GET pairs"
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> {"legacy", "sdrs"}
    error: str | None = None
    request_id: str | None = None

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


def empty_record() -> dict[str, Any]:
    return {"comparisons": {"match": 0, "mismatch": 0, "error": 0}, "mismatched_fields": {}, "last": [],
            "dry_runs": {"agree": 0, "disagree": 0, "error": 0}, "last_dry_run": None}


def _normalised(document: dict[str, Any] | None) -> dict[str, Any]:
    """A stored record with every key present (a record from an older version, or none, reads as empty)."""
    record = empty_record()
    if isinstance(document, dict):
        record.update({key: value for key, value in document.items() if key in record})
    return record


def with_comparison(document: dict[str, Any] | None, comparison: Comparison) -> dict[str, Any]:
    record = _normalised(document)
    counts = dict(record["comparisons"])
    counts[comparison.result] = counts.get(comparison.result, 0) + 1
    fields = dict(record["mismatched_fields"])
    for name in comparison.differences:
        fields[name] = fields.get(name, 0) + 1
    last = [comparison.to_document(), *record["last"]][:HISTORY]
    return {**record, "comparisons": counts, "mismatched_fields": fields, "last": last}


def with_dry_run(document: dict[str, Any] | None, outcome: Literal["agree", "disagree", "error"],
                 dry_run: dict[str, Any]) -> dict[str, Any]:
    record = _normalised(document)
    counts = dict(record["dry_runs"])
    counts[outcome] = counts.get(outcome, 0) + 1
    return {**record, "dry_runs": counts, "last_dry_run": {**dry_run, "outcome": outcome}}


def read_record(document: dict[str, Any] | None) -> dict[str, Any]:
    """The record as the report shows it."""
    return _normalised(document)
