"""Per-request values that handlers, the middleware and the upstream edges share (a small shared
kernel below every layer: it imports nothing of the shim)."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, Protocol

from aiohttp import web

# The request id: the client's X-Openstack-Request-Id / X-Request-Id when it is a plain token, else new.
REQUEST_ID = web.RequestKey("request_id", str)

# What a translated call did, for its audit log line: handlers and SdrsCalls fill it in
# (project_id, rcg_id, protection_group_id, action, job_ids, sdrs_status, sdrs_code).
# It stays empty for a request that is passed through.
AUDIT = web.RequestKey("audit", dict[str, Any])

# Which side served a legacy call: TRANSLATED (SDRS owns it; set by shim.web.owner.serve_from_sdrs),
# else the legacy endpoint did (passthrough). The metrics' route label and the audit line follow it.
ROUTE = web.RequestKey("route", str)
TRANSLATED = "translated"
PASSTHROUGH = "passthrough"
# The credentials the request being handled carries (its token, signature, cookies): the log
# formatter removes these exact values from every line written while it is handled, wherever they
# appear (a token pasted into a URL, quoted in an upstream's error). Set by the request middleware;
# each request runs in its own task, hence its own copy of this variable.
REQUEST_SECRETS: ContextVar[tuple[str, ...]] = ContextVar("request_secrets", default=())

# Every answer carries both (golangsdk reads X-Request-Id; OpenStack clients X-Openstack-Request-Id).
REQUEST_ID_HEADERS = ("X-Request-Id", "X-Openstack-Request-Id")

# The legacy endpoint's own request id, when a relayed answer carried one other than the shim's: the
# client is given that one id in both headers, and the access line logs it beside the shim's.
UPSTREAM_REQUEST_ID = web.RequestKey("upstream_request_id", str)


class ClientGone(asyncio.CancelledError):
    """The client disconnected, so nobody waits for this answer: the request's work stops as if
    cancelled (its metrics and audit line say `cancelled`), without a traceback."""
class RelayObserver(Protocol):
    """Sees one relayed exchange as it streams (shadow mode, README Migration): it keeps bounded copies
    and must neither block nor raise, so the relay stays exactly what it is without it."""

    def request_chunk(self, chunk: bytes) -> None: ...

    def answer_chunk(self, chunk: bytes) -> None: ...

    def answer_complete(self, status: int) -> None:
        """The whole answer reached the client (or, for a list the shim merges, the shim)."""


# Set by the web layer on a call whose legacy answer is compared off the client's path; the legacy
# passthrough tells it what it relays.
RELAY_OBSERVER = web.RequestKey("relay_observer", RelayObserver)
