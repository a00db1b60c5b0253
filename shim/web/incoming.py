"""What a handler takes from the incoming request: its verified AK/SK signature or the caller's token,
the capped body, and SDRS calls made on the caller's behalf."""

from __future__ import annotations

import asyncio
import logging
import time
from ipaddress import ip_address

from aiohttp import web
from yarl import URL

from shim.config import Settings
from shim.context import AUDIT, REQUEST_ID
from shim.translate.legacy import LegacyError
from shim.translate.signing import (
    SignatureRejected,
    SignedRequest,
    comparable_host,
    identify,
    is_signed,
    payload_hash_of_body,
    payload_hash_without_body,
    signature_of,
    verify,
)
from shim.upstreams.request_body import BodyStalled, read_body_prefix, read_some, stalled_error
from shim.upstreams.resign import VERIFIED, VerifiedSignature
from shim.upstreams.sdrs_calls import ListBounds, SdrsCalls
from shim.web.shim_state import ShimState

log = logging.getLogger("shim.auth")

SIGNED_REQUEST_MESSAGE = (
    "This endpoint is served through SDRS by a migration proxy that has no AK/SK key pair configured, "
    "so it cannot verify and re-sign an AK/SK-signed request. Authenticate with a token (X-Auth-Token "
    "with a project-scoped IAM token), or ask the operator to configure the key pair (aksk)."
)
# Carried from the client to SDRS on a re-signed call (temporary credentials, project scope).
CARRIED_TO_SDRS = ("X-Security-Token", "X-Project-Id", "X-Domain-Id")
_BODY_CHUNK = 64 * 1024


async def verify_signature(request: web.Request, state: ShimState) -> None:
    """Check an AK/SK-signed request as the API gateway would, before anything is forwarded: a legacy
    401 when it does not verify. Every spelling of a signature is verified or refused, and so is a
    request with more than one Authorization header. Without configured key pairs, signed requests
    keep the token rules (401 on translated routes, passed through untouched otherwise)."""
    if not state.keys or "Authorization" not in request.headers:
        return
    held = 0
    try:
        value = signature_of(request.headers.getall("Authorization"))
        if value is None:
            return  # one Authorization header, not a signature (Basic, Bearer): the token rules
        hosts = signed_host_names(state.settings, request.transport)
        identify(request.headers, state.keys, time.time(), hosts)  # before reading a body for a stranger
        body = None
        payload_hash = payload_hash_without_body(request.headers, request.body_exists)
        if payload_hash is None:  # the body's hash is signed: read it whole and check it first
            body, held = await _read_unverified_body(request, state)
            payload_hash = payload_hash_of_body(request.headers, body)
        signed = SignedRequest(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                               request.headers, payload_hash)
        key, auth = verify(signed, state.keys, time.time(), hosts)
    except SignatureRejected as err:
        log.warning("rejected an AK/SK-signed request: %s", err, extra={
            "request_id": request[REQUEST_ID], "method": request.method, "path": request.rel_url.raw_path})
        raise LegacyError(401, f"Incorrect IAM authentication information: {err}.") from None
    finally:
        state.unverified_bodies.give_back(held)  # checked (or refused): no longer a stranger's bytes
    request[VERIFIED] = VerifiedSignature(key, auth.signed_headers, payload_hash, body)


