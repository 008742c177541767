"""The "Python floor": a raw byte-forwarding aiohttp reverse proxy, used as a benchmark baseline.

It does no parsing at all: every request on any path is forwarded to ONE upstream URL with its method, body and
the MCP-relevant headers, over kept-alive upstream connections, and the upstream's response body is streamed back
chunk by chunk. Whatever a real gateway costs beyond this is the cost of what it does with the messages.

Usage: python bench/raw_proxy.py --upstream http://127.0.0.1:UP/mcp [--port 0]
Prints ``READY http://127.0.0.1:PORT/mcp`` (flushed) once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
from aiohttp import web

# Sized response bodies up to this many bytes are read whole and written back in one go; larger or unsized
# ones (SSE streams) are streamed chunk by chunk as they arrive.
BUFFER_MAX = 64 * 1024

# Request headers forwarded upstream (case-insensitive; CIMultiDict lookups).
REQ_HEADERS = (
    "Content-Type",
    "Accept",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Last-Event-ID",
    "Mcp-Method",
    "Mcp-Name",
)
# Response headers copied back to the client.
RESP_HEADERS = (
    "Content-Type",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Cache-Control",
    "X-Accel-Buffering",
    "Allow",
    "WWW-Authenticate",
)


class RawProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None, use_dns_cache=True)
        self.session = aiohttp.ClientSession(
            connector=conn,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        h = request.headers
        headers = {}
        for name in REQ_HEADERS:
            v = h.get(name)
            if v is not None:
                headers[name] = v
        for name, v in h.items():  # forward any Mcp-Param-* unchanged
            if name[:10].lower() == "mcp-param-":
                headers[name] = v
        body = await request.read() if request.can_read_body else None
        try:
            async with self.session.request(
                request.method, self.upstream, data=body, headers=headers, allow_redirects=False
            ) as up:
                rh = up.headers
                out_headers = {}
                for name in RESP_HEADERS:
                    v = rh.get(name)
                    if v is not None:
                        out_headers[name] = v
                clen = up.content_length
                if clen is not None and clen <= BUFFER_MAX:
                    # A sized, small body (a JSON answer): one write back instead of headers + chunks.
                    return web.Response(status=up.status, reason=up.reason, headers=out_headers, body=await up.read())
                resp = web.StreamResponse(status=up.status, reason=up.reason, headers=out_headers)
                if clen is not None:
                    resp.content_length = clen
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except (TimeoutError, aiohttp.ClientError) as exc:
            return web.Response(status=502, text=f"upstream error: {exc!r}")


async def serve(upstream: str, port: int, host: str = "127.0.0.1") -> None:
    proxy = RawProxy(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    real_port = runner.addresses[0][1]
    print(f"READY http://{host}:{real_port}/mcp", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="upstream MCP endpoint URL")
    ap.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0 = any free port)")
    args = ap.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.upstream, args.port))
    else:
        uvloop.run(serve(args.upstream, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
