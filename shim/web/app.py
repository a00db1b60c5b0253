"""The aiohttp application: routes, the request-context middleware and upstream lifecycles.

Routing: the translated legacy calls get their handlers (action_handlers.py, read_handlers.py); every
other request streams to the legacy EVS endpoint (shim/upstreams/passthrough.py). `/healthz`,
`/readyz`, `/metrics` and `/migration` are the shim's own (GET only) and are not counted as legacy
traffic; `build_management_app` serves them on the management listener too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from shim import __version__, tls
from shim.config import Settings
from shim.context import (
    AUDIT,
    PASSTHROUGH,
    REQUEST_ID,
    REQUEST_ID_HEADERS,
    REQUEST_SECRETS,
    ROUTE,
    TRANSLATED,
    UPSTREAM_REQUEST_ID,
)
from shim.credentials import KeyRing, load_key_ring
from shim.mappings import Mappings
from shim.state.action_guard import STORE_RETRY_AFTER_SECONDS, ActionGuard
from shim.state.backends import build_store
from shim.state.retired import start_index
from shim.state.store import StoreUnavailable
from shim.state.traced import traced_store
from shim.tracing import Tracing, TracingUnavailable, build_tracing
from shim.translate.fleet import refuses_unconfirmed
from shim.translate.legacy import LegacyError
from shim.translate.paths import REFUSED_SPELLING, disguises_a_translated_url
from shim.translate.url_space import MANAGEMENT_PATHS, TRANSLATED_ROUTES
from shim.upstreams.passthrough import BodyLimits, LegacyPassthrough
from shim.upstreams.sdrs_client import SdrsClient
from shim.validation import ConfigError
from shim.web import action_handlers, read_handlers
from shim.web.incoming import verify_signature
from shim.web.logs import log_fields, redact_text, request_secrets
from shim.web.metrics import (
    CURRENT_TIMING,
    RequestTiming,
    ShimMetrics,
    action_label,
    method_label,
    status_label,
)
from shim.web.migration import after_shadow, console_asset, migration_report, watch_shadow
from shim.web.responses import incoming_request_id, legacy_error_response, new_request_id
from shim.web.shim_state import STATE, ShimState

log = logging.getLogger("shim")
STORE_WATCH_SECONDS = 2.0
audit_log = logging.getLogger("shim.audit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id, observe it (metrics, audit line) and turn every failure into a
    legacy error: never a traceback."""
    request[REQUEST_ID] = incoming_request_id(request.headers) or new_request_id()
    request[AUDIT] = {}
    REQUEST_SECRETS.set(request_secrets(request.headers))  # this request's task only: no reset needed
    if request.match_info.route.name in MANAGEMENT_ROUTE_NAMES:
        response, _ = await _answer(request, handler, legacy=False)
        return response
    return await _observed(request, handler)


