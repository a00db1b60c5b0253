"""What every aiohttp stand-in of the benchmark shares: serve on loopback, say `READY <port>`, stop
on SIGTERM/SIGINT, and `run`: the shim's own event-loop runner (uvloop when installed)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from shim.cli import run_event_loop as run  # noqa: E402, F401  (uvloop when installed, as `shim serve`


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