async def _read_unverified_body(request: web.Request, state: ShimState) -> tuple[bytes, int]:
    """The whole body (at most limits.signed_body_bytes, else a legacy 400) and the bytes it holds of
    limits.unverified_signed_bytes, taken chunk by chunk as it arrives (a legacy 503 past it). The
    caller gives them back once the signature is checked."""
    limit, idle = state.settings.limits.signed_body_bytes, state.settings.timeouts.request_body_idle
    too_large = LegacyError(400, f"Malformed request body: an AK/SK-signed body whose hash is signed may be at "
                                 f"most {limit} bytes.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    budget, body = state.unverified_bodies, bytearray()
    try:
        while True:
            try:
                chunk = await read_some(request, min(_BODY_CHUNK, limit + 1 - len(body)), idle)
            except BodyStalled:
                raise stalled_error(idle) from None
            if not chunk:
                return bytes(body), len(body)
            budget.take(len(chunk))
            body += chunk
            if len(body) > limit:
                raise too_large
    except BaseException:  # refused, stalled, or cancelled when the client left: none of it is held now
        budget.give_back(len(body))
        raise


def signed_host_names(settings: Settings, transport: asyncio.BaseTransport | None) -> frozenset[str]:
    """The Host values a signature that covers `host` may name here (as `comparable_host` writes them):
    the address the client connected to (and `localhost` for a loopback one), listen.host:listen.port,
    upstreams.legacy's host (clients that reach the shim under its name) and aksk_host_aliases."""
    names = [*settings.aksk_host_aliases]
    listen = settings.listen
    if listen.host not in ("", "0.0.0.0", "::") and listen.port:
        names.append(_authority(listen.host, listen.port))
    if settings.upstreams.legacy is not None:
        names.append(URL(settings.upstreams.legacy).raw_authority)
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        address, port = str(sockname[0]), int(sockname[1])
        names.append(_authority(address, port))
        if ip_address(address.partition("%")[0]).is_loopback:
            names.append(f"localhost:{port}")
    return frozenset(comparable_host(name) for name in names)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sdrs_calls(request: web.Request, state: ShimState) -> SdrsCalls:
    """SDRS calls on behalf of this request: re-signed with its verified key pair, else with its token
    (401 without either); with its request id."""
    verified = request.get(VERIFIED)
    token = None if verified is not None else auth_token(request)
    state.translated.admit(request)  # limits.max_concurrent_translated: a legacy 503 before any SDRS call
    return _calls_for(request, state, token, request[AUDIT])


def background_sdrs_calls(request: web.Request, state: ShimState) -> SdrsCalls:
    """SDRS calls made with this request's credentials after its answer (shadow mode): they hold no
    translated slot and write no audit record (401 LegacyError without credentials)."""
    token = None if request.get(VERIFIED) is not None else auth_token(request)
    return _calls_for(request, state, token, {}, follow_client=False)


def _calls_for(
    request: web.Request, state: ShimState, token: str | None, audit: dict[str, object], *, follow_client: bool = True,
) -> SdrsCalls:
    verified = request.get(VERIFIED)
    request_id = request[REQUEST_ID]
    headers = {"X-Request-Id": request_id, "X-Openstack-Request-Id": request_id}
    if token is not None:
        headers["X-Auth-Token"] = token
    else:
        headers.update({name: request.headers[name] for name in CARRIED_TO_SDRS if name in request.headers})
        # The SDKs scope a signed call by X-Project-Id; the path's project is the client's own.
        headers.setdefault("X-Project-Id", request.match_info["project_id"].lower())
    settings = state.settings
    # A list stops when its client went away; background work (after the answer) has no client to follow.
    bounds = ListBounds(settings.limits.sdrs_list_items, settings.timeouts.sdrs_list,
                        client_connected=(lambda: client_connected(request)) if follow_client else (lambda: True))
    return SdrsCalls(state.sdrs, headers, state.mappings.errors, audit, bounds,
                     key=verified.key if verified is not None else None,
                     client_signed=verified.signed_headers if verified is not None else None)


def client_connected(request: web.BaseRequest) -> bool:
    """False once the client's connection is closed (aiohttp drops the transport on connection_lost)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


def auth_token(request: web.Request) -> str:
    """The caller's IAM token; a signed request needs configured key pairs to be re-signed."""
    token = request.headers.get("X-Auth-Token", "").strip()
    if token:
        return token
    if is_signed(request.headers.get("Authorization")):
        raise LegacyError(401, SIGNED_REQUEST_MESSAGE)
    raise LegacyError(401, "Authentication required: send X-Auth-Token.")


async def read_capped_body(
    request: web.Request, limit: int, idle: float, too_large_message: str | None = None,
) -> bytes:
    """The whole body, or a legacy 400 when it is larger than `limit` bytes (408 when it stalls for
    `idle` seconds). Read once: a body the signature check has read already is taken from there."""
    too_large = LegacyError(400, too_large_message or f"Malformed request body: larger than {limit} bytes.")
    verified = request.get(VERIFIED)
    if verified is not None and verified.body is not None:
        if len(verified.body) > limit:
            raise too_large
        return verified.body
    body, complete = await read_body_prefix(request, limit, idle)
    if not complete:
        raise too_large
    return body
