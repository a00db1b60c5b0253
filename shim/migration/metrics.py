"""Shadow mode's metrics, in the shim's registry. Labels are bounded: results, reasons and the compared
field names (shim/migration/compare.py), never ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shim.migration.compare import COMPARED_FIELDS

SKIP_REASONS = ("rate_limited", "busy", "too_large", "legacy_status", "unreadable", "no_credentials")


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.comparisons = Counter(
            "shim_shadow_comparisons", "Shadow comparisons of a group's legacy answer with the SDRS view, by "
            "result: match, mismatch, error (SDRS or the legacy endpoint could not be read)",
            ["result"], registry=registry,
        )
        self.fields = Counter(
            "shim_shadow_fields", "Compared fields of finished shadow comparisons, by field and result "
            "(match, mismatch)", ["field", "result"], registry=registry,
        )
        self.skipped = Counter(
            "shim_shadow_skipped", "Shadow work not done, by reason: rate_limited (shadow.interval_seconds), "
            "busy (shadow.max_concurrent), too_large (shadow.max_answer_bytes), legacy_status (the legacy "
            "answer was not 200), unreadable (not JSON), no_credentials (no token to read SDRS with)",
            ["reason"], registry=registry,
        )
        self.dry_runs = Counter(
            "shim_shadow_dry_runs", "Shadow actions judged as sdrs mode would have: agree (the same legacy "
            "status as the legacy endpoint's), disagree, error (SDRS could not be read)",
            ["result"], registry=registry,
        )
        for result in ("match", "mismatch", "error"):
            self.comparisons.labels(result)
        for field in COMPARED_FIELDS:
            for result in ("match", "mismatch"):
                self.fields.labels(field, result)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for result in ("agree", "disagree", "error"):
            self.dry_runs.labels(result)
