"""Is a group ready to be served by SDRS? The verdict and its reason, from the report's data (pure).

One rule for every rendering: `/migration`'s JSON carries it (`readiness`), the console shows it, and
`shim report` could print it. The rule is the runbook's (README, Migration): a `shadow` group is ready
when it has comparisons, none of them found a difference, and no dry run disagreed. A group whose
sides differed once but agree now is `review` (a transition caught half-way is harmless; a person
decides); one whose last comparison differs, or whose last dry run disagrees, is `not_ready`.

Verdicts: `ready`, `review`, `not_ready` (the console's "not ready" filter shows these two), `serving`
(mode sdrs: SDRS serves it) and `retired` (its protection group was deleted through the shim).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from shim.translate.legacy import RCG_COLLECTION

NOT_READY = ("not_ready", "review")


@dataclass(frozen=True)
class NextStepContext:
    """Where the commands for the next step point: the mapping file, the process a SIGHUP reloads, the
    config file (for `shim explain`)."""

    mapping_file: str
    pid: int | None = None
    config: str | None = None

    def reload(self) -> str:
        return f"kill -HUP {self.pid}" if self.pid is not None else "send SIGHUP to the shim"

    def set_mode(self, group: dict[str, Any], mode: str) -> dict[str, Any]:
        """The fleet's switch that moves the group to `mode` (`shim mode set`: every shim sharing the
        state store follows), and the mapping edit that does the same from the file."""
        command = shlex.join(["shim", "mode", "set", "--config", self.config or "shim.yaml",
                              "--group", group["rcg_id"], mode])
        return {"summary": f"switch to {mode}", "file": self.mapping_file,
                "edit": f"mode: {mode}",
                "entry": {"project_id": group["project_id"],
                          "replication_consistency_group_id": group["rcg_id"]},
                "command": command,
                "text": (f"{command} (or, in {self.mapping_file}, set `mode: {mode}` on the entry with "
                         f"replication_consistency_group_id: {group['rcg_id']}, then: {self.reload()})")}

    def explain(self, group: dict[str, Any], summary: str) -> dict[str, Any]:
        url = f"/v2/{group['project_id']}/{RCG_COLLECTION}/{group['rcg_id']}"
        command = shlex.join(["shim", "explain", "--config", self.config or "shim.yaml", "GET", url])
        return {"summary": summary, "file": None, "edit": None, "entry": None, "command": command,
                "text": f"{summary}: {command}"}


def duration(seconds: float) -> str:
    """`3 days`, `5 hours`, `12 minutes`, `40 seconds` (the largest whole unit)."""
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = int(seconds)
    return f"{count} second{'s' if count != 1 else ''}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('ch') else 's'}"


def readiness(group: dict[str, Any], context: NextStepContext) -> dict[str, Any]:
    """`{"verdict", "reason", "next_step"}` for one group of the report (`group_report`'s dict: its
    times are only quoted; `shadow.evidence_seconds` is the span from the first comparison to the last)."""
    mode = group["mode"]
    deleted = group.get("deleted")
    if deleted:
        return {"verdict": "retired",
                "reason": f"protection group deleted through the shim at {deleted['at']} (SDRS job "
                          f"{deleted['job_id']})",
                "next_step": {"summary": "remove the entry", "file": context.mapping_file, "edit": None,
                              "entry": {"project_id": group["project_id"],
                                        "replication_consistency_group_id": group["rcg_id"]},
                              "command": context.reload(),
                              "text": f"remove the entry with replication_consistency_group_id: {group['rcg_id']} "
                                      f"from {context.mapping_file}, then: {context.reload()}"}}
    if mode == "sdrs":
        return {"verdict": "serving", "reason": "served by SDRS (mode sdrs)", "next_step": None}
    if mode == "legacy":
        return {"verdict": "not_ready", "reason": "not ready: mode legacy, nothing is compared (SDRS is never asked)",
                "next_step": context.set_mode(group, "shadow")}
    return _shadow_verdict(group, context)


def _shadow_verdict(group: dict[str, Any], context: NextStepContext) -> dict[str, Any]:
    shadow = group["shadow"]
    counts, dry_runs = shadow["comparisons"], shadow["dry_runs"]
    matches, mismatches, errors = (int(counts.get(key, 0)) for key in ("match", "mismatch", "error"))
    agree, disagree = int(dry_runs.get("agree", 0)), int(dry_runs.get("disagree", 0))
    finished = matches + mismatches
    differing: dict[str, Any] = shadow.get("differing_since") or {}
    errors_note = f" ({_plural(errors, 'comparison')} could not be made)" if errors else ""
    if differing:
        names = sorted(differing)
        since = min(str(at) for at in differing.values())
        verb = "differs" if len(names) == 1 else "differ"
        return {"verdict": "not_ready",
                "reason": f"not ready: {', '.join(names)} {verb} since {since} "
                          f"({_plural(mismatches, 'mismatch')} in "
                          f"{_plural(finished, 'comparison')})",
                "next_step": context.explain(group, "see what each side shows")}
    if finished == 0:
        last_error = next((item.get("error") for item in shadow["last"] if item.get("result") == "error"), None)
        reason = "not ready: no comparison yet"
        if errors:
            reason = f"not ready: no comparison finished ({_plural(errors, 'error')}; last: {last_error})"
        return {"verdict": "not_ready", "reason": reason,
                "next_step": {"summary": "wait for reads", "file": None, "edit": None, "entry": None,
                              "command": None,
                              "text": "a comparison follows each read of the group through the shim"}}
    last_dry_run = shadow.get("last_dry_run")
    if last_dry_run and last_dry_run.get("outcome") == "disagree":
        return {"verdict": "not_ready",
                "reason": f"not ready: the last dry run disagrees ({last_dry_run.get('action') or 'no action'}: "
                          f"legacy answered {last_dry_run.get('legacy_status')}, sdrs mode would answer "
                          f"{last_dry_run.get('would_answer')}, at {last_dry_run.get('at')})",
                "next_step": context.explain(group, "see what sdrs mode would send")}
    span = _span(shadow)
    evidence = f"{_plural(finished, 'comparison')}{span}"
    dry = f"{_plural(agree, 'dry run')} agree{'s' if agree == 1 else ''}" if agree or disagree else "no dry run yet"
    if mismatches or disagree:
        past = []
        if mismatches:
            fields = ", ".join(sorted(shadow["mismatched_fields"])) or "fields"
            last = (shadow.get("last_mismatch") or {}).get("at")
            past.append(f"{_plural(mismatches, 'earlier mismatch')} ({fields})"
                        + (f", the last at {last}" if last else ""))
        if disagree:
            past.append(f"{_plural(disagree, 'dry run')} disagreed")
        return {"verdict": "review",
                "reason": f"review: agrees now, but {'; '.join(past)}; {evidence}, {dry}{errors_note}",
                "next_step": context.set_mode(group, "sdrs")}
    return {"verdict": "ready", "reason": f"ready: {evidence}, 0 mismatches, {dry}{errors_note}",
            "next_step": context.set_mode(group, "sdrs")}


def _span(shadow: dict[str, Any]) -> str:
    seconds = shadow.get("evidence_seconds")
    return "" if seconds is None else f" over {duration(float(seconds))}"