async def _observed(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    timing = RequestTiming(time.monotonic())
    # The legacy call's span (tracing off: none, and only the client's trace id for the log lines).
    span = state.tracing.request_span(request.method, TRANSLATED_ROUTES.get(request.match_info.route.name or ""),
                                      request.headers)
    if span.active:
        span.set("url.path", redact_text(request.rel_url.raw_path, REQUEST_SECRETS.get()))
    if request.body_exists:
        request.content.on_eof(timing.body_done)
    context_token = CURRENT_TIMING.set(timing)
    state.health.in_flight += 1  # the shim_requests_in_flight gauge reads it when scraped
    status: int | None = None
    answered_by_shim = True
    try:
        response, answered_by_shim = await _answer(request, handler)
        status = response.status
        return response
    finally:
        CURRENT_TIMING.reset(context_token)
        state.translated.release(request)
        state.health.in_flight -= 1
        _request_done(request, state, timing, status, answered_by_shim)
        audit: dict[str, Any] = request[AUDIT]
        span.request_done(status, request.get(ROUTE, PASSTHROUGH), audit)


def refuse_unconfirmed(mappings: Mappings, method: str, match: Any) -> None:
    """Fail closed (README, One switch for the fleet): a write or an action about a mapped group while
    this shim cannot confirm the fleet's modes with the store is a legacy 503, sent to neither side."""
    if refuses_unconfirmed(mappings, method, match.get("project_id"), match.get("rcg_id")):
        raise LegacyError(503, "The migration proxy cannot confirm with its state store which side serves this "
                               "group, so it sends no write or action anywhere; try again shortly.",
                          retry_after=STORE_RETRY_AFTER_SECONDS, refusal="state_store")


def refuse_disguised_translated_url(request: web.Request) -> None:
    """The closed rule (shim/translate/paths.py): a path that names a translated collection in any
    reading and is not spelled exactly as a translated route is refused, never relayed to a legacy
    endpoint that might read it as the route and act on a migrated group."""
    if disguises_a_translated_url(request.rel_url.raw_path):
        raise LegacyError(400, REFUSED_SPELLING)


async def _answer(request: web.Request, handler: Handler, legacy: bool = True) -> tuple[web.StreamResponse, bool]:
    """The handler's response, or the legacy error for what it raised; True when the shim made
    the answer itself from an error (no upstream answer was relayed). A legacy call's AK/SK
    signature is checked before its handler can forward anything."""
    state = request.app[STATE]
    try:
        refuse_disguised_translated_url(request)
        if legacy and state.keys:  # no key pairs configured: nothing to verify, no await on the hot path
            await verify_signature(request, state)
        # A translated route is matched here only by its exact spelling: any other was refused above.
        about_groups = request.match_info.route.name in TRANSLATED_ROUTE_NAMES
        if about_groups and state.mappings.unconfirmed:  # the fleet's modes unknown: no write, no action
            refuse_unconfirmed(state.mappings, request.method, request.match_info)
        if about_groups and legacy:
            watch_shadow(request, state)  # shadow mode: observe the legacy answer (nothing is awaited)
        epoch = state.fleet.request_started() if about_groups else None  # its view, until it ends
        try:
            response = await handler(request)
        finally:
            if epoch is not None:
                state.fleet.request_ended(epoch)
        if about_groups and legacy:
            after_shadow(request, state)  # the answer has been relayed: compare off the client's path
        return response, False
    except LegacyError as err:
        if err.refusal is not None:  # the duplicate-action guard said no
            state.metrics.action_refused(err.refusal)
        response = legacy_error_response(err, state.mappings.errors)
        if err.status == 408 or _CLOSE in err.headers:  # the body was left unread: do not wait for it
            await _answer_and_close(request, response)
        return response, True
    except web.HTTPRequestEntityTooLarge:
        return legacy_error_response(
            LegacyError(400, "Request body is too large."), state.mappings.errors
        ), True
    except web.HTTPException as exc:
        status = exc.status if exc.status in (400, 401, 403, 404, 405, 406, 408, 409) else 500
        return legacy_error_response(LegacyError(status, exc.reason), state.mappings.errors), True
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"request_id": request[REQUEST_ID]})
        return legacy_error_response(
            LegacyError(500, "The shim failed to handle the request; see its log."),
            state.mappings.errors,
        ), True


_CLOSE = ("Connection", "close")


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Send `response`, then close the connection at once: the request's body stalled unfinished,
    and aiohttp would otherwise keep reading it for its lingering time."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client is gone already
    request.protocol.force_close()  # the transport flushes what was written, then closes


def _request_done(
    request: web.Request, state: ShimState, timing: RequestTiming, status: int | None, answered_by_shim: bool
) -> None:
    """Count the request and, for a translated call, write its audit line."""
    audit = request[AUDIT]
    legacy_status = status_label(status) if status is not None else "cancelled"
    if request.get(ROUTE) == TRANSLATED:
        # A failed call is labelled with the SDRS failure behind it: with gathered reads, the last
        # answer to arrive may be a success.
        failed = status is None or status >= 400
        upstream = status_label(timing.sdrs_failure if failed and timing.sdrs_failure else audit.get("sdrs_status"))
        state.metrics.request_done(TRANSLATED, legacy_status, upstream, timing, method_label(request.method),
                                   action_label(audit.get("action")))
        _write_audit(request, audit, legacy_status, time.monotonic() - timing.started)
    else:
        upstream = "none" if answered_by_shim or status is None else status_label(status)
        state.metrics.request_done(PASSTHROUGH, legacy_status, upstream, timing, method_label(request.method))


