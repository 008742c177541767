"""Authentication at the HTTP edge, and the OAuth protected-resource metadata (RFC 9728) clients discover.

Every request to an MCP endpoint is authenticated before anything else is looked at. A missing or bad token gets
401 with ``WWW-Authenticate: Bearer resource_metadata="…"`` so that MCP clients find the authorization server on
their own; a token without the required scopes gets 403 ``insufficient_scope``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from portcullis.config.model import AuthConfig
from portcullis.identity.dev_issuer import dev_issuer_url, load_or_create_key, public_jwks
from portcullis.identity.jwks import IssuerKeys, JwksError
from portcullis.identity.tokens import AuthError, IssuerPolicy, TokenVerifier, Verified
from portcullis.policy.model import Principal
from portcullis.store import apikeys

log = logging.getLogger("portcullis.identity")

ANONYMOUS = Principal(subject="anonymous", kind="anonymous")
METADATA_PATH = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request, with what the records say about it (computed once)."""

    principal: Principal
    issuer: str | None
    scopes: frozenset[str]
    key: str  # what binds a session to its caller: issuer and subject
    record_text: str  # the principal as the store records it (subject, email, groups, client id, issuer)

    @classmethod
    def of(
        cls,
        principal: Principal,
        issuer: str | None,
        scopes: frozenset[str],
        owner: str | None = None,
        key: str | None = None,
    ) -> Caller:
        doc: dict[str, Any] = {
            "sub": principal.subject,
            "email": principal.email,
            "groups": sorted(principal.groups),
            "client_id": principal.client_id,
            "iss": issuer,
            "kind": principal.kind,
        }
        if owner is not None:
            doc["owner"] = owner
        text = json.dumps(doc, separators=(",", ":"))
        return cls(principal, issuer, scopes, key or f"{issuer or '-'}|{principal.subject}", text)


ANONYMOUS_CALLER = Caller.of(ANONYMOUS, None, frozenset())


