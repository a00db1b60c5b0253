"""`shim mode set` and `shim mode show`: the fleet's modes in the shared state store (README, One switch
for the fleet). The rules are translate/fleet.py's, the store's keys state/fleet.py's."""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Any

from shim.config import Settings
from shim.state import fleet as fleet_store
from shim.state.backends import build_store
from shim.state.store import StoreUnavailable
from shim.translate import fleet as rules
from shim.translate.legacy import id_key
from shim.translate.tables import Mappings
from shim.validation import ConfigError

NO_DEFAULT = "none"  # `shim mode set --project P none`: the project has no default mode any more


def default_who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def target_of(mappings: Mappings, group: str | None, project: str | None) -> tuple[str, str]:
    """(kind, name) the command names; ConfigError when the mapping file does not map it."""
    if group is not None:
        found = [key for key in mappings.groups if key[1] == id_key(group)]
        if not found:
            raise ConfigError(f"--group {group}: the mapping file maps no such replication consistency group")
        if len(found) > 1:
            raise ConfigError(f"--group {group}: mapped in several projects ({', '.join(k[0] for k in found)})")
        return "group", f"{found[0][0]}:{found[0][1]}"
    assert project is not None
    if not any(key[0] == id_key(project) for key in mappings.groups) and id_key(project) not in mappings.project_modes:
        raise ConfigError(f"--project {project}: the mapping file maps nothing in this project")
    return "project", id_key(project)


async def set_mode(settings: Settings, mappings: Mappings, group: str | None, project: str | None, mode: str,
                   who: str) -> dict[str, Any]:
    kind, name = target_of(mappings, group, project)
    if kind == "group" and mode == NO_DEFAULT:
        raise ConfigError("a group's mode is legacy, shadow or sdrs (`none` is for a project's default)")
    store = build_store(settings.state)
    try:
        await store.open()
        _, record = await fleet_store.switch(store, mappings, kind, name, None if mode == NO_DEFAULT else mode, who)
    except StoreUnavailable as err:
        raise ConfigError(f"state store: {err}") from None
    except ValueError as err:
        raise ConfigError(f"--{kind} {group or project}: {err}") from None
    finally:
        await store.close()
    return record


async def show(settings: Settings, mappings: Mappings) -> dict[str, Any]:
    store = build_store(settings.state)
    try:
        await store.open()
        fleet = await fleet_store.read_modes(store)
        members = list(((await store.get(fleet_store.MEMBERS_KEY)) or {}).get("members") or {})
        beats = {member: await store.get(fleet_store.HEARTBEAT_PREFIX + member) for member in members}
        audit = ((await store.get(fleet_store.AUDIT_KEY)) or {}).get("records") or []
    except StoreUnavailable as err:
        raise ConfigError(f"state store: {err}") from None
    finally:
        await store.close()
    now = time.time()
    groups = []
    for (project, rcg), entry in sorted(mappings.groups.items()):
        record = fleet.groups.get(f"{project}:{rcg}")
        groups.append({"project_id": entry.project_id, "rcg_id": entry.rcg_id,
                       "mode": record.mode if record else entry.mode, "file_mode": entry.mode,
                       "version": record.version if record else None,
                       "previous": record.previous if record else None,
                       "switching": bool(record and record.switching), "seeded": record is not None})
    projects = [{"project_id": name, "mode": record.mode, "version": record.version, "previous": record.previous,
                 "switching": record.switching} for name, record in sorted(fleet.projects.items())]
    shims = [{"shim_id": member, "serves_version": (beat or {}).get("version"),
              "heartbeat_age_seconds": None if not beat else round(now - float(beat.get("at") or 0), 1)}
             for member, beat in sorted(beats.items())]
    return {"mode_version": fleet.version, "groups": groups, "projects": projects, "shims": shims,
            "audit": audit[-20:]}


def render(shown: dict[str, Any]) -> str:
    lines = [f"mode version {shown['mode_version']}", "", "group (project/rcg)  mode  version  state"]
    for group in shown["groups"]:
        state = "switching" if group["switching"] else ("not seeded yet: the file's mode" if not group["seeded"]
                                                        else "served")
        lines.append(f"{group['project_id']}/{group['rcg_id']}  {group['mode']}  {group['version']}  {state}")
    for project in shown["projects"]:
        lines.append(f"project {project['project_id']}  default {project['mode'] or NO_DEFAULT}  "
                     f"{project['version']}  {'switching' if project['switching'] else 'served'}")
    lines += ["", "shims (id, mode version served, heartbeat age)"]
    lines += [f"{shim['shim_id']}  {shim['serves_version']}  {shim['heartbeat_age_seconds']} s"
              for shim in shown["shims"]] or ["(none)"]
    lines += ["", "last switches"]
    lines += [json.dumps(record, sort_keys=True) for record in shown["audit"]] or ["(none)"]
    return "\n".join(lines) + "\n"


# How long a switch takes, for the command's last line.
BOUND_NOTE = (f"every shim stops serving the old side within {rules.REFRESH_SECONDS:g} s (its next refresh) and "
              f"the new side serves once every shim acknowledged it, at most {rules.SWITCH_BOUND_SECONDS:g} s after "
              f"each shim saw it")
