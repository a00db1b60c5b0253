"""The migration report: per mapped group its mode, its shadow comparisons and dry runs, and the last
action the shim sent for it with its job outcome. JSON for `GET /migration`, a table for `shim report`.

Built from the mapping tables and the state store only (`build_report`), so `shim report` run beside a
shim that shares its store (the SQLite file, or Redis) shows what that shim recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from shim.mappings import CONSISTENCY_GROUPS_FILE, Mappings
from shim.migration.compare import COMPARED_FIELDS
from shim.migration.readiness import NextStepContext, readiness
from shim.migration.records import read_record, shadow_key
from shim.state.group_notes import retired_key
from shim.state.records import GroupRecord, group_key
from shim.state.store import StateStore, StoreUnavailable
from shim.translate.fleet import group_name
from shim.translate.tables import GroupMapping

READS_AT_ONCE = 16  # store reads in flight while a report is built
TIMELINE_SHOWN = 20  # the timeline entries each group shows in the whole report (one group's: all kept)


def iso(seconds: float | None) -> str | None:
    """Wall-clock seconds as `2024-05-01T12:00:00Z`."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_action(document: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """The duplicate-action guard's record of the group as the report shows it: the last action this
    shim (or one sharing its store) sent, and what it knows of its jobs. `finished` means the jobs were
    seen ending; whether they succeeded is SDRS's answer to GET /v1/{project_id}/jobs/{job_id}."""
    if not document:
        return None
    record = GroupRecord.from_document(document)
    if not record.action and record.sending_since is None:
        return None
    if record.sending_since is not None or record.settle_until > now:
        outcome = "unknown"  # a POST whose answer was lost: no action until the settle time has passed
    elif record.pending_jobs(now):
        outcome = "running"
    else:
        outcome = "finished" if not record.jobs_pending else "not seen finished"
    recorded_at = record.extra.get("recorded_at")
    recorded_at = float(recorded_at) if isinstance(recorded_at, int | float) else None
    return {"action": record.action or None, "job_ids": list(record.job_ids),
            "started_at": iso(record.started_at or None), "outcome": outcome,
            "settle_until": iso(record.settle_until) if record.settle_until > now else None,
            # How old that knowledge is: the guard writes the record when it acts and when the next
            # action reads the jobs, so a "running" job may have finished since (see `sdrs`).
            "recorded_at": iso(recorded_at),
            "sdrs": None}


# (project_id, job_id) -> the job as SDRS answers it now ({"status", ...}), None when SDRS has none;
# raises when it cannot be read.
JobReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]
UNFINISHED = ("running", "not seen finished")


async def read_jobs(action: dict[str, Any], project_id: str, read_job: JobReader) -> None:
    """Ask SDRS for the jobs of a last action the record shows unfinished: `sdrs` holds what it says
    and when it was asked, and the outcome becomes SDRS's ("succeeded", "failed", "running")."""
    if action["outcome"] not in UNFINISHED or not action["job_ids"]:
        return
    try:
        jobs = [await read_job(project_id, job_id) for job_id in action["job_ids"]]
    except Exception as err:  # noqa: BLE001 - a report shows what it could not read
        action["sdrs"] = {"read_at": iso(time.time()), "error": str(err)[:300], "jobs": None}
        return
    action["sdrs"] = {"read_at": iso(time.time()), "error": None,
                      "jobs": [{"job_id": job_id, **(job or {"status": "NOT_FOUND"})}
                               for job_id, job in zip(action["job_ids"], jobs, strict=True)]}
    statuses = {(job or {}).get("status") for job in jobs}
    if statuses & {"INIT", "RUNNING"}:
        action["outcome"] = "running"
    elif "FAIL" in statuses:
        action["outcome"] = "failed"
    elif statuses == {"SUCCESS"}:
        action["outcome"] = "succeeded"


