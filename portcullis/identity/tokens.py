"""Bearer token verification: signature against the issuer's JWKS, algorithm allow-list, issuer, audience, time.

A verified token is cached until it expires (bounded LRU), so the common case — the same token on every call of a
session — costs a dictionary lookup and a clock read. Every refusal is an :class:`AuthError` that says why in words
that name no secret (never the token).
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from portcullis.identity.jwks import IssuerKeys, JwksError
from portcullis.policy.model import Principal

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class AuthError(Exception):
    """Authentication failed. ``status`` 401 (no or bad credentials) or 403 (insufficient scope)."""

    def __init__(self, status: int, error: str, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    issuer: str
    algorithms: frozenset[str]
    groups_claim: str
    email_claim: str


@dataclass(slots=True)
class Verified:
    principal: Principal
    issuer: str
    audience: str
    scopes: frozenset[str]
    expires: float
    memo: Any = None  # what the edge derives from it once (its Caller), cached with the verification


def claim_path(claims: Mapping[str, Any], path: str) -> Any:
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def as_groups(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(g for g in value.replace(",", " ").split() if g)
    if isinstance(value, list | tuple):
        return frozenset(str(g) for g in value if isinstance(g, str | int))
    return frozenset()


def _b64json(part: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


class TokenVerifier:
    def __init__(
        self,
        issuers: Sequence[IssuerPolicy],
        keys: Mapping[str, IssuerKeys],
        *,
        leeway: float = 30.0,
        allowed_types: Sequence[str] = ("at+jwt", "application/at+jwt", "JWT"),
        cache_size: int = 10_000,
    ) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._keys = keys
        self.leeway = leeway
        self._types = frozenset(t.lower() for t in allowed_types)
        self._cache: OrderedDict[tuple[str, str], Verified] = OrderedDict()
        self._cache_size = cache_size

    def cached(self, token: str, audience: str) -> Verified | None:
        """A still-valid earlier verification of this token for this audience (no I/O, no crypto)."""
        v = self._cache.get((token, audience))
        if v is None:
            return None
        if v.expires + self.leeway < time.time():
            del self._cache[(token, audience)]
            return None
        return v

    async def verify(self, token: str, audiences: Sequence[str]) -> Verified:
        """Verify ``token`` for one of ``audiences`` (the endpoint's canonical resource URL first)."""
        for aud in audiences:
            v = self.cached(token, aud)
            if v is not None:
                return v
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError(401, "invalid_token", "the bearer token is not a JWT")
        try:
            header = _b64json(parts[0])
            unverified = _b64json(parts[1])
        except ValueError:
            raise AuthError(401, "invalid_token", "the bearer token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC:
            raise AuthError(401, "invalid_token", f"token algorithm {alg!r} is not accepted")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in self._types):
            raise AuthError(401, "invalid_token", f"token type {typ!r} is not an access token")
        iss = unverified.get("iss")
        policy = self._issuers.get(iss) if isinstance(iss, str) else None
        if policy is None:
            raise AuthError(401, "invalid_token", "the token's issuer is not trusted here")
        if alg not in policy.algorithms:
            raise AuthError(401, "invalid_token", f"token algorithm {alg!r} is not accepted for this issuer")
        kid = header.get("kid")
        try:
            key = await self._keys[policy.issuer].ensure(kid if isinstance(kid, str) else None)
        except JwksError as exc:
            raise AuthError(401, "invalid_token", f"the issuer's keys are unavailable ({exc})") from None
        if key is None:
            raise AuthError(401, "invalid_token", "the token's signing key is unknown")
        if key.algorithm_name is not None and key.algorithm_name != alg and not _compatible(key, alg):
            raise AuthError(401, "invalid_token", "the token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=policy.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_nbf": True, "strict_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "invalid_token", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "invalid_token", "the token is not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "invalid_token", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "invalid_token", "the token's issuer is not trusted here") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, "invalid_token", f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "invalid_token", "the token's signature is invalid") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, "invalid_token", f"the token is invalid ({type(exc).__name__})") from None
        aud_claim = claims["aud"]
        auds = [aud_claim] if isinstance(aud_claim, str) else list(aud_claim)
        matched = next(a for a in audiences if a in auds)
        scope = claims.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else as_groups(claims.get("scp"))
        email = claim_path(claims, policy.email_claim)
        client_id = claims.get("client_id") or claims.get("azp")
        sub = str(claims["sub"])
        principal = Principal(
            subject=sub,
            email=email if isinstance(email, str) else None,
            groups=as_groups(claim_path(claims, policy.groups_claim)),
            client_id=client_id if isinstance(client_id, str) else None,
            kind="service" if client_id is not None and client_id == sub else "user",
        )
        v = Verified(principal, policy.issuer, matched, scopes, float(claims["exp"]))
        self._remember(token, matched, v)
        return v

    def _remember(self, token: str, audience: str, v: Verified) -> None:
        self._cache[(token, audience)] = v
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _compatible(key: jwt.PyJWK, alg: str) -> bool:
    kty = getattr(key, "key_type", None)
    return (
        (kty == "RSA" and alg[:2] in ("RS", "PS"))
        or (kty == "EC" and alg.startswith("ES"))
        or (kty == "OKP" and alg == "EdDSA")
    )
