"""A small token issuer for local development: the embedded default needs no external identity provider.

Off unless ``auth.dev_issuer.enabled``. Its signing key (EC P-256) lives in ``key_file``, created on first use with
mode 0600; ``portcullis token --user alice --groups eng,oncall`` mints a token with it, and the gateway trusts it
like any other issuer (it serves the public key at ``/dev-issuer/jwks.json``). Never enable it in production: whoever
can read the key file can be anyone.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

DEV_PATH = "/dev-issuer"


def dev_issuer_url(public_base: str) -> str:
    return public_base.rstrip("/") + DEV_PATH


def load_or_create_key(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The private JWK in ``path``; a new one is written (0600) if the file does not exist."""
    p = Path(path)
    if p.exists():
        data: dict[str, Any] = json.loads(p.read_text())
        return data
    key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    jwk.update({"kid": "dev-" + secrets.token_hex(6), "alg": "ES256", "use": "sig"})
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwk, f)
    return jwk


def public_jwks(private_jwk: dict[str, Any]) -> dict[str, Any]:
    public = {k: v for k, v in private_jwk.items() if k != "d"}
    return {"keys": [public]}


def mint(
    private_jwk: dict[str, Any],
    issuer: str,
    audience: str,
    subject: str,
    groups: list[str],
    email: str | None = None,
    ttl: int = 3600,
    scope: str = "",
) -> str:
    key = jwt.PyJWK.from_dict(private_jwk)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "groups": groups,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(12),
        "client_id": "portcullis-cli",
    }
    if email:
        claims["email"] = email
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, key.key, algorithm="ES256", headers={"kid": private_jwk["kid"], "typ": "at+jwt"})
