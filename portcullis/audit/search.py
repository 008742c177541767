"""Search the audit trail: by principal, group, server, tool, method, decision, kind, session, time range and free
text over the **masked** payloads (the sealed originals are never searched or shown).

The filters the store can index run in SQL (SQLAlchemy Core, the same on SQLite and PostgreSQL); the ones that need
the JSON of a record (a principal's subject or e-mail, a group, a tool's name) are narrowed in SQL with ``LIKE`` and
decided exactly in Python, a page at a time. Results come newest first; ``cursor`` (the last ``seq`` of a page) asks
for the next page (keyset pagination: stable while records are added).

``tool`` matches the client's ``tools/call`` requests for that tool (the response records carry the method but not
the tool's name: follow ``session_id`` and ``msg_id`` to them).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, String, and_, cast, func, or_, select, true
from sqlalchemy.sql import ColumnElement

from portcullis.audit.codec import record_json
from portcullis.store.schema import records

MAX_LIMIT = 1000
PAGE = 500  # rows read per round when Python decides part of the filter


@dataclass(frozen=True, slots=True)
class Query:
    principal: str | None = None  # a subject or an e-mail, exactly
    group: str | None = None
    server: str | None = None
    tool: str | None = None
    method: str | None = None
    decision: str | None = None
    kind: str | None = None
    session: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    text: str | None = None  # case-insensitive substring of the masked payload or the detail
    limit: int = 100
    cursor: int | None = None  # only records with seq below this


def parse_when(text: str | None) -> int | None:
    """RFC 3339 (``2026-11-24T10:00:00Z``) or a duration back from now (``15m``, ``2h``, ``7d``) -> ns since the
    epoch; ValueError says what was expected."""
    if text is None:
        return None
    from portcullis.config.model import parse_duration

    try:
        return time.time_ns() - int(parse_duration(text) * 1e9)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected RFC 3339 (2026-11-24T10:00:00Z) or a duration (15m, 2h, 7d): {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1e9)


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _payload_text(engine: Engine) -> ColumnElement[Any]:
    if engine.dialect.name == "postgresql":  # any bytes, as text (non-ASCII shows escaped)
        return func.encode(records.c.payload, "escape")
    return cast(records.c.payload, String)


def _where(engine: Engine, q: Query) -> list[ColumnElement[bool]]:
    w: list[ColumnElement[bool]] = []
    for col, value in (
        (records.c.server, q.server),
        (records.c.method, q.method),
        (records.c.decision, q.decision),
        (records.c.kind, q.kind),
        (records.c.session_id, q.session),
    ):
        if value is not None:
            w.append(col == value)
    if q.since_ns is not None:
        w.append(records.c.ts_ns >= q.since_ns)
    if q.until_ns is not None:
        w.append(records.c.ts_ns < q.until_ns)
    if q.cursor is not None:
        w.append(records.c.seq < q.cursor)
    if q.principal is not None:
        w.append(records.c.principal.like(_like(orjson.dumps(q.principal).decode()), escape="\\"))
    if q.group is not None:
        w.append(records.c.principal.like(_like(orjson.dumps(q.group).decode()), escape="\\"))
    if q.tool is not None:
        w.append(records.c.method == "tools/call")
        w.append(records.c.direction == "c2s")
        w.append(_payload_text(engine).like(_like(orjson.dumps(q.tool).decode()), escape="\\"))
    if q.text is not None:
        needle = _like(q.text.lower())
        w.append(
            or_(
                func.lower(_payload_text(engine)).like(needle, escape="\\"),
                func.lower(records.c.detail).like(needle, escape="\\"),
            )
        )
    return w


def _exact(row: dict[str, Any], q: Query) -> bool:
    """What LIKE only narrowed: the principal's subject or e-mail, a group, the tool's name."""
    if q.principal is not None or q.group is not None:
        try:
            who = orjson.loads(row["principal"] or "{}")
        except orjson.JSONDecodeError:
            return False
        if q.principal is not None and q.principal not in (who.get("sub"), who.get("email")):
            return False
        if q.group is not None and q.group not in (who.get("groups") or []):
            return False
    if q.tool is not None:
        try:
            params = orjson.loads(row["payload"] or b"{}").get("params") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return False
        if not isinstance(params, dict) or params.get("name") != q.tool:
            return False
    return True


def search(engine: Engine, q: Query) -> tuple[list[dict[str, Any]], int | None]:
    """(matching records as JSON objects, newest first; the cursor of the next page, or None at the end)."""
    limit = max(1, min(q.limit, MAX_LIMIT))
    where = _where(engine, q)
    needs_python = q.principal is not None or q.group is not None or q.tool is not None
    out: list[dict[str, Any]] = []
    cursor = q.cursor
    cols = [c for c in records.c if c.name != "sealed"]
    with engine.connect() as conn:
        while len(out) < limit:
            page = PAGE if needs_python else limit - len(out) + 1
            conds = [c for c in where if cursor is None or not _is_cursor(c)]
            if cursor is not None:
                conds.append(records.c.seq < cursor)
            stmt = select(*cols).where(and_(true(), *conds)).order_by(records.c.seq.desc()).limit(page)
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
            for row in rows:
                if needs_python and not _exact(row, q):
                    continue
                if len(out) == limit:
                    return out, int(out[-1]["seq"])
                out.append(_shown(row))
            if len(rows) < page:
                return out, None
            cursor = int(rows[-1]["seq"])
    return out, int(out[-1]["seq"]) if out else None


def _is_cursor(cond: ColumnElement[bool]) -> bool:
    return getattr(cond, "left", None) is records.c.seq


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    doc = record_json({**row, "sealed": None})
    doc.pop("sealed_b64", None)
    return doc
