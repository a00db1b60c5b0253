"""A closed-loop HTTP/1.1 load generator, used when `wrk` is not installed (or with `--client python`).

N keep-alive connections, each sending its next request as soon as the previous answer is complete;
per-request latency measured with perf_counter_ns from the write to the last byte of the answer.
Raw asyncio protocol (uvloop when installed), requests pre-encoded, so one core drives a few ten
thousand requests/s, far fewer than wrk: `run.py` prints which client measured each row.

With at least as many paths as connections, connection i of N sends only the paths on lines i, i+N,
i+2N, ... round-robin, so no two connections ever send the same path (the reprotect row relies on
this: two reprotects of one group at once get a 409). With fewer paths, every connection cycles
through all of them.

    python benchmarks/loadgen.py --port P --paths-file F [-c 32] [-d 10] [--method POST --body B]
                                 [--header 'Name: value' ...]

Prints one line `RESULT {json}`: requests, seconds, rps, p50/p90/p99/max in microseconds, and the
count of each status (plus `errors` for connections that failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from pathlib import Path


class Client(asyncio.Protocol):
    def __init__(self, requests: list[bytes], stats: Stats, deadline: int) -> None:
        self.requests = requests
        self.index = 0
        self.stats = stats
        self.deadline = deadline
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        request = self.requests[self.index]
        self.index = (self.index + 1) % len(self.requests)
        self.sent_at = time.perf_counter_ns()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        head = buffer[:end]
        lower = head.lower()
        position = lower.find(b"\ncontent-length:")
        if position >= 0:
            line_end = lower.find(b"\r\n", position + 1)
            length = int(lower[position + 16 : line_end if line_end >= 0 else len(lower)])
            total = end + 4 + length
            if len(buffer) < total:
                self.buffer = buffer
                return
            rest = buffer[total:]
        elif b"\ntransfer-encoding: chunked" in lower:
            terminator = buffer.find(b"\r\n0\r\n\r\n", end)
            if terminator < 0 and not buffer[end + 4 :].startswith(b"0\r\n\r\n"):
                self.buffer = buffer
                return
            rest = buffer[(terminator + 7 if terminator >= 0 else end + 9) :]
        else:
            rest = buffer[end + 4 :]  # 204/304 or no body
        now = time.perf_counter_ns()
        self.buffer = rest
        status = int(head[9:12])
        self.stats.record(status, now - self.sent_at)
        if now < self.deadline:
            self.send()
        elif not self.done.done():
            self.done.set_result(None)
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.stats.errors += 1
            self.done.set_result(None)


class Stats:
    def __init__(self) -> None:
        self.latencies = array("q")
        self.statuses: dict[int, int] = {}
        self.errors = 0

    def record(self, status: int, nanoseconds: int) -> None:
        self.latencies.append(nanoseconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1


def percentile(ordered: list[int], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000.0


async def run(host: str, port: int, requests: list[bytes], connections: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    started = time.perf_counter_ns()
    deadline = started + int(seconds * 1e9)
    clients = []
    for i in range(connections):
        own = requests[i::connections] if len(requests) >= connections else requests
        _, client = await loop.create_connection(lambda own=own: Client(own, stats, deadline), host, port)
        clients.append(client)
    await asyncio.gather(*(client.done for client in clients))
    elapsed = (time.perf_counter_ns() - started) / 1e9
    ordered = sorted(stats.latencies)
    return {
        "requests": len(ordered),
        "seconds": elapsed,
        "rps": len(ordered) / elapsed if elapsed else 0.0,
        "p50_us": percentile(ordered, 0.50),
        "p90_us": percentile(ordered, 0.90),
        "p99_us": percentile(ordered, 0.99),
        "max_us": ordered[-1] / 1000.0 if ordered else 0.0,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": stats.errors,
    }


def encode_requests(host: str, port: int, method: str, paths: list[str], headers: list[str], body: str) -> list[bytes]:
    encoded = []
    payload = body.encode()
    for path in paths:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
        if payload or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(payload)}")
        encoded.append(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    return encoded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths-file", type=Path, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    args = parser.parse_args()
    paths = [line.strip() for line in args.paths_file.read_text().splitlines() if line.strip()]
    requests = encode_requests(args.host, args.port, args.method, paths, args.header, args.body)
    coroutine = run(args.host, args.port, requests, args.connections, args.duration)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
