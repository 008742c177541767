"""Sign-in to the web console through the development issuer (``auth.dev_issuer``), so that ``make demo`` shows the
console without an identity provider: a minimal authorization-code + PKCE server for one client, the console.

- ``GET /dev-issuer/authorize`` shows a form (a user name and groups: whoever uses it can be anyone, which is what a
  development issuer is); ``POST`` issues a one-time code bound to the PKCE challenge, the redirect URI and the
  resource, and redirects back to the console.
- ``POST /dev-issuer/token`` redeems the code (S256 verifier, same redirect URI and resource) for a token minted with
  the issuer's key, audience = the requested resource.

Both answer **loopback clients only** (403 otherwise), and the only redirect URI accepted is the gateway's own
``/ui/callback``: a development gateway reachable from elsewhere does not hand out identities to the network. Codes
live in this process's memory for 60 seconds. Never enable the development issuer in production.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from portcullis.identity.dev_issuer import DEV_PATH, dev_issuer_url, mint

CLIENT_ID = "portcullis-console"
CODE_TTL = 60.0
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class _Code:
    redirect_uri: str
    challenge: str
    resource: str
    user: str
    groups: tuple[str, ...]
    expires: float


class DevLogin:
    def __init__(self, private_jwk: dict[str, Any], base: Callable[[], str], ttl: int) -> None:
        self.key = private_jwk
        self._base = base  # the gateway's public base URL (known once the listener is bound)
        self.ttl = ttl
        self._codes: dict[str, _Code] = {}

    @property
    def public_base(self) -> str:
        return self._base()

    @property
    def issuer(self) -> str:
        return dev_issuer_url(self.public_base)

    @property
    def callback(self) -> str:
        return self.public_base + "/ui/callback"

    def routes(self, app: web.Application) -> None:
        app.router.add_get(DEV_PATH + "/authorize", self.authorize_form)
        app.router.add_post(DEV_PATH + "/authorize", self.authorize)
        app.router.add_post(DEV_PATH + "/token", self.token)

    def discovery(self) -> dict[str, str]:
        return {
            "authorization_endpoint": self.public_base + DEV_PATH + "/authorize",
            "token_endpoint": self.public_base + DEV_PATH + "/token",
        }

    # --- the browser's side ---------------------------------------------------------------------------------

    def _check(self, request: web.Request, params: dict[str, str]) -> None:
        _loopback_only(request)
        if params.get("client_id") != CLIENT_ID or params.get("redirect_uri") != self.callback:
            raise _refuse(400, "only the gateway's own console may sign in here")
        if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256":
            raise _refuse(400, "response_type=code with PKCE (S256) is required")
        if not params.get("code_challenge") or not params.get("state"):
            raise _refuse(400, "code_challenge and state are required")

    async def authorize_form(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self._check(request, params)
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(params.get(k, ""))}">'
            for k in ("client_id", "redirect_uri", "response_type", "state", "code_challenge",
                      "code_challenge_method", "resource")
        )  # fmt: skip
        body = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            'content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/ui/static/console.css">'
            '<title>Development sign-in · Portcullis</title></head><body><main class="notice">'
            '<h1>Development sign-in</h1><p class="muted">The development issuer signs in whoever you say: '
            "it is for trying Portcullis on this machine only.</p>"
            f'<form method="post" action="{DEV_PATH}/authorize" class="card">{hidden}'
            '<label for="user">User</label><input id="user" name="user" value="alice" required>'
            '<label for="groups">Groups (comma-separated)</label>'
            '<input id="groups" name="groups" value="eng,oncall">'
            '<div class="actions"><button type="submit" class="primary">Sign in</button></div></form>'
            "</main></body></html>"
        )
        return web.Response(text=body, content_type="text/html", headers=HEADERS)

    async def authorize(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self._check(request, form)
        user = form.get("user", "").strip()
        groups = tuple(g.strip() for g in form.get("groups", "").split(",") if g.strip())
        if not NAME.match(user) or not all(NAME.match(g) for g in groups):
            raise _refuse(400, "user and groups: letters, digits and . _ @ - (at most 64 each)")
        now = time.monotonic()
        for code, c in list(self._codes.items()):
            if c.expires < now:
                del self._codes[code]
        code = secrets.token_urlsafe(32)
        resource = form.get("resource") or self.public_base
        if resource != self.public_base:
            raise _refuse(400, "the development issuer mints tokens for this gateway only")
        self._codes[code] = _Code(self.callback, form["code_challenge"], resource, user, groups, now + CODE_TTL)
        query = urllib.parse.urlencode({"code": code, "state": form["state"], "iss": self.issuer})
        raise web.HTTPSeeOther(f"{self.callback}?{query}", headers=HEADERS)

    # --- the gateway's side ---------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        _loopback_only(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        answer = self.redeem(form)
        if answer is None:
            return web.json_response({"error": "invalid_grant"}, status=400, headers=HEADERS)
        return web.json_response(answer, headers=HEADERS)

    def redeem(self, form: dict[str, str]) -> dict[str, Any] | None:
        """The token answer for a code (the console calls this in process), or None (invalid_grant)."""
        code = self._codes.pop(form.get("code", ""), None)  # one use, whatever happens next
        if (
            form.get("grant_type") != "authorization_code"
            or form.get("client_id") != CLIENT_ID
            or code is None
            or code.expires < time.monotonic()
            or form.get("redirect_uri") != code.redirect_uri
            or (form.get("resource") or self.public_base) != code.resource
        ):
            return None
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not hmac.compare_digest(challenge, code.challenge):
            return None
        token = mint(self.key, self.issuer, code.resource, code.user, list(code.groups), ttl=self.ttl)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl}


def _loopback_only(request: web.Request) -> None:
    try:
        ok = request.remote is not None and ipaddress.ip_address(request.remote).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise _refuse(403, "the development issuer answers this machine only")


def _refuse(status: int, message: str) -> web.HTTPException:
    cls = web.HTTPForbidden if status == 403 else web.HTTPBadRequest
    return cls(text=message, headers=HEADERS)
