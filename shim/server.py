"""Run the shim: an aiohttp runner on the configured address until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from shim.app import build_app
from shim.config import Settings
from shim.mappings import Mappings

log = logging.getLogger("shim")


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (0 = any free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[union-attr]
    return runner, bound


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings, mappings: Mappings) -> None:
    runner, port = await start_site(build_app(settings, mappings), settings.listen.host, settings.listen.port)
    log.info("listening", extra={"address": f"{settings.listen.host}:{port}",
                                 "sdrs": settings.upstreams.sdrs, "legacy": settings.upstreams.legacy,
                                 "mapped_groups": len(mappings.protection_groups)})
    try:
        await wait_for_stop_signal()
    finally:
        log.info("stopping")
        await runner.cleanup()
