"""The gateway's own credentials for an upstream. The client's token never goes upstream; these do.

- static ``headers`` from the config, ``headers_from_env`` (an environment variable), ``headers_from_file`` (a file,
  re-read when it changes, e.g. a rotated Kubernetes Secret);
- ``oauth``: an OAuth 2.1 client-credentials token, fetched when needed and refreshed before it expires.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from portcullis import errors
from portcullis.config.model import ServerConfig

REFRESH_MARGIN = 30.0  # seconds before expiry a token is replaced


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

    @property
    def static(self) -> dict[str, str]:
        return self._static

    async def headers(self) -> dict[str, str]:
        """All credential headers for the next upstream request."""
        out = dict(self._static)
        for header, path in self._files.items():
            out[header] = self._read(header, path)
        if self.cfg.oauth is not None:
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

    async def _oauth_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires - REFRESH_MARGIN:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._token_expires - REFRESH_MARGIN:
                return self._token
            o = self.cfg.oauth
            assert o is not None
            secret = os.environ.get(o.client_secret_env)
            if secret is None:
                raise errors.UpstreamError(
                    errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: ${o.client_secret_env} is not set"
                )
            form = {"grant_type": "client_credentials"}
            if o.scope:
                form["scope"] = o.scope
            if o.resource:
                form["resource"] = o.resource
            try:
                async with self._http.post(
                    o.token_url,
                    data=form,
                    auth=aiohttp.BasicAuth(o.client_id, secret),
                    timeout=aiohttp.ClientTimeout(total=10),
                    allow_redirects=False,
                ) as r:
                    body = await r.json(content_type=None)
                    status = r.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise errors.UpstreamError(
                    errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: no token from its authorization server"
                ) from exc
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