def _at(item: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if item is None else {**item, "at": iso(_seconds(item.get("at")))}


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def shadow_summary(document: dict[str, Any] | None, timeline: int | None = TIMELINE_SHOWN) -> dict[str, Any]:
    """The group's shadow record for the report, times as ISO strings. `first_at`: the first comparison;
    `evidence_seconds`: from it to the latest; `differing_since`: each field the latest finished
    comparison found different, since when; `timeline`: comparisons and dry runs in brief, newest first
    (`timeline` of them, None: all the record keeps)."""
    record = read_record(document)
    last = [_at(comparison) for comparison in record["last"]]
    first = _seconds(record["first_at"])
    latest = max((at for at in (_seconds(item.get("at")) for item in record["timeline"] + record["last"]
                                if item.get("kind", "comparison") == "comparison") if at is not None), default=None)
    since = {name: iso(_seconds(at)) for name, at in sorted(record["differing_since"].items())}
    entries = record["timeline"] if timeline is None else record["timeline"][:timeline]
    return {"comparisons": record["comparisons"], "mismatched_fields": record["mismatched_fields"], "last": last,
            "dry_runs": record["dry_runs"], "last_dry_run": _at(record["last_dry_run"]),
            "first_at": iso(first), "latest_at": iso(latest),
            "evidence_seconds": latest - first if first is not None and latest is not None else None,
            "differing_since": since, "last_mismatch": _at(record["last_mismatch"]),
            "timeline": [_at(item) for item in entries], "timeline_kept": len(record["timeline"])}


def deleted_group(note: dict[str, Any] | None) -> dict[str, Any] | None:
    """When the shim deleted the entry's protection group (a legacy DELETE of the mapped group): the
    entry is retired and should leave the mapping file."""
    if not note:
        return None
    return {"at": iso(float(note.get("deleted_at") or 0) or None), "job_id": note.get("job_id")}


def identity_report(entry: GroupMapping) -> dict[str, Any] | None:
    """The group as old clients knew it (the entry's `legacy:`), None when nothing was recorded."""
    identity = entry.identity
    if identity is None:
        return None
    return {"name": identity.name, "description": identity.description,
            "pairs": [{"legacy_id": pair.legacy_id, "sdrs_id": pair.sdrs_id, "volume_id": pair.volume_id,
                       "name": pair.name, "description": pair.description} for pair in identity.pairs]}


def group_report(entry: GroupMapping, shadow: dict[str, Any] | None, guard: dict[str, Any] | None,
                 now: float, retired: dict[str, Any] | None = None, timeline: int | None = TIMELINE_SHOWN,
                 mode_change: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"project_id": entry.project_id, "rcg_id": entry.rcg_id,
            "protection_group_id": entry.protection_group_id, "mode": entry.mode, "mode_source": entry.mode_source,
            "mode_changed": mode_change, "identity": identity_report(entry),
            "shadow": shadow_summary(shadow, timeline),
            "last_action": last_action(guard, now), "deleted": deleted_group(retired)}


def summary(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Groups per mode, per project and mode, and per readiness verdict."""
    by_mode: dict[str, int] = {"legacy": 0, "shadow": 0, "sdrs": 0}
    by_project: dict[str, dict[str, int]] = {}
    by_verdict: dict[str, int] = {}
    for group in groups:
        by_mode[group["mode"]] = by_mode.get(group["mode"], 0) + 1
        project = by_project.setdefault(group["project_id"], {"legacy": 0, "shadow": 0, "sdrs": 0})
        project[group["mode"]] = project.get(group["mode"], 0) + 1
        verdict = group["readiness"]["verdict"]
        by_verdict[verdict] = by_verdict.get(verdict, 0) + 1
    return {"groups": len(groups), "by_mode": by_mode, "by_project": by_project, "by_verdict": by_verdict}


ModeChanges = dict[tuple[str, str], dict[str, Any]]  # (project_id, rcg_id) -> the last mode change seen


def latest_mode_changes(mappings: Mappings, audit: dict[str, Any] | None, seen_here: ModeChanges) -> ModeChanges:
    """Each mapped group's last mode change: the fleet's audit record (`shim mode set`: who, when) or a
    reload this process made, whichever is later."""
    by_name = {group_name(entry.project_id, entry.rcg_id): (entry.project_id, entry.rcg_id)
               for entry in mappings.groups.values()}
    changes: ModeChanges = dict(seen_here)
    records = (audit or {}).get("records")
    for record in records if isinstance(records, list) else []:
        key = by_name.get(str(record.get("name"))) if isinstance(record, dict) and record.get("kind") == "group" \
            else None
        if key is None or not isinstance(record.get("at"), int | float):
            continue
        who = str(record.get("who") or "shim mode set")
        change = {"at": iso(record["at"]), "old_mode": record.get("from"), "new_mode": record.get("to"),
                  "by": who}
        here = seen_here.get(key)
        if who.startswith("file:") and here is not None and here.get("new_mode") == change["new_mode"]:
            continue  # the file change this process reloaded itself: its own record names the file
        if key not in changes or str(changes[key].get("at")) <= str(change["at"]):
            changes[key] = change
    return changes


async def build_report(mappings: Mappings, store: StateStore, read_job: JobReader | None = None, *,
                       only: str | None = None, next_step: NextStepContext | None = None,
                       mode_changes: ModeChanges | None = None) -> dict[str, Any]:
    """Every mapped group with what the store holds for it; without the store, modes only. With
    `read_job`, the jobs of each last action the store shows unfinished are read from SDRS. `only`: the
    groups with that RCG id (or protection group id), each with its whole timeline. Each group carries
    its readiness verdict (shim/migration/readiness.py), its next step's command pointing at
    `next_step`'s files and process."""
    context = next_step or NextStepContext(str(mappings.source / CONSISTENCY_GROUPS_FILE))
    entries = sorted(mappings.groups.values(), key=lambda entry: (entry.project_id, entry.rcg_id))
    if only is not None:
        wanted = only.strip().lower()
        entries = [entry for entry in entries if wanted in (entry.rcg_id.lower(), entry.protection_group_id.lower())]
    available = True
    limit = asyncio.Semaphore(READS_AT_ONCE)

    async def read(key: str) -> dict[str, Any] | None:
        nonlocal available
        if not available:
            return None
        async with limit:
            try:
                return await store.get(key)
            except StoreUnavailable:
                available = False
                return None

    documents = await asyncio.gather(*(
        asyncio.gather(read(shadow_key(entry.project_id, entry.protection_group_id)),
                       read(group_key(entry.project_id, entry.protection_group_id)),
                       read(retired_key(entry.project_id, entry.rcg_id)))
        for entry in entries))
    now = time.time()
    changes = mode_changes or {}
    groups = [group_report(entry, shadow, guard, now, retired, None if only is not None else TIMELINE_SHOWN,
                           changes.get((entry.project_id, entry.rcg_id)))
              for entry, (shadow, guard, retired) in zip(entries, documents, strict=True)]
    if read_job is not None:
        await asyncio.gather(*(read_jobs(group["last_action"], group["project_id"], read_job)
                               for group in groups if group["last_action"] is not None))
    for group in groups:
        group["readiness"] = readiness(group, context)
    return {
        "generated_at": iso(now),
        "state_store": "available" if available else "unavailable",
        "compared_fields": list(COMPARED_FIELDS),
        "projects": [{"project_id": project, "mode": mode, "fully_migrated": mode == "sdrs"}
                     for project, mode in sorted(mappings.project_modes.items())],
        "summary": summary(groups),
        "groups": groups,
    }


# -- the table `shim report` prints ------------------------------------------------------------------


def render_table(report: dict[str, Any]) -> str:
    """The report for a terminal: one row per group, then the details behind the numbers."""
    header = ("PROJECT", "RCG", "MODE", "MATCH", "MISMATCH", "ERROR", "MISMATCHED FIELDS", "LAST COMPARED",
              "LAST ACTION")
    rows = [header]
    for group in report["groups"]:
        shadow = group["shadow"]
        counts = shadow["comparisons"]
        fields = ", ".join(f"{name} x{count}" for name, count in sorted(shadow["mismatched_fields"].items())) or "-"
        compared = shadow["last"][0] if shadow["last"] else None
        when = f"{compared['at']} {compared['result']}" if compared else "-"
        rows.append((group["project_id"], group["rcg_id"], _mode(group), str(counts.get("match", 0)),
                     str(counts.get("mismatch", 0)), str(counts.get("error", 0)), fields, when,
                     _action_cell(group["last_action"])))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"Migration report, {report['generated_at']} (state store {report['state_store']})", ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not report["groups"]:
        lines.append("(no mapped groups)")
    lines += _details(report)
    return "\n".join(lines) + "\n"


def _mode(group: dict[str, Any]) -> str:
    deleted = " (group deleted)" if group.get("deleted") else ""
    return group["mode"] + ("*" if group["mode_source"] == "project" else "") + deleted


def _action_cell(action: dict[str, Any] | None) -> str:
    if action is None:
        return "-"
    verb = (action["action"] or "action").removeprefix("os-").removesuffix("-replication-consistency-group")
    jobs = f" (job {', '.join(action['job_ids'])})" if action["job_ids"] else ""
    sdrs = action.get("sdrs")
    if sdrs is not None:  # read from SDRS for this report
        source = f" per SDRS at {sdrs['read_at']}" if sdrs["error"] is None else " (SDRS not readable)"
    else:
        source = f" as recorded {action['recorded_at']}" if action.get("recorded_at") else ""
    return f"{verb} {action['outcome']}{jobs}{source}"


def _details(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for group in report["groups"]:
        shadow = group["shadow"]
        mismatch = next((comparison for comparison in shadow["last"] if comparison["result"] != "match"), None)
        dry_run = shadow["last_dry_run"]
        deleted = group.get("deleted")
        identity = group.get("identity")
        verdict = group.get("readiness")
        worth_saying = verdict is not None and verdict["verdict"] != "serving"
        if mismatch is None and dry_run is None and deleted is None and identity is None and not worth_saying:
            continue
        lines += ["", f"{group['rcg_id']} ({group['mode']}, protection group {group['protection_group_id']}):"]
        if verdict is not None and worth_saying:
            lines.append(f"  readiness: {verdict['reason']}")
            if verdict["next_step"] is not None:
                lines.append(f"    next: {verdict['next_step']['text']}")
        if identity is not None:
            lines.append(f"  reads as legacy name {_value(identity['name'])}, description "
                         f"{_value(identity['description'])}; pairs (legacy id = SDRS id):")
            lines += [f"    {pair['legacy_id']} = {pair['sdrs_id']}"
                      + (f" (disk {pair['volume_id']})" if pair["volume_id"] else "") for pair in identity["pairs"]]
        if deleted is not None:
            lines.append(f"  protection group deleted through the shim at {deleted['at']} (SDRS job "
                         f"{deleted['job_id']}): remove the entry from the mapping file")
        if mismatch is not None and mismatch["result"] == "mismatch":
            lines.append(f"  last mismatch {mismatch['at']} after {mismatch['trigger']}:")
            lines += [f"    {name}: legacy {_value(values['legacy'])}, sdrs {_value(values['sdrs'])}"
                      for name, values in mismatch["differences"].items()]
        elif mismatch is not None:
            lines.append(f"  last error {mismatch['at']} after {mismatch['trigger']}: {mismatch['error']}")
        if dry_run is not None:
            lines.append(f"  last dry run {dry_run['at']}: {dry_run['action'] or '(no action)'}: legacy answered "
                         f"{dry_run['legacy_status']}, sdrs mode would answer {dry_run['would_answer']} "
                         f"({dry_run['outcome']}; precondition {dry_run['precondition']}, SDRS status "
                         f"{dry_run['sdrs_status'] or 'not read'})")
            lines += [f"    would send {call['method']} {call['path']} {json.dumps(call['body'])}"
                      for call in dry_run["planned_calls"]]
            if dry_run["message"]:
                lines.append(f"    {dry_run['message']}")
    if any(group["mode_source"] == "project" for group in report["groups"]):
        lines += ["", "* the mode is the project's default (projects: in consistency-groups.yaml)"]
    return lines


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_value(item)}" for key, item in value.items()) + "}"
    return "null" if value is None else str(value)
