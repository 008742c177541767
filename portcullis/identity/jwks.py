"""Signing keys per issuer: discovery, JWKS fetch, and a bounded refetch when an unknown ``kid`` shows up.

An unknown ``kid`` triggers a refetch, bounded three ways so that forged tokens cannot drive a storm: one fetch at
a time per issuer (single flight), at least ``min_refetch_interval`` between fetches, and a kid that was not found
is not looked for again for ``negative_ttl``. Keys also refresh after ``max_age``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import jwt
import yarl

log = logging.getLogger("portcullis.identity")


class JwksError(Exception):
    """The issuer's keys could not be fetched or read."""


class IssuerKeys:
    def __init__(
        self,
        issuer: str,
        http: aiohttp.ClientSession,
        jwks_uri: str | None = None,
        min_refetch_interval: float = 1.0,
        max_age: float = 600.0,
        timeout: float = 5.0,
        negative_ttl: float = 60.0,
        jwks_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.issuer = issuer
        self.jwks_hosts = jwks_hosts  # hosts a discovered jwks_uri may name besides the issuer's own
        self._http = http
        self.jwks_uri = jwks_uri
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._inflight: asyncio.Future[None] | None = None
        self.min_refetch_interval = min_refetch_interval
        self.max_age = max_age
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.fetches = 0
        self.scopes_supported: frozenset[str] | None = None  # from discovery; None until known
        self.negative_ttl = negative_ttl
        self._missing: dict[str | None, float] = {}

    def pin(self, jwks: dict[str, Any]) -> None:
        """Use these keys and never fetch (the gateway's own dev issuer)."""
        self._keys = {str(k.get("kid", "")): jwt.PyJWK.from_dict(k) for k in jwks["keys"]}
        self._fetched_at = float("inf")
        self.max_age = float("inf")

    def get(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid`` if known now (no I/O)."""
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    @property
    def stale(self) -> bool:
        return self._fetched_at != float("inf") and time.monotonic() - self._fetched_at > self.max_age

    async def ensure(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid``, fetching the JWKS when it is unknown (bounded) or the cache is old.

        Bounds: a kid that was looked for and not found is not looked for again for ``negative_ttl``; refetches are
        at least ``min_refetch_interval`` apart (a caller that comes sooner waits out the rest of the interval, so a
        real rotation is still picked up at once); concurrent callers share one fetch.
        """
        key = self.get(kid)
        if key is not None and not self.stale:
            return key
        now = time.monotonic()
        if self._fetched_at == float("inf") or (key is None and self._missing.get(kid, 0.0) > now):
            return None  # pinned keys, or a kid known to be unknown
        wait = self._fetched_at + self.min_refetch_interval - now
        if wait > 0 and self._fetched_at:
            await asyncio.sleep(wait)
            key = self.get(kid)  # someone else's refetch may have brought it
            if key is not None:
                return key
        await self.refresh()
        key = self.get(kid)
        if key is None:
            if len(self._missing) > 1024:
                self._missing.clear()
            self._missing[kid] = time.monotonic() + self.negative_ttl
        return key

    async def refresh(self) -> None:
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight = fut
        try:
            await self._fetch()
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            self._inflight = None

    async def _fetch(self) -> None:
        self.fetches += 1
        if self.jwks_uri is None or self.scopes_supported is None:
            doc = await self._json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if doc.get("issuer") != self.issuer:
                raise JwksError(f"discovery for {self.issuer!r} names a different issuer")
            scopes = doc.get("scopes_supported")
            self.scopes_supported = (
                frozenset(x for x in scopes if isinstance(x, str)) if isinstance(scopes, list) else frozenset()
            )
            if self.jwks_uri is None:
                uri = doc.get("jwks_uri")
                if not isinstance(uri, str):
                    raise JwksError(f"discovery for {self.issuer!r} has no jwks_uri")
                self._check_jwks_origin(uri)
                self.jwks_uri = uri
        data = await self._json(self.jwks_uri)
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in data.get("keys", []):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                k = jwt.PyJWK.from_dict(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type we do not use (or a broken key): skip it, never fail the whole set
            keys[str(jwk.get("kid", ""))] = k
        if not keys:
            raise JwksError(f"the JWKS of {self.issuer!r} has no usable signing keys")
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("loaded %d signing keys for issuer %s", len(keys), self.issuer)

    def _check_jwks_origin(self, uri: str) -> None:
        """SSRF guard: a discovery document may only send the gateway to the issuer's own origin (scheme, host,
        port) for keys, or to a host the config allows (``jwks_hosts``); a configured ``jwks_uri`` is trusted."""
        want, got = yarl.URL(self.issuer), yarl.URL(uri)
        same = (got.scheme, got.host, got.port) == (want.scheme, want.host, want.port)
        if not same and not (got.scheme == "https" and got.host in self.jwks_hosts):
            raise JwksError(
                f"discovery for {self.issuer!r} names a jwks_uri on another host ({got.host}): add it to the "
                "issuer's jwks_hosts, or set jwks_uri, if that is right"
            )

    async def _json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http.get(url, timeout=self._timeout, allow_redirects=False) as r:
                if r.status != 200:
                    raise JwksError(f"{url} answered HTTP {r.status}")
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksError(f"{url} is unreachable ({type(exc).__name__})") from exc
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise JwksError(f"{url} did not return JSON") from exc
        if not isinstance(data, dict):
            raise JwksError(f"{url} did not return a JSON object")
        return data
