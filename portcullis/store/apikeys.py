"""API keys for automated agents: ``pcl_<id>_<secret>``, stored only as a SHA-256 of the secret.

The secret is 256 random bits, so a plain hash is enough (no password stretching needed); the id lets the gateway
find the row without scanning. A key is shown once, at creation. Creation and revocation go into the record trail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table, insert, select, update

from portcullis.store import admin_chain
from portcullis.store.schema import api_keys

PREFIX = "pcl_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    owner: str
    groups: tuple[str, ...]
    secret_hash: str
    created_ns: int
    expires_ns: int | None
    revoked_ns: int | None

    def usable(self, now_ns: int | None = None) -> bool:
        return usable(self.revoked_ns, self.expires_ns, now_ns)


def usable(revoked_ns: int | None, expires_ns: int | None, now_ns: int | None = None) -> bool:
    """A credential row (API key, agent token) that is neither revoked nor expired."""
    now = time.time_ns() if now_ns is None else now_ns
    return revoked_ns is None and (expires_ns is None or now < expires_ns)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str, prefix: str = PREFIX) -> tuple[str, str] | None:
    """(id, secret) of a well-formed ``<prefix><id>_<secret>`` (API keys, agent tokens), else None."""
    if not token.startswith(prefix):
        return None
    kid, sep, secret = token[len(prefix) :].partition("_")
    if not sep or not kid.isalnum() or len(secret) < 32:
        return None
    return kid, secret


def matches(key: ApiKey, secret: str) -> bool:
    return matches_hash(key.secret_hash, secret)


def matches_hash(secret_hash: str, secret: str) -> bool:
    return hmac.compare_digest(secret_hash, hash_secret(secret))


def _audit(conn: Any, kind: str, detail: str) -> None:
    """Record an API-key change on the CLI's audit chain, in the same transaction as the change."""
    admin_chain.append(conn, kind, detail)


def create(engine: Engine, name: str, owner: str, groups: list[str], ttl_seconds: int | None) -> tuple[ApiKey, str]:
    """A new key; returns it and the full token (shown once, never stored)."""
    kid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time_ns()
    key = ApiKey(
        kid,
        name,
        owner,
        tuple(groups),
        hash_secret(secret),
        now,
        None if ttl_seconds is None else now + ttl_seconds * 1_000_000_000,
        None,
    )
    with engine.begin() as conn:
        conn.execute(
            insert(api_keys).values(
                id=key.id,
                name=name,
                owner=owner,
                groups=json.dumps(list(groups)),
                secret_hash=key.secret_hash,
                created_ns=now,
                expires_ns=key.expires_ns,
                revoked_ns=None,
            )
        )
        _audit(conn, "apikey_created", f"api key {kid} {name!r} for {owner!r}, groups {sorted(groups)}")
    return key, f"{PREFIX}{kid}_{secret}"


def revoke(engine: Engine, kid: str) -> bool:
    return revoke_row(engine, api_keys, kid, "apikey_revoked", f"api key {kid} revoked")


def revoke_row(engine: Engine, table: Table, row_id: str, kind: str, detail: str) -> bool:
    """Revoke one credential row (``id``, ``revoked_ns``) and record it on the admin chain, in one transaction."""
    with engine.begin() as conn:
        n = conn.execute(
            update(table).where(table.c.id == row_id, table.c.revoked_ns.is_(None)).values(revoked_ns=time.time_ns())
        ).rowcount
        if n:
            admin_chain.append(conn, kind, detail)
    return bool(n)


def load_all(engine: Engine) -> dict[str, ApiKey]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_keys)).all()
    return {
        r.id: ApiKey(
            r.id, r.name, r.owner, tuple(json.loads(r.groups)), r.secret_hash, r.created_ns, r.expires_ns, r.revoked_ns
        )
        for r in rows
    }
