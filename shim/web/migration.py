"""The web side of the migration tools: shadow mode's hooks around a legacy call, and `GET /migration`.

`watch_shadow` runs before the handler of a translated route (a dictionary lookup when the project has
no shadow group) and hands the legacy passthrough an observer; `after_shadow` runs once the handler
has returned, when the legacy answer has been relayed, and schedules the work off the client's path.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import Any

from aiohttp import web

from shim import __version__
from shim.context import RELAY_OBSERVER, REQUEST_ID
from shim.mappings import CONSISTENCY_GROUPS_FILE
from shim.migration.commands import job_reader
from shim.migration.readiness import NextStepContext
from shim.migration.report import build_report, latest_mode_changes
from shim.migration.shadow import ShadowWatch
from shim.state.fleet import AUDIT_KEY as FLEET_AUDIT_KEY
from shim.state.store import StoreUnavailable
from shim.translate.legacy import LegacyError
from shim.web import console
from shim.web.console import console_asset
from shim.web.incoming import background_sdrs_calls
from shim.web.shim_state import STATE, ShimState

_SHADOW_WATCH = web.RequestKey("shadow_watch", ShadowWatch)


def watch_shadow(request: web.Request, state: ShimState) -> None:
    """Observe this call's legacy answer when it is about shadow groups."""
    project_id = request.match_info.get("project_id")
    if project_id is None:
        return
    watch = state.shadow.watch(state.mappings, request.match_info.route.name, request.method, project_id,
                               request.match_info.get("rcg_id"))
    if watch is not None:
        request[_SHADOW_WATCH] = watch
        request[RELAY_OBSERVER] = watch.observation


def after_shadow(request: web.Request, state: ShimState) -> None:
    """The answer has been relayed: compare (or dry-run) with the client's credentials, in the background."""
    watch = request.get(_SHADOW_WATCH)
    if watch is None:
        return
    del request[_SHADOW_WATCH]
    del request[RELAY_OBSERVER]  # the background reads of the legacy endpoint are not observed again
    if watch.observation.status is None:
        return
    try:
        calls = background_sdrs_calls(request, state)
    except LegacyError:
        state.shadow.skip("no_credentials")
        return
    # The legacy reads go out as the client's did: its end-to-end headers, re-signed when it signed.
    state.shadow.start(watch, calls, partial(_legacy_get, state, request), request.get(REQUEST_ID))


async def _legacy_get(state: ShimState, request: web.Request, path: str, query: dict[str, str]) -> tuple[int, object]:
    return await state.legacy.get_json(request, query, path=path)


async def migration_report(request: web.Request) -> web.Response:
    """GET /migration: per mapped group its mode, shadow comparisons, dry runs, last action and readiness
    (JSON; for a browser, `Accept: text/html`, the console's page of the same data). `?group=ID`: that
    group alone, with its whole timeline. With an X-Auth-Token, the jobs of each last action the store
    shows unfinished are read from SDRS with it (the token is used for those GETs only, and never
    written anywhere)."""
    state = request.app[STATE]
    token = request.headers.get("X-Auth-Token")
    read_job = job_reader(state.sdrs, token, state.mappings) if token else None
    only = request.query.get("group", "").strip()[:200] or None
    # A worker of `--workers N` is reloaded through its parent, which forwards SIGHUP to every worker.
    pid = os.getppid() if "--worker" in sys.argv else os.getpid()
    context = NextStepContext(str(state.mappings.source / CONSISTENCY_GROUPS_FILE), pid, state.config_path)
    try:
        audit = await state.actions.store.get(FLEET_AUDIT_KEY)  # who switched which group when (shim mode set)
    except StoreUnavailable:
        audit = None
    report = await build_report(state.mappings, state.actions.store, read_job, only=only, next_step=context,
                                mode_changes=latest_mode_changes(state.mappings, audit, state.mode_changes))
    report["fleet"] = state.fleet.describe()  # the mode version this shim serves (README, One switch)
    report["shim"] = shim_health(state)
    if only is not None:
        report["group"] = only
    if console.wants_html(request.headers.get("Accept")):
        return console.page(report)
    return web.json_response(report, headers={"Vary": "Accept"})


def shim_health(state: ShimState) -> dict[str, Any]:
    """What the console's summary shows of the shim itself: its store and its upstreams, as the metrics
    last saw them (`unknown` before the first exchange)."""
    seen = state.metrics.upstream_states()
    return {"version": __version__, "config_digest": state.config_digest, "draining": state.health.draining,
            "state_store": "available" if state.health.store_up else "unavailable",
            "upstreams": {name: ("unknown" if name not in seen else "down" if seen[name] else "up")
                          for name in ("sdrs", "legacy")}}


__all__ = ["after_shadow", "console_asset", "migration_report", "watch_shadow"]


