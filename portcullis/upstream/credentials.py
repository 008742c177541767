"""The gateway's own credentials for an upstream. The client's token never goes upstream; these do.

- static ``headers`` from the config, ``headers_from_env`` (an environment variable), ``headers_from_file`` (a file,
  re-read when it changes, e.g. a rotated Kubernetes Secret);
- ``oauth`` with ``grant: client_credentials``: an OAuth 2.1 client-credentials token, fetched when needed and
  refreshed before it expires;
- ``oauth`` with ``grant: token_exchange`` (RFC 8693): the gateway, authenticated as its own confidential client,
  exchanges the caller's validated access token (``subject_token``) at the authorization server for a token whose
  audience is this upstream. The caller's token goes to the token endpoint only. Exchanged tokens are kept per caller
  token (bounded, least recently used first out) until shortly before they expire; concurrent requests with the same
  caller token share one exchange. No caller token, or a refused exchange: the request fails closed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt

from portcullis import errors
from portcullis.config.model import ServerConfig, UpstreamOAuthConfig
from portcullis.tasks import spawn

REFRESH_MARGIN = 30.0  # seconds before expiry a token is replaced
EXCHANGE_DEFAULT_TTL = 60.0  # an exchanged token without expires_in is kept this long
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
USABLE_ISSUED_TYPES = frozenset({ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"})
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")  # an OAuth error code is safe to show; error_description may echo input


class UpstreamCredentials:
    def __init__(self, name: str, cfg: ServerConfig, http: aiohttp.ClientSession) -> None:
        self.name = name
        self.cfg = cfg
        self._http = http
        self._static = dict(cfg.headers)
        for header, var in cfg.headers_from_env.items():
            value = os.environ.get(var)
            if value is None:
                raise errors.ConfigError([f"servers.{name}.headers_from_env.{header}: ${var} is not set"])
            self._static[header] = value
        self._files = {h: Path(p) for h, p in cfg.headers_from_file.items()}
        self._file_cache: dict[str, tuple[float, str]] = {}
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = asyncio.Lock()
        self.dynamic = bool(self._files) or cfg.oauth is not None
        self.exchange = cfg.oauth is not None and cfg.oauth.grant == "token_exchange"
        """Whether this upstream gets the caller's token exchanged (RFC 8693): ``headers`` needs ``subject_token``."""
        self._exchanged: OrderedDict[str, tuple[str, float]] = OrderedDict()  # caller token -> (token, refresh at)
        self._pending: dict[str, asyncio.Task[tuple[str, float]]] = {}  # caller token -> the exchange under way

    @property
    def static(self) -> dict[str, str]:
        return self._static

    async def headers(self, subject_token: str | None = None) -> dict[str, str]:
        """All credential headers for the next upstream request.

        ``subject_token``: the caller's validated access token, used only when this upstream's grant is
        ``token_exchange`` (and then required: without it the request fails closed).
        """
        out = dict(self._static)
        for header, path in self._files.items():
            out[header] = self._read(header, path)
        if self.exchange:
            out["Authorization"] = f"Bearer {await self._exchanged_token(subject_token)}"
        elif self.cfg.oauth is not None:
            out["Authorization"] = f"Bearer {await self._oauth_token()}"
        return out

    def _read(self, header: str, path: Path) -> str:
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: credential file for {header} is unreadable"
            ) from exc
        hit = self._file_cache.get(header)
        if hit is None or hit[0] != mtime:
            hit = (mtime, path.read_text().strip())
            self._file_cache[header] = hit
        return hit[1]

    # --- client credentials ---------------------------------------------------------------------------------------

    async def _oauth_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires - REFRESH_MARGIN:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._token_expires - REFRESH_MARGIN:
                return self._token
            o = self.cfg.oauth
            assert o is not None
            form = {"grant_type": "client_credentials"}
            if o.scope:
                form["scope"] = o.scope
            if o.resource:
                form["resource"] = o.resource
            status, body = await self._token_request(o, form, "no token from its authorization server")
            token = body.get("access_token") if isinstance(body, dict) else None
            if status != 200 or not isinstance(token, str):
                raise errors.UpstreamError(
                    errors.UPSTREAM_UNAVAILABLE,
                    f"upstream {self.name!r}: its authorization server refused the gateway (HTTP {status})",
                )
            ttl = body.get("expires_in")
            self._token = token
            self._token_expires = time.monotonic() + (float(ttl) if isinstance(ttl, int | float) else 300.0)
            return token

    async def _token_request(self, o: UpstreamOAuthConfig, form: dict[str, str], unreachable: str) -> tuple[int, Any]:
        """POST ``form`` to the token endpoint as the gateway's own client: ``(status, parsed JSON)``."""
        secret = os.environ.get(o.client_secret_env)
        if secret is None:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: ${o.client_secret_env} is not set"
            )
        try:
            async with self._http.post(
                o.token_url,
                data=form,
                headers={"Authorization": _client_basic(o.client_id, secret)},
                timeout=aiohttp.ClientTimeout(total=10),
                allow_redirects=False,
            ) as r:
                return r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise errors.UpstreamError(errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: {unreachable}") from exc

    # --- token exchange (RFC 8693) --------------------------------------------------------------------------------

    async def _exchanged_token(self, subject_token: str | None) -> str:
        if not subject_token:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {self.name!r} acts for the caller (token exchange), and this request carries no caller "
                "token to exchange (only a bearer JWT sent straight to a Streamable HTTP upstream can be)",
            )
        hit = self._exchanged.get(subject_token)
        if hit is not None:
            if time.monotonic() < hit[1]:
                self._exchanged.move_to_end(subject_token)
                return hit[0]
            del self._exchanged[subject_token]
        task = self._pending.get(subject_token)
        if task is None:
            task = spawn(self._exchange(subject_token), name=f"token-exchange-{self.name}")
            self._pending[subject_token] = task
            task.add_done_callback(lambda t: self._settled(subject_token, t))
        # shielded: a caller that goes away does not cancel the exchange the others wait for
        return (await asyncio.shield(task))[0]

    def _settled(self, subject_token: str, task: asyncio.Task[tuple[str, float]]) -> None:
        if self._pending.get(subject_token) is task:
            del self._pending[subject_token]
        if task.cancelled() or task.exception() is not None:  # retrieved: nobody may be left waiting for it
            return
        o = self.cfg.oauth
        assert o is not None
        self._exchanged[subject_token] = task.result()
        self._exchanged.move_to_end(subject_token)
        while len(self._exchanged) > o.cache_size:
            self._exchanged.popitem(last=False)

    async def _exchange(self, subject_token: str) -> tuple[str, float]:
        o = self.cfg.oauth
        assert o is not None
        if o.subject_issuer is not None and _issuer(subject_token) != o.subject_issuer:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {self.name!r}: the caller's token is not from {o.subject_issuer}, the only issuer whose "
                "tokens this upstream's token exchange accepts",
            )
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        resource = o.resource or (self.cfg.url if o.audience is None else None)
        if resource:
            form["resource"] = resource
        if o.audience:
            form["audience"] = o.audience
        if o.scope:
            form["scope"] = o.scope
        status, body = await self._token_request(o, form, "its authorization server did not answer the token exchange")
        if not isinstance(body, dict):
            body = {}
        token = body.get("access_token")
        if status != 200 or not isinstance(token, str) or not token:
            code = body.get("error")
            why = f", {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {self.name!r}: its authorization server refused to exchange the caller's token "
                f"(HTTP {status}{why})",
            )
        token_type = body.get("token_type")
        issued = body.get("issued_token_type")
        if (isinstance(token_type, str) and token_type.lower() != "bearer") or (
            issued is not None and issued not in USABLE_ISSUED_TYPES
        ):
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {self.name!r}: the token exchange issued no bearer access token "
                f"(token_type {str(token_type)[:40]!r}, issued_token_type {str(issued)[:80]!r})",
            )
        ttl = body.get("expires_in")
        lifetime = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else EXCHANGE_DEFAULT_TTL
        return token, time.monotonic() + lifetime - min(REFRESH_MARGIN, lifetime / 2)


def _client_basic(client_id: str, secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 2.3.1 has it: id and secret form-encoded first."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _issuer(token: str) -> str | None:
    """The ``iss`` of a token the edge has already verified (None when it is no JWT)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None