def _write_audit(request: web.Request, audit: dict[str, Any], legacy_status: str, seconds: float) -> None:
    from_url = {key: request.match_info.get(key) for key in ("project_id", "rcg_id")}
    record: dict[str, Any] = {key: value for key, value in from_url.items() if value is not None}
    record.update(audit)
    record.update(request_id=request[REQUEST_ID], legacy_status=legacy_status,
                  duration_ms=round(seconds * 1000, 3))
    record.setdefault("sdrs_status", None)
    record.setdefault("sdrs_code", None)
    record.setdefault("job_ids", [])
    log_fields(audit_log, logging.INFO, "translated call", record)


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer carries both request-id headers with one id: the legacy endpoint's own when a
    relayed answer carries one (its header kept, the other filled with it; X-Openstack-Request-Id
    first if it sent two), else the shim's. An upstream id other than the shim's is kept for the
    access line. While draining, every answer also closes its connection so clients reconnect
    elsewhere."""
    headers = response.headers
    theirs = headers.get("X-Openstack-Request-Id") or headers.get("X-Request-Id")
    if theirs is None:
        headers["X-Request-Id"] = headers["X-Openstack-Request-Id"] = request.get(REQUEST_ID) or new_request_id()
    else:
        for name in REQUEST_ID_HEADERS:
            if name not in headers:
                headers[name] = theirs
        if theirs != request.get(REQUEST_ID):
            request[UPSTREAM_REQUEST_ID] = theirs
    if request.app[STATE].health.draining:
        response.force_close()  # aiohttp has already chosen its headers: say it ourselves too
        response.headers["Connection"] = "close"


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. The pid tells workers apart (`--workers N`)."""
    return web.json_response({"status": "alive", "pid": os.getpid(), "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    """Ready: config and mappings loaded, upstream sessions open, not draining."""
    state = request.app[STATE]
    if state.health.ready:
        store_up = state.health.store_up
        # `?require=state_store`: for a deployment that would rather be taken out of its Services than
        # refuse actions (README, Health and metrics); by default a down store keeps the shim ready.
        needs_store = "state_store" in request.query.getall("require", [])
        return web.json_response({"status": "ready" if store_up or not needs_store else "state store unavailable",
                                  "config_digest": state.config_digest,
                                  "mapped_groups": len(state.mappings.groups),
                                  "state_store": "available" if store_up else "unavailable",
                                  "mode_version": state.mappings.mode_version,
                                  "modes_confirmed": not state.mappings.unconfirmed},
                                 status=200 if store_up or not needs_store else 503)
    return web.json_response({"status": "draining" if state.health.draining else "starting"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE].metrics.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def management_method_not_allowed(request: web.Request) -> web.StreamResponse:
    """A management path is the shim's own, GET (and HEAD) only: any other method is 405, neither
    passed through nor counted as legacy traffic."""
    raise LegacyError(405, f"Method {request.method[:16]} is not allowed on {request.path}; use GET.",
                      headers=(("Allow", "GET, HEAD"),))


def _route_name(path: str) -> str:
    """`/metrics` -> `metrics`, `/migration/assets/console.js` -> `migration-assets-console-js`."""
    return path.strip("/").replace("/", "-").replace(".", "-")


MANAGEMENT_ROUTE_NAMES = frozenset(_route_name(path) for path in MANAGEMENT_PATHS)
TRANSLATED_ROUTE_NAMES = frozenset(TRANSLATED_ROUTES)


async def _expect_continue_only(request: web.Request) -> None:
    """Answer `Expect: 100-continue`; ignore any other expectation (RFC 9110 10.1.1 allows it)
    instead of aiohttp's 417, which no legacy client knows and which bypasses the middleware."""
    if request.version >= (1, 1) and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def build_app(settings: Settings, mappings: Mappings, keys: KeyRing | None = None) -> web.Application:
    """The shim as an aiohttp Application; upstream sessions open on startup and close on cleanup.
    `keys` are the `aksk` key pairs, read from their files or variables when not given."""
    limits = settings.limits
    upstreams = settings.upstreams
    upstream_tls = tls.client_context(upstreams.ca_file, "config") if upstreams.ca_file is not None else None
    app = web.Application(
        middlewares=[request_context],
        client_max_size=limits.action_body_bytes,
        handler_args={
            # Request bodies are relayed as sent: a gzip body stays gzip on its way to the legacy side.
            "auto_decompress": False,
            # Parser limits; over them aiohttp answers a plain-text 400 itself (see README, Operations).
            "max_line_size": limits.max_line_size,
            "max_field_size": limits.max_field_size,
            "max_headers": limits.max_headers,
        },
    )
    shim_metrics = ShimMetrics()
    tracing = _tracing(settings)
    app[STATE] = state = ShimState(
        settings=settings,
        mappings=mappings,
        sdrs=SdrsClient(upstreams.sdrs, settings.timeouts.sdrs, limits.pool_connections,
                        observer=shim_metrics.sdrs_observer(lambda: app[STATE].mappings.errors.codes),
                        tls=upstream_tls, trust_env=upstreams.trust_env, max_answer_bytes=limits.upstream_body_bytes,
                        tracing=tracing),
        legacy=LegacyPassthrough(upstreams.legacy, settings.timeouts.legacy, limits.pool_connections,
                                 preserve_host=settings.passthrough.preserve_host,
                                 tls=upstream_tls, trust_env=upstreams.trust_env,
                                 max_answer_bytes=limits.upstream_body_bytes,
                                 body_limits=BodyLimits(limits.request_buffer_bytes,
                                                        settings.timeouts.request_body_idle,
                                                        limits.request_spool_bytes, limits.request_body_min_rate,
                                                        settings.passthrough.spool_directory),
                                 observer=shim_metrics.legacy_observer, tracing=tracing),
        actions=ActionGuard(traced_store(build_store(settings.state), tracing), settings.actions.settle_seconds,
                            settings.state.lease_seconds),
        metrics=shim_metrics,
        keys=keys if keys is not None else load_key_ring(settings.aksk, "config"),
        tracing=tracing,
    )
    state.config_digest = shim_metrics.config_loaded(settings, mappings)
    # Read at scrape time: no lock per request.
    shim_metrics.in_flight.set_function(lambda: state.health.in_flight)
    shim_metrics.legacy_pool_in_use.set_function(lambda: state.legacy.in_use)
    shim_metrics.ready.set_function(lambda: 1 if state.health.ready else 0)
    shim_metrics.mode_version.set_function(
        lambda: -1 if state.mappings.mode_version is None else state.mappings.mode_version)
    shim_metrics.modes_confirmed.set_function(lambda: 0 if state.mappings.unconfirmed else 1)
    shim_metrics.groups_switching.set_function(lambda: len(state.mappings.fenced))
    shim_metrics.unverified_body_bytes.set_function(lambda: state.unverified_bodies.held)
    shim_metrics.request_spool_bytes.set_function(lambda: state.legacy.spool.in_use)
    app.on_response_prepare.append(_stamp_request_id)
    app.cleanup_ctx.append(_upstream_sessions)
    # The paths come from shim/translate/url_space.py, which `shim front-config` routes by too. With
    # `management.also_on_listen: false` only the management listener answers them (build_management_app).
    if settings.management is None or settings.management.also_on_listen:
        add_management_routes(app, legacy_405=True)
    translated_handlers = {
        "rcg-action": action_handlers.rcg_action,
        "rcg": read_handlers.group_item,
        "rcgs": read_handlers.group_collection,
        "pair": read_handlers.pair_item,
        "pairs": read_handlers.pair_collection,
    }
    for name, path in TRANSLATED_ROUTES.items():
        app.router.add_route("*", path, translated_handlers[name], name=name, expect_handler=_expect_continue_only)
    app.router.add_route("*", "/{tail:.*}", action_handlers.passthrough, name="passthrough",
                         expect_handler=_expect_continue_only)
    return app


def _tracing(settings: Settings) -> Tracing:
    config = settings.tracing
    try:
        return build_tracing(config.enabled, endpoint=config.endpoint, service_name=config.service_name,
                             sample_ratio=config.sample_ratio, export_interval_seconds=config.export_interval_seconds,
                             export_timeout_seconds=config.export_timeout_seconds, version=__version__)
    except TracingUnavailable as err:
        raise ConfigError(f"tracing.enabled: {err}") from None


def add_management_routes(app: web.Application, *, legacy_405: bool = False) -> None:
    management_handlers = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics,
                           "/migration": migration_report}
    for path in MANAGEMENT_PATHS:
        app.router.add_get(path, management_handlers.get(path, console_asset), name=_route_name(path))
        if legacy_405:
            # Any other method on the same resource: 405 here, never the passthrough route below.
            app.router.add_route("*", path, management_method_not_allowed, name=_route_name(path))


def build_management_app(shim_app: web.Application) -> web.Application:
    """The management listener's application (`management: {host, port}`): only the shim's own
    endpoints, answering from the shim app's state (so /readyz turns 503 with its drain); any other
    path is a plain 404, any other method aiohttp's 405. It has no upstream sessions of its own: the
    shim app opens and closes them."""
    app = web.Application(handler_args={"max_line_size": 8190, "max_field_size": 8190, "max_headers": 64})
    app[STATE] = shim_app[STATE]
    add_management_routes(app)
    return app


async def _upstream_sessions(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.sdrs.start()
    await state.legacy.start()
    await _open_store(state)
    await state.fleet.start()  # the fleet's modes (state/fleet.py), then refreshed in the background
    watcher, fleet = asyncio.create_task(_watch_store(state)), asyncio.create_task(state.fleet.run())
    state.health.started = True
    yield
    state.health.started = False
    watcher.cancel()
    fleet.cancel()
    await state.fleet.leave()
    await state.shadow.close()  # shadow work still running needs the sessions: cancelled and awaited first
    await state.sdrs.close()
    await state.legacy.close()
    await state.actions.store.close()
    await state.tracing.close()  # tracing on: the spans still buffered are exported


async def _open_store(state: ShimState) -> None:
    """The shim serves even when its store is down at start: reads work, actions fail closed."""
    store = state.actions.store
    try:
        await store.open()
        state.metrics.state_store_checked(True)
        await start_index(state.retired, store, state.mappings.groups.values())
    except StoreUnavailable as err:
        state.metrics.state_store_checked(False)
        log.warning("state store unavailable at start: actions are refused until it answers",
                    extra={"backend": store.name, "error": str(err)[:300]})


async def _watch_store(state: ShimState) -> None:
    """Tell /readyz and the `shim_state_store_up` metric whether the store answers."""
    store, was_up = state.actions.store, True
    while True:
        try:
            await store.ping()
            await state.retired.refresh(store)  # groups another shim deleted (one small read)
            up = True
        except StoreUnavailable as err:
            up = False
            if was_up:
                log.warning("state store unavailable: actions are refused until it answers",
                            extra={"backend": store.name, "error": str(err)[:300]})
        if up and not was_up:
            log.info("state store available again", extra={"backend": store.name})
        state.health.store_up, was_up = up, up
        state.metrics.state_store_checked(up)
        await asyncio.sleep(STORE_WATCH_SECONDS)
