"""Read-side queries for the CLI (and later the admin API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from portcullis.store.schema import records, sessions


def list_sessions(
    engine: Engine,
    limit: int = 50,
    server: str | None = None,
    subject: str | None = None,
    before_ns: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first. ``subject``: sessions opened by that principal; ``before_ns``: created before then (paging)."""
    counts = (
        select(records.c.session_id, func.count().label("n"))
        .where(records.c.session_id.is_not(None))
        .group_by(records.c.session_id)
        .subquery()
    )
    q = (
        select(sessions, func.coalesce(counts.c.n, 0).label("records"))
        .select_from(sessions.outerjoin(counts, counts.c.session_id == sessions.c.id))
        .order_by(sessions.c.created_ns.desc())
        .limit(limit)
    )
    if server is not None:
        q = q.where(sessions.c.server == server)
    if subject is not None:
        q = q.where(sessions.c.owner.endswith("|" + subject, autoescape=True))  # owner: "issuer|subject"
    if before_ns is not None:
        q = q.where(sessions.c.created_ns < before_ns)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def get_session(engine: Engine, session_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        return dict(row._mapping) if row is not None else None


def session_records(
    engine: Engine, session_id: str, limit: int | None = None, sealed: bool = True
) -> list[dict[str, Any]]:
    """A session's records in order; at most ``limit``; ``sealed=False`` leaves the sealed originals in the store
    (``sealed`` is then None, not read at all)."""
    cols = list(records.c) if sealed else [c for c in records.c if c.name != "sealed"]
    q = select(*cols).where(records.c.session_id == session_id).order_by(records.c.seq)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    if not sealed:
        for r in rows:
            r["sealed"] = None
    return rows


def count_session_records(engine: Engine, session_id: str) -> int:
    q = select(func.count()).select_from(records).where(records.c.session_id == session_id)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def all_records(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(records).order_by(records.c.seq))]


def get_record(engine: Engine, seq: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.seq == seq)).first()
        return dict(row._mapping) if row is not None else None


def binding_owners(engine: Engine, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """Owners of minted ids by (server, what, digest) (the bind stage's, shared by every replica)."""
    from sqlalchemy import and_, or_

    from portcullis.store.schema import bindings

    if not keys:
        return {}
    cond = or_(*(and_(bindings.c.server == s, bindings.c.what == w, bindings.c.digest == d) for s, w, d in keys))
    with engine.connect() as conn:
        return {(r.server, r.what, r.digest): r.owner for r in conn.execute(select(bindings).where(cond))}
