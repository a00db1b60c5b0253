"""A stand-in OpenTelemetry collector for the traced rows: accepts OTLP/HTTP exports and drops them.

It answers every `POST /v1/traces` with 200 and an empty ExportTraceServiceResponse (zero bytes of
protobuf). It counts the exports, their bytes and their spans (decoded with opentelemetry-proto,
which the `tracing` extra brings) and prints them at exit and on SIGUSR1 (stderr): spans the shim
dropped (its export queue full) are missing from that count.

    python benchmarks/otlp_sink.py [--port 0]

Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

EXPORTS = {"posts": 0, "bytes": 0, "spans": 0}


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    export = ExportTraceServiceRequest()
    export.ParseFromString(body)
    EXPORTS["posts"] += 1
    EXPORTS["bytes"] += len(body)
    EXPORTS["spans"] += sum(len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans)
    return web.Response(body=b"", content_type="application/x-protobuf")


def report() -> None:
    print(f"otlp sink: {EXPORTS['posts']} exports, {EXPORTS['bytes']} bytes, {EXPORTS['spans']} spans",
          file=sys.stderr, flush=True)


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
    loop.add_signal_handler(signal.SIGUSR1, report)
    await stop.wait()
    await runner.cleanup()
    report()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
