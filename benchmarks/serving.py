"""What every aiohttp stand-in of the benchmark shares: serve on loopback, say `READY <port>`, stop
on SIGTERM/SIGINT, run on uvloop when it is installed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

from aiohttp import web


async def serve_until_signalled(runner: web.AppRunner, host: str, port: int) -> None:
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print(f"READY {site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
