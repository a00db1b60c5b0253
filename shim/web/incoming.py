"""What a translated handler takes from the incoming request: the caller's token, the capped body,
and SDRS calls made on the caller's behalf."""

from __future__ import annotations

from aiohttp import web

from shim.context import AUDIT, REQUEST_ID
from shim.translate.legacy import LegacyError
from shim.upstreams.request_body import read_body_prefix
from shim.upstreams.sdrs_calls import ListBounds, SdrsCalls
from shim.web.shim_state import ShimState

SIGNED_REQUEST_MESSAGE = (
    "This endpoint is served through SDRS by a migration proxy, which cannot forward an AK/SK-signed "
    "request (the signature covers the host and path it changes). Authenticate with a token: send "
    "X-Auth-Token with a project-scoped IAM token."
)


def sdrs_calls(request: web.Request, state: ShimState) -> SdrsCalls:
    """SDRS calls on behalf of this request: its token and request id (401 without a token)."""
    token = auth_token(request)
    state.translated.admit(request)  # limits.max_concurrent_translated: a legacy 503 before any SDRS call
    request_id = request[REQUEST_ID]
    headers = {"X-Auth-Token": token, "X-Request-Id": request_id, "X-Openstack-Request-Id": request_id}
    settings = state.settings
    bounds = ListBounds(settings.limits.sdrs_list_items, settings.timeouts.sdrs_list,
                        client_connected=lambda: client_connected(request))
    return SdrsCalls(state.sdrs, headers, state.mappings.errors, request[AUDIT], bounds)


def client_connected(request: web.BaseRequest) -> bool:
    """False once the client's connection is closed (aiohttp drops the transport on connection_lost)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


def auth_token(request: web.Request) -> str:
    """The caller's IAM token; a signed request cannot be re-signed for another host and path."""
    token = request.headers.get("X-Auth-Token", "").strip()
    if token:
        return token
    if request.headers.get("Authorization", "").startswith("SDK-HMAC-"):
        raise LegacyError(401, SIGNED_REQUEST_MESSAGE)
    raise LegacyError(401, "Authentication required: send X-Auth-Token.")


async def read_capped_body(request: web.Request, limit: int, idle: float) -> bytes:
    """The whole body, or a legacy 400 when it is larger than `limit` bytes (408 when it stalls for
    `idle` seconds)."""
    body, complete = await read_body_prefix(request, limit, idle)
    if not complete:
        raise LegacyError(400, f"Malformed request body: larger than {limit} bytes.")
    return body