class Authenticator:
    def __init__(self, cfg: AuthConfig, http: aiohttp.ClientSession | None, public_base: str = "") -> None:
        self.cfg = cfg
        self.enabled = cfg.mode != "none"
        self._verifier: TokenVerifier | None = None
        self.keys: dict[str, IssuerKeys] = {}
        self.dev_jwks: dict[str, Any] | None = None
        self.dev_issuer: str | None = None
        if self.enabled:
            assert http is not None
            for i in cfg.issuers:
                self.keys[i.issuer] = IssuerKeys(
                    i.issuer,
                    http,
                    i.jwks_uri,
                    cfg.jwks_min_refetch_interval,
                    cfg.jwks_max_age,
                    jwks_hosts=frozenset(h.lower() for h in i.jwks_hosts),
                )
            policies = [
                IssuerPolicy(i.issuer, frozenset(i.algorithms), i.groups_claim, i.email_claim) for i in cfg.issuers
            ]
            if cfg.dev_issuer.enabled:
                self.dev_issuer = dev_issuer_url(public_base)
                self.dev_jwks = public_jwks(load_or_create_key(cfg.dev_issuer.key_file))
                keys = IssuerKeys(self.dev_issuer, http)
                keys.pin(self.dev_jwks)
                self.keys[self.dev_issuer] = keys
                policies.append(IssuerPolicy(self.dev_issuer, frozenset({"ES256"}), "groups", "email"))
            self._verifier = TokenVerifier(policies, self.keys, leeway=cfg.clock_skew, allowed_types=cfg.token_types)
        self._required = frozenset(cfg.required_scopes)
        self._api_keys: dict[str, apikeys.ApiKey] = {}
        self._api_callers: dict[str, Caller] = {}
        self._api_reloaded = 0.0
        self.reload_api_keys: Callable[[], Awaitable[None]] | None = None

    async def prime(self) -> None:
        """Fetch each issuer's discovery and keys once at start (best effort: failures are retried on demand)."""
        for i in self.cfg.issuers:
            keys = self.keys[i.issuer]
            try:
                await keys.refresh()
            except JwksError as exc:
                log.warning("issuer %s not reachable yet: %s", i.issuer, exc)
                continue
            dropped = [s for s in i.scopes_supported if keys.scopes_supported and s not in keys.scopes_supported]
            if dropped:
                log.warning("issuer %s does not accept scopes %s; they are not advertised", i.issuer, dropped)

    @classmethod
    def closed(cls) -> Authenticator:
        """An authenticator that refuses everyone (before the real one is ready)."""
        a = cls(AuthConfig(mode="none"), None)
        a.enabled = True
        return a

    async def authenticate(self, headers: Mapping[str, str], audiences: list[str]) -> Caller:
        if not self.enabled:
            return ANONYMOUS_CALLER
        if self._verifier is None:
            raise AuthError(401, "invalid_request", "the gateway is not ready to authenticate")
        auth = headers.get("Authorization")
        if auth is None:
            raise AuthError(401, "invalid_request", "no bearer token")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "invalid_request", "the Authorization header must be 'Bearer <token>'")
        if token.startswith(apikeys.PREFIX):
            return await self._api_key(token)
        v: Verified = await self._verifier.verify(token, audiences)
        missing = self._required - v.scopes
        if missing:
            raise AuthError(403, "insufficient_scope", "the token lacks required scopes", " ".join(sorted(missing)))
        if v.memo is None:
            v.memo = Caller.of(v.principal, v.issuer, v.scopes)
        caller: Caller = v.memo
        return caller

    # --- API keys (machine identities) ------------------------------------------------------------------------

    def set_api_keys(self, keys: dict[str, apikeys.ApiKey]) -> None:
        self._api_keys = keys
        self._api_callers = {}

    async def _api_key(self, token: str) -> Caller:
        parts = apikeys.split_key(token)
        if parts is None:
            raise AuthError(401, "invalid_token", "the API key is malformed")
        kid, secret = parts
        key = self._api_keys.get(kid)
        if key is None and self.reload_api_keys is not None and time.monotonic() - self._api_reloaded > 1.0:
            self._api_reloaded = time.monotonic()
            await self.reload_api_keys()  # a key created a moment ago (bounded: at most once a second)
            key = self._api_keys.get(kid)
        if key is None or not apikeys.matches(key, secret):
            raise AuthError(401, "invalid_token", "the API key is not valid")
        if key.revoked_ns is not None:
            raise AuthError(401, "invalid_token", "the API key was revoked")
        if not key.usable():
            raise AuthError(401, "invalid_token", "the API key has expired")
        caller = self._api_callers.get(kid)
        if caller is None:
            principal = Principal(
                subject=f"apikey:{key.name}", groups=frozenset(key.groups), client_id=f"apikey:{kid}", kind="apikey"
            )
            # bound by key id: two keys that share a name are still two principals
            caller = Caller.of(
                principal, "portcullis:api-keys", frozenset(), owner=key.owner, key=f"portcullis:api-keys|{kid}"
            )
            self._api_callers[kid] = caller
        return caller

    def metadata(self, resource: str) -> dict[str, Any]:
        """RFC 9728 protected-resource metadata for ``resource``."""
        scopes: list[str] = []
        for i in self.cfg.issuers:
            known = self.keys[i.issuer].scopes_supported
            # advertise only scopes the issuer accepts: clients copy them into their registration
            scopes.extend(s for s in i.scopes_supported if s not in scopes and (not known or s in known))
        servers = [i.issuer for i in self.cfg.issuers]
        if self.dev_issuer is not None:
            servers.append(self.dev_issuer)
        doc: dict[str, Any] = {
            "resource": resource,
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "Portcullis MCP gateway",
        }
        if scopes:
            doc["scopes_supported"] = scopes
        return doc


def www_authenticate(err: AuthError, metadata_url: str) -> str:
    parts = [f'resource_metadata="{metadata_url}"']
    if err.error != "invalid_request" or err.status == 403:
        parts.append(f'error="{err.error}"')
        parts.append(f'error_description="{err.description}"')
    if err.scope:
        parts.append(f'scope="{err.scope}"')
    return "Bearer " + ", ".join(parts)
