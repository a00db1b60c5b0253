"""SIGHUP: load config and mappings again and swap them in as one step; a bad reload changes nothing.

Only the settings that handlers read per request can change this way. The rest (listen address,
workers, upstream URLs and timeouts, pool and parser limits, lifecycle, ...) are built into sockets,
sessions and objects at start: a reload keeps the running values and a warning names the keys.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shim import tls
from shim.config import Settings, load_settings
from shim.credentials import load_key_ring
from shim.mappings import load_mappings
from shim.migration.modes import mode_changes, project_mode_changes
from shim.migration.report import iso
from shim.validation import ConfigError
from shim.web.shim_state import ShimState

log = logging.getLogger("shim.reload")
migration_log = logging.getLogger("shim.migration")

# Read per request (or per log record), so a new value takes effect at once.
RELOADABLE = (
    "mappings",
    "log_level",
    "limits.action_body_bytes",
    "limits.max_concurrent_translated",
    "limits.sdrs_list_items",
    "timeouts.sdrs_list",
    "actions.completion",
    "actions.confirm_timeout_seconds",
    "actions.poll_initial_seconds",
    "actions.poll_max_seconds",
    "limits.signed_body_bytes",
    "aksk",  # the key files are read again too: a rotated Secret takes effect on SIGHUP
    "shadow",
)
# While https is served, its certificate and key are read again (into the running listener); turning
# https on or off needs a restart.
RELOADABLE_WHILE_TLS = ("listen.tls",)


def reload_config(state: ShimState, config_path: Path, announce: bool = True) -> bool:
    """Reload `config_path` and its mappings into `state`; False (and one error line) if unusable.
    The file's mode changes reach the fleet's modes at the view's next refresh (`shim serve` awaits it
    before it announces the reload: `announce=False`, then `announce_reload`)."""
    source = str(config_path)
    try:
        new = load_settings(config_path)
        mappings = load_mappings(new.mappings)
        keys = load_key_ring(new.aksk, source)
        if state.server_tls is not None and new.listen.tls is not None:
            tls.reload_certificate(state.server_tls, new.listen.tls, source)  # all checked before it changes
    except ConfigError as err:
        return _failed(state, str(err))
    except Exception as err:  # an unreadable file and the like: still one line, still the old state
        return _failed(state, f"{config_path}: {type(err).__name__}: {err}")
    effective, kept = merge_reloadable(state.settings, new)
    if kept:
        log.warning("reload: these settings change only on restart; the running values are kept: %s",
                    ", ".join(kept), extra={"kept_keys": kept})
    old_file = state.file_mappings
    changes, project_changes = mode_changes(old_file, mappings), project_mode_changes(old_file, mappings)
    state.settings, state.file_mappings, state.keys = effective, mappings, keys  # no await in between: one step
    state.fleet.file_changed(old_file, mappings)
    state.fleet.publish()  # the file's entries with the fleet's modes, as known now
    for change in changes:  # a mode change is a mapping change: audited, one line per group
        migration_log.info("mode changed: %s -> %s", change["old_mode"], change["new_mode"], extra=change)
        state.mode_changes[(str(change["project_id"]), str(change["rcg_id"]))] = {
            "at": iso(time.time()), "old_mode": change["old_mode"], "new_mode": change["new_mode"],
            "by": f"a reload (SIGHUP) of {source}"}
    for project_change in project_changes:
        migration_log.info("project default mode changed: %s -> %s", project_change["old_mode"],
                           project_change["new_mode"], extra=project_change)
    state.config_digest = state.metrics.config_loaded(effective, mappings)
    state.metrics.config_reloads.labels("success").inc()
    logging.getLogger().setLevel(effective.log_level.upper())
    if announce:
        announce_reload(state)
    return True


def announce_reload(state: ShimState) -> None:
    log.info("reloaded config and mappings", extra={
        "config_digest": state.config_digest, "mapped_groups": len(state.file_mappings.groups)})


def _failed(state: ShimState, problem: str) -> bool:
    state.metrics.config_reloads.labels("failure").inc()
    log.error("reload failed; still serving the previous config and mappings: %s", problem,
              extra={"config_digest": state.config_digest})
    return False


def merge_reloadable(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """`running` with the reloadable keys taken from `new`, and the other keys that differ."""
    changed = [path for path in _changed_leaves(running.model_dump(mode="json"), new.model_dump(mode="json"))]
    reloadable = RELOADABLE + (RELOADABLE_WHILE_TLS if running.listen.tls and new.listen.tls else ())
    kept = [path for path in changed if not _is_reloadable(path, reloadable)]
    merged = running
    for path in reloadable:
        merged = _replace(merged, path.split("."), _get(new, path.split(".")))
    return merged, kept


def _is_reloadable(path: str, reloadable: tuple[str, ...]) -> bool:
    return any(path == key or path.startswith(key + ".") for key in reloadable)


def _changed_leaves(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            changed += _changed_leaves(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return changed
    return [prefix] if old != new else []


def _get(model: BaseModel, path: list[str]) -> Any:
    value: Any = model
    for part in path:
        value = getattr(value, part)
    return value


def _replace(model: Any, path: list[str], value: Any) -> Any:
    """A copy of the frozen `model` with the value at `path` replaced."""
    head, rest = path[0], path[1:]
    inner = value if not rest else _replace(getattr(model, head), rest, value)
    return model.model_copy(update={head: inner})
