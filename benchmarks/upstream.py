"""A fast stand-in for the legacy EVS endpoint: HTTP/1.1 keep-alive, one small fixed JSON answer.

Raw asyncio protocol (on uvloop when installed), no framework: it must cost as little as possible so
that a row measures the proxy in front of it, not this server. It answers every request, whatever
its method and path, with 200 and the same body; request bodies (Content-Length or chunked) are read
and dropped. Pipelined requests are answered in order.

    python benchmarks/upstream.py [--host 127.0.0.1] [--port 0]

Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

BODY = b'{"volumes": [{"id": "6a1f0d39-5b8f-4a86-9f52-2b0a9d5f0c11", "status": "available"}]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Server: bench-upstream\r\n"
    b"\r\n" + BODY
)
CLOSE_RESPONSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("transport", "buffer", "body_left", "chunked", "close_after")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.body_left = 0  # Content-Length bytes still to skip
        self.chunked = False  # skipping a chunked body
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out = []
        while True:
            if self.body_left:
                taken = min(self.body_left, len(buffer))
                self.body_left -= taken
                buffer = buffer[taken:]
                if self.body_left:
                    break
                out.append(CLOSE_RESPONSE if self.close_after else RESPONSE)
                continue
            if self.chunked:
                end = buffer.find(b"0\r\n\r\n")  # good enough for the shim's and nginx's framing
                if end < 0:
                    buffer = buffer[-4:]
                    break
                buffer = buffer[end + 5 :]
                self.chunked = False
                out.append(CLOSE_RESPONSE if self.close_after else RESPONSE)
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            buffer = buffer[end + 4 :]
            self.close_after = b"\nconnection: close" in head
            length = head.find(b"\ncontent-length:")
            if length >= 0:
                line_end = head.find(b"\r\n", length + 1)
                value = head[length + 16 : line_end if line_end >= 0 else len(head)]
                self.body_left = int(value.strip() or b"0")
            elif b"\ntransfer-encoding: chunked" in head:
                self.chunked = True
                continue
            if not self.body_left:
                out.append(CLOSE_RESPONSE if self.close_after else RESPONSE)
        self.buffer = buffer
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
            if self.close_after and not self.body_left and not self.chunked:
                self.transport.close()


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def run(coroutine) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    run(main(args.host, args.port))
    sys.exit(0)
