"""What a mapping reload changes about who serves which group (pure), for the audit lines SIGHUP
writes: one per group whose effective mode changed, one per project whose default changed."""

from __future__ import annotations

from shim.translate.tables import Mappings

UNMAPPED = "unmapped"  # the "mode" of a group the file does not name: the legacy endpoint serves it
NO_DEFAULT = "none"


def mode_changes(old: Mappings, new: Mappings) -> list[dict[str, str | None]]:
    """Every group whose effective mode differs between two loads (added and removed entries too)."""
    changes: list[dict[str, str | None]] = []
    for key in sorted(set(old.groups) | set(new.groups)):
        before, after = old.groups.get(key), new.groups.get(key)
        old_mode = before.mode if before is not None else UNMAPPED
        new_mode = after.mode if after is not None else UNMAPPED
        if old_mode != new_mode:
            entry = after or before
            assert entry is not None
            changes.append({"project_id": entry.project_id, "rcg_id": entry.rcg_id,
                            "protection_group_id": entry.protection_group_id, "old_mode": old_mode,
                            "new_mode": new_mode, "mode_source": after.mode_source if after else None})
    return changes


def project_mode_changes(old: Mappings, new: Mappings) -> list[dict[str, str]]:
    """Every project whose default mode differs (`sdrs`: fully migrated)."""
    return [{"project_id": project, "old_mode": old.project_modes.get(project, NO_DEFAULT),
             "new_mode": new.project_modes.get(project, NO_DEFAULT)}
            for project in sorted(set(old.project_modes) | set(new.project_modes))
            if old.project_modes.get(project) != new.project_modes.get(project)]
