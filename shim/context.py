"""Per-request values that handlers, the middleware and the upstream edges share (a small shared
kernel below every layer: it imports nothing of the shim)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

# The request id: the client's X-Openstack-Request-Id / X-Request-Id when it is a plain token, else new.
REQUEST_ID = web.RequestKey("request_id", str)

# What a translated call did, for its audit log line: handlers and SdrsCalls fill it in
# (project_id, rcg_id, protection_group_id, action, job_ids, sdrs_status, sdrs_code).
# It stays empty for a request that is passed through.
AUDIT = web.RequestKey("audit", dict[str, Any])

# Every answer carries both (golangsdk reads X-Request-Id; OpenStack clients X-Openstack-Request-Id).
REQUEST_ID_HEADERS = ("X-Request-Id", "X-Openstack-Request-Id")


class ClientGone(asyncio.CancelledError):
    """The client disconnected, so nobody waits for this answer: the request's work stops as if
    cancelled (its metrics and audit line say `cancelled`), without a traceback."""
