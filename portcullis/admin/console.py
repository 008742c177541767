"""The web console at ``/ui``: static files served by the gateway itself (no build step), and the login through the
identity provider (OAuth 2.1 authorization code with PKCE; the gateway is the client, the browser never sees a token).

- ``GET /ui/login`` makes ``state``, ``nonce`` and a PKCE verifier, keeps them in a short-lived cookie
  (:data:`LOGIN_COOKIE`: HttpOnly, Secure, SameSite=Lax so that it comes back on the provider's redirect) and
  redirects to the provider's authorization endpoint, asking for an access token for the gateway's base URL
  (``resource``, RFC 8707).
- ``GET /ui/callback`` checks ``state`` against that cookie, redeems the code with the verifier at the token
  endpoint, verifies the access token exactly as the admin API verifies bearer tokens (issuer, signature, audience
  = the gateway's base URL, expiry), drops the token, and opens a console session (portcullis/store/
  console_sessions.py): cookie :data:`portcullis.admin.access.COOKIE` (HttpOnly, Secure, SameSite=Strict, path /)
  holds a random secret; the page reads the session's CSRF token from ``GET /admin/api/me``.
- ``POST /ui/logout`` (with the CSRF token) ends the session everywhere.

Logins and logouts are records (``console_login``, ``console_logout``) beside the ``admin_access`` record of each
request. Every answer under /ui carries a strict Content-Security-Policy (no inline script or style, nothing from
elsewhere), ``X-Frame-Options: DENY`` and ``no-store`` (admin/http.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import re
import secrets
import time
import urllib.parse
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from portcullis.admin.access import COOKIE, Access, caller_doc
from portcullis.admin.http import ApiError, shaped
from portcullis.config.model import IssuerConfig
from portcullis.identity.dev_login import CLIENT_ID as DEV_CLIENT_ID
from portcullis.identity.dev_login import DevLogin
from portcullis.identity.tokens import AuthError
from portcullis.server.gateway import Gateway
from portcullis.store import console_sessions

log = logging.getLogger("portcullis.console")

LOGIN_COOKIE = "__Host-portcullis-login"
LOGIN_TTL = 600
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ERROR_CODE = re.compile(r"[a-z_]{1,40}")  # RFC 6749 4.1.2.1 error codes; anything else is not echoed
CALLBACK_KEYS = frozenset({"code", "state", "error", "error_description", "iss", "session_state"})


class Console:
    def __init__(self, gw: Gateway, access: Access, dev: DevLogin | None = None) -> None:
        self.gw = gw
        self.access = access
        self.dev = dev  # the development issuer's sign-in, when it is on and no console client is configured
        self._endpoints: tuple[str, str] | None = None  # (authorization, token), from the issuer's discovery
        self._static = {p.name: p for p in resources.files("portcullis.admin").joinpath("static").iterdir()}

    def routes(self, app: web.Application) -> None:
        audited = self.access.audited
        """On the console's sub-application, mounted at /ui."""
        app.router.add_get("/", shaped(self.index))
        app.router.add_get("/static/{name}", shaped(self.static))
        app.router.add_get("/login", shaped(audited(self.login)))
        app.router.add_get("/callback", shaped(audited(self.callback, CALLBACK_KEYS)))
        app.router.add_post("/logout", shaped(audited(self.logout)))

    # --- the page -------------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.Response:
        entry = self._static.get(name)
        suffix = name[name.rfind(".") :] if "." in name else ""
        if entry is None or suffix not in STATIC_TYPES:
            raise ApiError(404, "no such file")
        return web.Response(body=entry.read_bytes(), content_type=STATIC_TYPES[suffix], charset="utf-8")

    # --- login ----------------------------------------------------------------------------------------------

    @property
    def _cfg(self) -> Any:
        return self.gw.config.admin.console

    def _issuer(self) -> IssuerConfig:
        issuers = self.gw.config.auth.issuers
        want = self._cfg.issuer
        for i in issuers:
            if want is None or i.issuer == want:
                return i
        raise ApiError(503, "admin.console.issuer is not one of auth.issuers")

    @property
    def _client_id(self) -> str | None:
        if self._cfg.client_id is not None:
            return str(self._cfg.client_id)
        return DEV_CLIENT_ID if self.dev is not None else None

    def _redirect_uri(self) -> str:
        return self.gw.public_base + "/ui/callback"

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.gw.auth.enabled or self._client_id is None:
            return _page(
                "Console login is not configured",
                "Set auth.mode: oidc and admin.console.client_id (an OAuth client registered at your identity "
                "provider with the redirect URI " + self._redirect_uri() + ").",
                status=503,
            )
        authorize, _token = await self._discover()
        state = _b64(secrets.token_bytes(24))
        verifier = _b64(secrets.token_bytes(48))
        nonce = _b64(secrets.token_bytes(24))
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        params = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": self._redirect_uri(),
            "scope": " ".join(self._cfg.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": self.gw.public_base,
        }
        sep = "&" if "?" in authorize else "?"
        resp = web.HTTPSeeOther(authorize + sep + urllib.parse.urlencode(params))
        resp.set_cookie(
            LOGIN_COOKIE,
            f"{state}.{verifier}",
            max_age=LOGIN_TTL,
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
        )
        raise resp

    async def callback(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        kept = request.cookies.get(LOGIN_COOKIE, "")
        state, _, verifier = kept.partition(".")
        if "error" in q:
            said = q["error"] if ERROR_CODE.fullmatch(q["error"]) else "an unrecognised error"  # OAuth error codes
            request["admin_refused"] = f"identity provider: {said}"
            return self._failed(f"The identity provider refused the login ({said}).")
        sent = q.get("state", "")
        if not state or not sent or not hmac.compare_digest(state.encode(), sent.encode()):
            request["admin_refused"] = "login state missing or wrong"
            return self._failed("This login was not started here, or it took too long. Sign in again.", 400)
        code = q.get("code")
        if not code or self._client_id is None:
            request["admin_refused"] = "no code"
            return self._failed("The identity provider sent no authorization code.", 400)
        try:
            token = await self._redeem(code, verifier)
            caller = await self.gw.auth.authenticate({"Authorization": f"Bearer {token}"}, [self.gw.public_base])
        except AuthError as exc:
            request["admin_refused"] = f"token refused: {exc.error}"
            return self._failed(f"The access token from the identity provider was refused: {exc.description}.", 403)
        except LoginError as exc:
            request["admin_refused"] = str(exc)[:200]
            return self._failed(str(exc), 502)
        if caller.principal.kind != "user":
            request["admin_refused"] = f"a {caller.principal.kind} cannot sign in"
            return self._failed("Only people sign in to the console (this token is not a user's).", 403)
        request["admin_caller"] = caller
        expires = time.time_ns() + self._cfg.session_ttl * 1_000_000_000
        secret, _session = await asyncio.to_thread(console_sessions.create, self.gw.engine, caller_doc(caller), expires)
        self.gw.record_event("-", None, "console_login", f"console login by {caller.record_text}")
        resp = web.HTTPSeeOther("/ui/")
        resp.set_cookie(
            COOKIE,
            secret,
            max_age=self._cfg.session_ttl,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        resp.del_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        """Ends the console session (CSRF-checked like every change) and always clears the cookie."""
        try:
            who = await self.access.who(request)
        except ApiError as exc:
            if exc.status == 401:  # the session had ended already: the cookie goes too
                exc.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
            raise
        secret = request.cookies.get(COOKIE)
        if who.via == "console" and secret:
            await asyncio.to_thread(console_sessions.end, self.gw.engine, secret)
            self.gw.record_event("-", None, "console_logout", f"console logout by {who.caller.record_text}")
        resp = web.Response(status=204)
        resp.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return resp

    def _failed(self, message: str, status: int = 403) -> web.Response:
        resp = _page("Sign-in failed", message, status=status, link=("/ui/login", "Sign in again"))
        resp.del_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
        return resp

    # --- the identity provider ------------------------------------------------------------------------------

    async def _discover(self) -> tuple[str, str]:
        if self._endpoints is not None:
            return self._endpoints
        if self._cfg.client_id is None and self.dev is not None:
            ends = self.dev.discovery()
            return ends["authorization_endpoint"], ends["token_endpoint"]
        issuer = self._issuer()
        url = issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = await self._get_json(url)
        except LoginError as exc:
            raise ApiError(503, f"the identity provider's discovery document could not be read: {exc}") from None
        authorize, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
        if not isinstance(authorize, str) or not isinstance(token, str):
            raise ApiError(503, "the identity provider names no authorization or token endpoint")
        if not _same_origin_or_listed(token, issuer):
            raise ApiError(503, "the identity provider's token endpoint is on a host it may not name (jwks_hosts)")
        self._endpoints = (authorize, token)
        return self._endpoints

    async def _get_json(self, url: str) -> dict[str, Any]:
        http = self.gw.http
        assert http is not None
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status != 200:
                    raise LoginError(f"HTTP {r.status} from {_origin(url)}")
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LoginError(f"{type(exc).__name__} from {_origin(url)}") from None
        if not isinstance(body, dict):
            raise LoginError(f"not a JSON object from {_origin(url)}")
        return body

    async def _redeem(self, code: str, verifier: str) -> str:
        client_id = self._client_id
        assert client_id is not None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri(),
            "code_verifier": verifier,
            "client_id": client_id,
            "resource": self.gw.public_base,
        }
        if self._cfg.client_id is None and self.dev is not None:  # the development issuer, in this process
            answer = self.dev.redeem(form)
            if answer is None:
                raise LoginError("the development issuer refused the code")
            return str(answer["access_token"])
        _authorize, token_url = await self._discover()
        auth = None
        if self._cfg.client_secret_env:
            import os

            secret = os.environ.get(self._cfg.client_secret_env)
            if not secret:
                raise LoginError(f"the console's client secret is not set (${self._cfg.client_secret_env})")
            auth = aiohttp.BasicAuth(client_id, secret)
        http = self.gw.http
        assert http is not None
        try:
            async with http.post(token_url, data=form, auth=auth, timeout=aiohttp.ClientTimeout(total=10)) as r:
                body = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LoginError(f"the token endpoint could not be reached ({type(exc).__name__})") from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            err = body.get("error") if isinstance(body, dict) else None
            raise LoginError(f"the token endpoint refused the code ({str(err or status)[:80]})")
        token: str = body["access_token"]
        return token


class LoginError(Exception):
    """The login could not be completed with the identity provider (no token or secret in the message)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _origin(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def _same_origin_or_listed(url: str, issuer: IssuerConfig) -> bool:
    p = urllib.parse.urlsplit(url)
    if _origin(url) == _origin(issuer.issuer):
        return True
    return p.scheme == "https" and (p.hostname or "") in issuer.jwks_hosts


def _page(title: str, message: str, status: int = 200, link: tuple[str, str] | None = None) -> web.Response:
    a = f'<p><a href="{html.escape(link[0])}">{html.escape(link[1])}</a></p>' if link else ""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        'content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/ui/static/console.css">'
        f'<title>{html.escape(title)} · Portcullis</title></head><body><main class="notice">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{a}</main></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")
