"""Reference row `aiohttp-floor`: the least an aiohttp reverse proxy can do, to compare the shim with.

An aiohttp server whose one handler relays the request through a pooled aiohttp ClientSession and
streams the answer back (StreamResponse), as the shim's passthrough does, but with nothing else: no
middleware, no request id, no header filtering, no error mapping, no metrics or logs. The gap
between this row and `shim passthrough` is what the shim's own code costs; the gap between this row
and nginx is what aiohttp costs.

    python benchmarks/reference_proxy.py --upstream http://127.0.0.1:PORT [--port 0] [--buffered]

`--buffered` reads the upstream answer whole and sends it with one `web.Response` (headers and body in
one write) instead of streaming it: the difference shows what streaming small answers costs.

Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web
from serving import run, serve_until_signalled

SESSION = web.AppKey("session", aiohttp.ClientSession)
BUFFERED = web.AppKey("buffered", bool)
UPSTREAM = web.AppKey("upstream", str)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"})


async def relay(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    async with session.request(
        request.method, request.app[UPSTREAM] + request.raw_path, headers=request.headers,
        data=request.content if request.body_exists else None, allow_redirects=False,
    ) as upstream:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if request.app[BUFFERED]:
            body = await upstream.read()
            headers.pop("Content-Length", None)
            return web.Response(status=upstream.status, headers=headers, body=body)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (a load generator stopping mid-request)
        return response


async def main(host: str, port: int, upstream: str, buffered: bool) -> None:
    app = web.Application()
    app[BUFFERED] = buffered
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    await serve_until_signalled(web.AppRunner(app, access_log=None, handle_signals=False), host, port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--buffered", action="store_true", help="answer with one web.Response, not streamed")
    args = parser.parse_args()
    run(main(args.host, args.port, args.upstream, args.buffered))
