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

HISTORY = 5  # the last comparisons kept whole per group, newest first
TIMELINE = 50  # the last comparisons and dry runs kept in brief (the console's timeline and history)

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
    # `first_at`: the first comparison (the evidence's span); `differing_since`: each field the last
    # finished comparison found different -> when it started to differ without a match in between;
    # `last_mismatch`: the last mismatch whole, however many comparisons followed; `timeline`: the
    # last TIMELINE comparisons and dry runs in brief, newest first.
    return {"comparisons": {"match": 0, "mismatch": 0, "error": 0}, "mismatched_fields": {}, "last": [],
            "dry_runs": {"agree": 0, "disagree": 0, "error": 0}, "last_dry_run": None,
            "first_at": None, "differing_since": {}, "last_mismatch": None, "timeline": []}


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
    since = dict(record["differing_since"])
    if comparison.result != "error":  # an error says nothing about whether the sides agree
        since = {name: since.get(name, comparison.at) for name in comparison.differences}
    brief = {"at": comparison.at, "kind": "comparison", "result": comparison.result, "trigger": comparison.trigger,
             "fields": sorted(comparison.differences), "error": comparison.error}
    return {**record, "comparisons": counts, "mismatched_fields": fields, "last": last,
            "first_at": record["first_at"] if record["first_at"] is not None else comparison.at,
            "differing_since": since,
            "last_mismatch": comparison.to_document() if comparison.result == "mismatch" else record["last_mismatch"],
            "timeline": [brief, *record["timeline"]][:TIMELINE]}


def with_dry_run(document: dict[str, Any] | None, outcome: Literal["agree", "disagree", "error"],
                 dry_run: dict[str, Any]) -> dict[str, Any]:
    record = _normalised(document)
    counts = dict(record["dry_runs"])
    counts[outcome] = counts.get(outcome, 0) + 1
    brief = {"at": dry_run.get("at"), "kind": "dry_run", "result": outcome, "action": dry_run.get("action"),
             "legacy_status": dry_run.get("legacy_status"), "would_answer": dry_run.get("would_answer")}
    return {**record, "dry_runs": counts, "last_dry_run": {**dry_run, "outcome": outcome},
            "timeline": [brief, *record["timeline"]][:TIMELINE]}


def read_record(document: dict[str, Any] | None) -> dict[str, Any]:
    """The record as the report shows it."""
    return _normalised(document)
