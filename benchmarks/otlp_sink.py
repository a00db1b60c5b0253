"""A stand-in OpenTelemetry collector for the traced rows: accepts OTLP/HTTP exports and drops them.

It answers every `POST /v1/traces` with 200 and an empty ExportTraceServiceResponse (zero bytes of
protobuf), without decoding the spans: it must cost as little as possible beside the shim it serves.
It counts the exports and their bytes and prints them at exit (stderr).

    python benchmarks/otlp_sink.py [--port 0]

Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

EXPORTS = {"posts": 0, "bytes": 0}


async def receive(request: web.Request) -> web.Response:
    EXPORTS["posts"] += 1
    EXPORTS["bytes"] += len(await request.read())
    return web.Response(body=b"", content_type="application/x-protobuf")


async def main(port: int) -> None:
    app = web.Application(client_max_size=64 * 1048576)
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"READY {site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print(f"otlp sink: {EXPORTS['posts']} exports, {EXPORTS['bytes']} bytes", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
