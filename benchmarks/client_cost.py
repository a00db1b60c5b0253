"""Micro-benchmark: CPU time one upstream HTTP exchange costs the calling process.

The shim makes one upstream exchange per passthrough request and three per benchmark reprotect, all
through aiohttp's ClientSession. This measures, in one process pinned to one core, the CPU time per
exchange of (a) aiohttp ClientSession GETs and (b) the raw asyncio-protocol client of loadgen.py
(pre-encoded request, minimal parsing), both against benchmarks/upstream.py on the other core with
32 exchanges in flight. The difference is what a leaner upstream client could save per exchange.

    .venv/bin/python benchmarks/client_cost.py [--exchanges 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

CONCURRENCY = 32
PATH = "/v1/0970dd7a1300f5672ff2c003c60ae115/server-groups/40df180b-9fe2-471a-8c64-1b758dc84189"
HEADERS = {"X-Auth-Token": "bench-token", "Accept": "application/json"}


async def aiohttp_client(port: int, exchanges: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        url = f"http://127.0.0.1:{port}{PATH}"

        async def worker(count: int) -> None:
            for _ in range(count):
                async with session.get(url, headers=HEADERS) as answer:
                    await answer.read()

        await worker(200)  # open the pool, warm up
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(exchanges // CONCURRENCY) for _ in range(CONCURRENCY)))
        done = exchanges // CONCURRENCY * CONCURRENCY
        return (time.process_time() - cpu) / done * 1e6, done / (time.perf_counter() - wall)


async def raw_client(port: int, exchanges: int) -> tuple[float, float]:
    requests = loadgen.encode_requests("127.0.0.1", port, "GET", [PATH],
                                       [f"{k}: {v}" for k, v in HEADERS.items()], "")
    await loadgen.run("127.0.0.1", port, requests, CONCURRENCY, 0.3)  # warm up
    cpu = time.process_time()
    result = await loadgen.run("127.0.0.1", port, requests, CONCURRENCY, 2.0)
    return (time.process_time() - cpu) / result["requests"] * 1e6, result["rps"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=20000)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpus[0]})) if len(cpus) > 1 else None,
    )
    try:
        assert upstream.stdout is not None
        port = int(upstream.stdout.readline().split()[1])
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[-1]})
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        for name, client in (("aiohttp ClientSession", aiohttp_client), ("raw asyncio protocol", raw_client)):
            for _ in range(2):
                us, rate = runner(client(port, args.exchanges))
                print(f"{name:22s} {us:6.1f} us CPU per exchange (client process, kernel included)  "
                      f"{rate:8,.0f} exchanges/s", flush=True)
    finally:
        upstream.terminate()
        upstream.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
