"""Web console sessions, kept in the store so that every replica knows them and a logout ends them everywhere.

The browser holds ``<secret>`` in an HttpOnly cookie; the store holds only its SHA-256, the caller as the access token
named it (subject, email, groups, client id, issuer) and the session's CSRF token. The access token itself is checked
once, at login, and dropped: nothing here can be replayed against the identity provider or an upstream.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, and_, delete, insert, select, update

from portcullis.store.schema import console_sessions


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    caller: dict[str, Any]  # {"sub", "email", "groups", "client_id", "iss", "kind", "scopes"}
    csrf: str
    expires_ns: int


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(engine: Engine, caller: dict[str, Any], expires_ns: int) -> tuple[str, ConsoleSession]:
    """A new session; returns the cookie's secret (shown once) and the session."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = time.time_ns()
    with engine.begin() as conn:
        conn.execute(delete(console_sessions).where(console_sessions.c.expires_ns < now))  # keep the table small
        conn.execute(
            insert(console_sessions).values(
                id_hash=_hash(secret),
                caller=orjson.dumps(caller).decode(),
                csrf=csrf,
                created_ns=now,
                expires_ns=expires_ns,
            )
        )
    return secret, ConsoleSession(caller, csrf, expires_ns)


def load(engine: Engine, secret: str, now_ns: int | None = None) -> ConsoleSession | None:
    """The live session of this cookie secret, or None (unknown, expired, logged out)."""
    now = now_ns or time.time_ns()
    c = console_sessions.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.caller, c.csrf, c.expires_ns).where(
                and_(c.id_hash == _hash(secret), c.ended_ns.is_(None), c.expires_ns > now)
            )
        ).first()
    if row is None:
        return None
    return ConsoleSession(orjson.loads(row.caller), row.csrf, row.expires_ns)


def end(engine: Engine, secret: str) -> bool:
    with engine.begin() as conn:
        res = conn.execute(
            update(console_sessions)
            .where(and_(console_sessions.c.id_hash == _hash(secret), console_sessions.c.ended_ns.is_(None)))
            .values(ended_ns=time.time_ns())
        )
    return bool(res.rowcount)
