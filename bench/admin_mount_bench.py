"""What mounting the admin API and console costs an MCP request: aiohttp's dispatch of one POST /mcp/{server} with
no admin routes; with the admin side as a sub-application whose routes are wrapped (how server/app.py mounts it);
with the same wrapping as a middleware on the sub-application; and as a middleware on the main application (how it
was first mounted). In process, no sockets: ``python bench/admin_mount_bench.py``.
Best of 5 runs of 100 000 dispatches each; the figure is per request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from portcullis.admin.http import add_unrouted, shaped


async def handler(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


@web.middleware
async def as_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    return await shaped(handler)(request)


async def record(_request: web.Request, _status: int) -> bool:
    return True


def variant(name: str) -> web.Application:
    app = web.Application(middlewares=[as_middleware] if name == "middleware on the main app" else [])
    app.router.add_post("/mcp/{server}", handler)
    if name == "none":
        return app
    api = web.Application(middlewares=[as_middleware] if name == "middleware on the sub-app" else [])
    api.router.add_get("/me", shaped(handler) if name == "sub-app, wrapped routes" else handler)
    if name == "sub-app, wrapped routes":
        add_unrouted(api, record)
    app.add_subapp("/admin/api", api)
    return app


async def per_request(app: web.Application, n: int = 100_000) -> float:
    app.freeze()
    req = make_mocked_request("POST", "/mcp/demo", app=app)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            await app._handle(req)
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


async def main() -> None:
    base = await per_request(variant("none"))
    for name in ("sub-app, wrapped routes", "middleware on the sub-app", "middleware on the main app"):
        us = await per_request(variant(name))
        print(f"{name:28} {us:6.2f} µs per MCP request ({us - base:+.2f} µs against no admin routes, {base:.2f} µs)")


if __name__ == "__main__":
    asyncio.run(main())
