"""The admin API's one error shape, its JSON answers, and the handler wrapper that gives every answer under
``/admin/api`` and ``/ui`` that shape and the security headers.

Every error is ``{"error": CODE, "message": TEXT}`` with the HTTP status, where CODE is one of :data:`CODES` —
also for routes that do not exist, wrong methods and bodies over the size limit, which aiohttp would otherwise answer
in plain text. TEXT never repeats a token, a cookie or a value the caller sent beyond a known-safe identifier.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("portcullis.admin")

API_PREFIX = "/admin/api"
UI_PREFIX = "/ui"
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}

# The console's Content-Security-Policy: its own scripts and styles only, no inline code, no framing, no plugins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


# records an admin request that matched no route (Access.record_unrouted; the raw path is never recorded)
Recorder = Callable[[web.Request, int], Awaitable[bool]]
UNROUTED = "unrouted"  # the name of each sub-application's last, catch-all route


class ApiError(web.HTTPException):
    """An admin API refusal in the one shape. ``status`` picks the code."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=orjson.dumps({"error": CODES.get(status, "error"), "message": message}).decode(),
            content_type="application/json",
            headers=headers,
        )


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def shaped(handler: Handler) -> Handler:
    """Every route of the admin API and the console is registered through this: errors in the one shape, security
    headers on every answer, nothing cached. A handler wrapper, not an aiohttp middleware: a middleware on a
    sub-application makes aiohttp run its middleware machinery for every request of the gateway (+1.6 µs for each
    MCP message, bench/admin_mount_bench.py)."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except ApiError as exc:
            _harden(exc)
            raise
        except web.HTTPException as exc:
            if exc.status < 400:  # redirects
                _harden(exc)
                raise
            refusal = ApiError(exc.status, _plain_message(exc), _kept_headers(exc))
            _harden(refusal)
            raise refusal from None
        except Exception:
            log.exception("admin request failed: %s %s", request.method, request.match_info.route.resource)
            refusal = ApiError(500, "internal error: the gateway's log has the details")  # never the exception's text
            _harden(refusal)
            raise refusal from None
        _harden(resp)
        return resp

    return run


def add_unrouted(app: web.Application, recorder: Recorder) -> None:
    """The last route of a sub-application: what matched no route gets 404, or 405 with ``Allow`` when the path
    exists with other methods, in the one shape, and is recorded (``recorder``)."""

    async def unrouted(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not catch_all:
                _match, methods = await resource.resolve(request)
                allowed |= methods
        await recorder(request, 405 if allowed else 404)
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    catch_all = app.router.add_resource("/{tail:.*}", name=UNROUTED)
    catch_all.add_route("*", shaped(unrouted))


def _plain_message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return "method not allowed on this route"
    if exc.status == 413:
        return "the request body is too large"
    return exc.reason


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After", "Location")}


def _harden(resp: web.StreamResponse) -> None:
    for k, v in SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    resp.headers.setdefault("Cache-Control", "no-store")
