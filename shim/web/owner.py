"""The two ways a legacy call is served, as the request records them: from SDRS (`translated`, audited)
or by the legacy endpoint (`passthrough`). Every handler decides once, through these two functions,
and the metrics' `route` label and the audit line follow from that one decision."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shim.context import AUDIT, ROUTE, TRANSLATED
from shim.translate.legacy import LegacyError
from shim.translate.tables import GroupMapping
from shim.web.shim_state import STATE


def serve_from_sdrs(request: web.Request, entry: GroupMapping | None, action: str, **audit: Any) -> None:
    """This call is about groups SDRS owns: it is translated (or refused) here, never relayed."""
    request[ROUTE] = TRANSLATED
    record = request[AUDIT]
    if entry is not None:
        record.update(project_id=entry.project_id, rcg_id=entry.rcg_id,
                      protection_group_id=entry.protection_group_id)
    record.update(action=action, **audit)


async def to_legacy(request: web.Request, *, body: bytes | None = None, item: str | None = None) -> web.StreamResponse:
    """The legacy endpoint owns this call: relay it unchanged (`body` when a handler already read it).
    With no legacy endpoint configured, a call about one group or pair (`item`) finds nothing: 404."""
    legacy = request.app[STATE].legacy
    if legacy.base_url is None and item is not None:
        raise LegacyError(404, f"{item} could not be found.")
    return await legacy.forward(request, body=body)
