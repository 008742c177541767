"""The aiohttp application: routes, lifecycle, and the serve loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from aiohttp import web

from portcullis.config.model import Config
from portcullis.server.gateway import Gateway
from portcullis.server.legacy_sse import LegacySseEndpoint
from portcullis.server.mcp_endpoint import McpEndpoint
from portcullis.store.db import ensure_schema, make_engine

log = logging.getLogger("portcullis")

GATEWAY_KEY = web.AppKey("gateway", Gateway)


def build_app(config: Config) -> web.Application:
    engine = make_engine(config.store)
    ensure_schema(engine, auto_create=config.store.startswith("sqlite"))
    gw = Gateway(config, engine)
    endpoint = McpEndpoint(gw)
    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[GATEWAY_KEY] = gw
    legacy = LegacySseEndpoint(endpoint)
    app.router.add_route("*", "/mcp/{server}", endpoint.handle)
    app.router.add_get("/mcp/{server}/sse", legacy.open)
    app.router.add_post("/mcp/{server}/messages", legacy.post)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)

    async def on_startup(_app: web.Application) -> None:
        await gw.start()

    async def on_cleanup(_app: web.Application) -> None:
        await gw.stop()
        engine.dispose()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    ready = gw.writer.healthy and not gw.draining
    return web.json_response(
        {"ready": ready, "store": "ok" if gw.writer.healthy else "failing", "draining": gw.draining},
        status=200 if ready else 503,
    )


async def serve(config: Config, *, ready_line: bool = True) -> None:
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(1024)
    sock.setblocking(False)
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if ready_line:
        sys.stdout.write(f"READY http://{shown}:{port}\n")
        sys.stdout.flush()
    log.info("listening on http://%s:%d; servers: %s", shown, port, ", ".join(config.servers) or "(none)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def run(config: Config) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
