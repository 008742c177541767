"""Agent tokens: ``pca_<id>_<secret>``, stored only as a SHA-256 of the secret, each allowed a set of server names.

An agent presents its token when it connects; the gateway checks it against the store at every connect, so a
revocation takes effect at the agent's next connect (and :meth:`portcullis.tunnel.hub.AgentHub.revoked` drops live
connections of a revoked token within ``auth.api_key_refresh`` seconds). Rotation without downtime: create a second
token for the same agent name, roll it out, revoke the first. Creation and revocation go into the audit trail.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select

from portcullis.store import admin_chain
from portcullis.store.apikeys import hash_secret, matches_hash, revoke_row, split_key, usable
from portcullis.store.schema import agent_tokens

PREFIX = "pca_"


@dataclass(frozen=True, slots=True)
class AgentToken:
    id: str
    name: str
    servers: tuple[str, ...]
    secret_hash: str
    created_ns: int
    expires_ns: int | None
    revoked_ns: int | None

    def usable(self, now_ns: int | None = None) -> bool:
        return usable(self.revoked_ns, self.expires_ns, now_ns)


def create(engine: Engine, name: str, servers: list[str], ttl_seconds: int | None) -> tuple[AgentToken, str]:
    tid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time_ns()
    tok = AgentToken(
        tid,
        name,
        tuple(servers),
        hash_secret(secret),
        now,
        None if ttl_seconds is None else now + ttl_seconds * 1_000_000_000,
        None,
    )
    with engine.begin() as conn:
        conn.execute(
            insert(agent_tokens).values(
                id=tid,
                name=name,
                servers=json.dumps(sorted(servers)),
                secret_hash=tok.secret_hash,
                created_ns=now,
                expires_ns=tok.expires_ns,
                revoked_ns=None,
            )
        )
        admin_chain.append(conn, "agent_token_created", f"agent token {tid} for {name!r}, servers {sorted(servers)}")
    return tok, f"{PREFIX}{tid}_{secret}"


def revoke(engine: Engine, tid: str) -> bool:
    return revoke_row(engine, agent_tokens, tid, "agent_token_revoked", f"agent token {tid} revoked")


def _token(r: Any) -> AgentToken:
    return AgentToken(
        r.id, r.name, tuple(json.loads(r.servers)), r.secret_hash, r.created_ns, r.expires_ns, r.revoked_ns
    )


def load(engine: Engine, tid: str) -> AgentToken | None:
    with engine.connect() as conn:
        r = conn.execute(select(agent_tokens).where(agent_tokens.c.id == tid)).first()
    return None if r is None else _token(r)


def load_all(engine: Engine) -> list[AgentToken]:
    with engine.connect() as conn:
        return [_token(r) for r in conn.execute(select(agent_tokens).order_by(agent_tokens.c.created_ns))]


def check(engine: Engine, token: str) -> AgentToken | None:
    """The token's row if the token is well formed, known, its secret matches and it is usable; else None."""
    parts = split_key(token, PREFIX)
    if parts is None:
        return None
    row = load(engine, parts[0])
    if row is None or not matches_hash(row.secret_hash, parts[1]) or not row.usable():
        return None
    return row
