"""The aiohttp application: routes, lifecycle, and the serve loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from portcullis.admin.access import Access
from portcullis.admin.api import AdminApi
from portcullis.admin.console import Console
from portcullis.admin.http import API_PREFIX, UI_PREFIX, add_unrouted, shaped
from portcullis.admin.openapi import document
from portcullis.config.model import Config
from portcullis.identity.dev_issuer import DEV_PATH, load_or_create_key
from portcullis.identity.dev_login import DevLogin
from portcullis.server.gateway import Gateway
from portcullis.server.legacy_sse import LegacySseEndpoint
from portcullis.server.mcp_endpoint import McpEndpoint
from portcullis.store.db import ensure_schema, make_engine

log = logging.getLogger("portcullis")

GATEWAY_KEY = web.AppKey("gateway", Gateway)
DEV_LOGIN_KEY = web.AppKey("dev_login", DevLogin)
AUDIT_KEY_PATH = "/.well-known/portcullis-audit-key"  # the public half of the checkpoint signing key


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
    app.router.add_get("/.well-known/oauth-protected-resource", _root_metadata)
    app.router.add_get("/.well-known/oauth-protected-resource/mcp/{server}", _server_metadata)
    app.router.add_get("/.well-known/oauth-protected-resource/mcp/{server}/sse", _server_metadata)
    app.router.add_get(DEV_PATH + "/jwks.json", _dev_jwks)
    app.router.add_get(DEV_PATH + "/.well-known/openid-configuration", _dev_discovery)
    access = Access(gw)
    # the admin API and the console are sub-applications whose every route is `shaped` (one error shape, security
    # headers), the last one answering what matched nothing; no middleware: MCP requests pay nothing for them
    api = web.Application(client_max_size=config.limits.max_body_bytes)
    ui = web.Application(client_max_size=config.limits.max_body_bytes)
    AdminApi(gw, access).routes(api)
    api.router.add_get("/openapi.json", shaped(_openapi))
    dev = None
    if config.auth.mode == "oidc" and config.auth.dev_issuer.enabled:  # development only (docs/admin.md)
        dev_cfg = config.auth.dev_issuer
        dev = DevLogin(load_or_create_key(dev_cfg.key_file), lambda: gw.public_base, dev_cfg.token_ttl)
        dev.routes(app)
        app[DEV_LOGIN_KEY] = dev
    Console(gw, access, dev if config.admin.console.client_id is None else None).routes(ui)
    app.router.add_get("/admin", _to_console)
    app.router.add_get(UI_PREFIX, _to_console)  # before the sub-application: its prefix alone would answer 404
    for sub in (api, ui):
        add_unrouted(sub, access.record_unrouted)
    app.add_subapp(API_PREFIX, api)
    app.add_subapp(UI_PREFIX, ui)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/agent/connect", gw.agents.handle)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get(AUDIT_KEY_PATH, _audit_key)
    app.router.add_get("/readyz", _readyz)

    async def on_startup(_app: web.Application) -> None:
        await gw.start()

    async def on_cleanup(_app: web.Application) -> None:
        await gw.stop()
        engine.dispose()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _server_metadata(request: web.Request) -> web.Response:
    """RFC 9728 protected-resource metadata, path form: one document per MCP endpoint."""
    gw = request.app[GATEWAY_KEY]
    server = request.match_info["server"]
    if not gw.known(server) or not gw.auth.enabled:
        return web.json_response({"error": "not_found"}, status=404)
    return web.json_response(gw.auth.metadata(gw.resource_url(server)), headers={"Cache-Control": "max-age=300"})


async def _root_metadata(request: web.Request) -> web.Response:
    """RFC 9728 metadata, root form: the gateway as a whole (tokens for it are accepted on every endpoint)."""
    gw = request.app[GATEWAY_KEY]
    if not gw.auth.enabled:
        return web.json_response({"error": "not_found"}, status=404)
    return web.json_response(gw.auth.metadata(gw.public_base), headers={"Cache-Control": "max-age=300"})


async def _dev_jwks(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    if gw.auth.dev_jwks is None:
        return web.json_response({"error": "not_found"}, status=404)
    return web.json_response(gw.auth.dev_jwks)


async def _dev_discovery(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    if gw.auth.dev_issuer is None:
        return web.json_response({"error": "not_found"}, status=404)
    issuer = gw.auth.dev_issuer
    doc: dict[str, object] = {"issuer": issuer, "jwks_uri": issuer + "/jwks.json"}
    dev = request.app.get(DEV_LOGIN_KEY)
    if dev is not None:
        doc.update(
            dev.discovery(), code_challenge_methods_supported=["S256"], grant_types_supported=["authorization_code"]
        )
    return web.json_response(doc)


async def _audit_key(request: web.Request) -> web.Response:
    """What verifiers check checkpoints with (``portcullis audit verify --public-key``); public by design."""
    gw = request.app[GATEWAY_KEY]
    if gw.audit_public_key is None:
        return web.json_response({"error": "not_found", "detail": "checkpoints are not signed"}, status=404)
    body = {"key_id": gw.audit_key_id, "algorithm": "Ed25519", "public_key_pem": gw.audit_public_key.decode()}
    return web.json_response(body, headers={"Cache-Control": "max-age=300"})


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (text format 0.0.4). Bounded labels, no secrets: see observe/metrics.py."""
    gw = request.app[GATEWAY_KEY]
    body = await asyncio.to_thread(generate_latest, gw.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _openapi(request: web.Request) -> web.Response:
    """The admin API's OpenAPI document (public: it describes routes, never data)."""
    gw = request.config_dict[GATEWAY_KEY]
    return web.json_response(document(gw.public_base, list(gw.config.servers)), headers={"Cache-Control": "max-age=60"})


async def _to_console(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/ui/")


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
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(1024)
    sock.setblocking(False)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app = build_app(config)
    if config.public_url is None:  # known only now that the port is bound (port 0 picks one)
        app[GATEWAY_KEY].public_base = f"http://{shown}:{port}"
    lim = config.limits
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=lim.drain_timeout,
        max_line_size=lim.max_header_bytes,
        max_field_size=lim.max_header_bytes,
        max_headers=lim.max_headers,
        keepalive_timeout=lim.keepalive_timeout,
    )
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
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
        app[GATEWAY_KEY].begin_drain()  # readiness false and new requests refused before the listener closes
        await runner.cleanup()  # stop listening; in-flight handlers get drain_timeout, then are cancelled


def run(config: Config) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
