"""The aiohttp application: routes, the request-context middleware and upstream lifecycles.

Routing: the translated legacy calls get their handlers (shim/handlers.py); every other request
streams to the legacy EVS endpoint (shim/passthrough.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from shim.action_guard import ActionGuard
from shim.config import Settings
from shim.context import AUDIT, REQUEST_ID
from shim.legacy import PAIR_COLLECTION, RCG_COLLECTION, LegacyError
from shim.mappings import Mappings
from shim.passthrough import LegacyPassthrough
from shim.responses import REQUEST_ID_HEADERS, incoming_request_id, legacy_error_response, new_request_id
from shim.sdrs_client import SdrsClient

log = logging.getLogger("shim")



@dataclass
class ShimState:
    """What handlers need; `mappings` is swapped whole on reload so a request sees one version."""

    settings: Settings
    mappings: Mappings
    sdrs: SdrsClient
    legacy: LegacyPassthrough
    actions: ActionGuard


STATE = web.AppKey("state", ShimState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id and turn every failure into a legacy error: never a traceback."""
    request[REQUEST_ID] = incoming_request_id(request.headers) or new_request_id()
    request[AUDIT] = {}
    state = request.app[STATE]
    try:
        return await handler(request)
    except LegacyError as err:
        return legacy_error_response(err, state.mappings.errors)
    except web.HTTPRequestEntityTooLarge:
        return legacy_error_response(
            LegacyError(400, "Request body is too large."), state.mappings.errors
        )
    except web.HTTPException as exc:
        status = exc.status if exc.status in (400, 401, 403, 404, 405, 406, 408, 409) else 500
        return legacy_error_response(LegacyError(status, exc.reason), state.mappings.errors)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"request_id": request[REQUEST_ID]})
        return legacy_error_response(
            LegacyError(500, "The shim failed to handle the request; see its log."),
            state.mappings.errors,
        )


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer carries both request-id headers (an upstream's own ids are kept)."""
    request_id = request.get(REQUEST_ID) or new_request_id()
    for name in REQUEST_ID_HEADERS:
        if name not in response.headers:
            response.headers[name] = request_id


def build_app(settings: Settings, mappings: Mappings) -> web.Application:
    """The shim as an aiohttp Application; upstream sessions open on startup and close on cleanup."""
    from shim import handlers, read_handlers  # imported here: they import STATE from this module

    app = web.Application(
        middlewares=[request_context],
        client_max_size=settings.limits.action_body_bytes,
        # Request bodies are relayed as sent: a gzip body stays gzip on its way to the legacy side.
        handler_args={"auto_decompress": False},
    )
    app[STATE] = ShimState(
        settings=settings,
        mappings=mappings,
        sdrs=SdrsClient(settings.upstreams.sdrs, settings.timeouts.sdrs, settings.limits.pool_connections),
        legacy=LegacyPassthrough(
            settings.upstreams.legacy, settings.timeouts.legacy, settings.limits.pool_connections
        ),
        actions=ActionGuard(settings.actions.settle_seconds),
    )
    app.on_response_prepare.append(_stamp_request_id)
    app.cleanup_ctx.append(_upstream_sessions)
    prefix = "/v2/{project_id}/"
    app.router.add_route("*", prefix + RCG_COLLECTION + "/{rcg_id}/action", handlers.rcg_action)
    app.router.add_route("*", prefix + RCG_COLLECTION + "/{rcg_id}", read_handlers.show_group)
    app.router.add_route("*", prefix + RCG_COLLECTION, read_handlers.list_groups)
    app.router.add_route("*", prefix + PAIR_COLLECTION + "/{replication_id}", read_handlers.show_pair)
    app.router.add_route("*", prefix + PAIR_COLLECTION, read_handlers.list_pairs)
    app.router.add_route("*", "/{tail:.*}", handlers.passthrough)
    return app


async def _upstream_sessions(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.sdrs.start()
    await state.legacy.start()
    yield
    await state.sdrs.close()
    await state.legacy.close()
