"""Search the audit trail: by principal, group, server, tool, method, decision, kind, session, time range and free
text over the **masked** payloads. The sealed originals are never searched, read or shown.

Every filter runs in SQL (SQLAlchemy Core, the same statement on SQLite and PostgreSQL). The ones that look into a
record's JSON — a principal's subject or e-mail, a group, a tool's name, and text that a byte-wise ``LIKE`` could
match at the wrong place — are narrowed in SQL and decided exactly in Python, a page at a time. Results come newest
first; ``cursor`` (the ``seq`` of the last record of a page) asks for the next page (keyset pagination: stable
while records are added).

What is derived from what the trail records, without a column of its own:

- ``principal`` and ``group`` read the caller's JSON in ``records.principal``
  (:attr:`portcullis.identity.edge.Caller.record_text`: subject, e-mail, groups, client id, issuer) — the groups the
  caller had when the record was written;
- ``tool`` reads ``params.name`` of the client's ``tools/call`` requests; their responses carry the method but not the
  tool's name, so ``responses`` pairs each request with its response (same chain, flow, server and message id).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, String, and_, cast, func, or_, select
from sqlalchemy.sql import ColumnElement

from portcullis.audit.codec import record_json
from portcullis.store.schema import records

MAX_LIMIT = 1000
MAX_TEXT = 1000  # characters of a free-text, principal, group or tool filter
MIN_PAGE = 50  # rows read per round at least when Python decides part of the filter
DECISIONS = ("allow", "deny", "hold")
_SHOWN = [c for c in records.c if c.name != "sealed"]  # the sealed original is never even read
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class Query:
    """What to find. Every filter given must hold (AND); ``None`` means any.

    ``principal`` is exact, never a substring: the caller's subject, client id, or e-mail (the e-mail without regard
    to case). ``text`` is a substring of the masked payload (as the JSON text was recorded, also in its JSON-escaped
    form: ``say "hi"`` finds ``say \\"hi\\"``) or of the record's detail, case-insensitive for ASCII letters.
    ``since_ns`` is inclusive, ``until_ns`` exclusive. ``limit`` is clamped to 1..1000. ``responses`` adds to each
    client request found its response (``"response"``: a record, or ``None`` while there is none).
    """

    principal: str | None = None
    group: str | None = None
    server: str | None = None
    tool: str | None = None
    method: str | None = None
    decision: str | None = None
    kind: str | None = None
    session: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    text: str | None = None
    limit: int = 100
    cursor: int | None = None  # only records with seq below this (the previous page's next_cursor)
    responses: bool = False
    # False: ``text`` matches what servers and the gateway wrote (masked) and details, not client-sent payloads
    text_in_requests: bool = True

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
        for name in ("principal", "group", "tool", "text"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > MAX_TEXT):
                raise ValueError(f"{name} must be 1 to {MAX_TEXT} characters")


def parse_when(text: str | None, now_ns: int | None = None) -> int | None:
    """A point in time as ns since the epoch from RFC 3339 (``2026-11-24T10:00:00Z``; without an offset: UTC), a
    duration back from now (``15m``, ``2h``, ``7d``, ``2w``, ``30s``) or an integer of ns since the epoch (as
    ``ts_ns`` shows it). ValueError says what was expected. The result is clamped to the store's 64-bit range (a
    time before 1678 or after 2262 means "the beginning" or "the end")."""
    if text is None:
        return None
    now = time.time_ns() if now_ns is None else now_ns
    m = _RELATIVE.match(text)
    if m is not None:
        back = float(m.group(1)) * _UNITS[m.group(2).lower()] * 1_000_000_000
        return _clamp(now - int(back)) if back < 2**64 else -(2**63)  # further back than 64 bits reach: the start
    if text.strip().isdigit():
        return _clamp(int(text))
    t = _rfc3339(text.strip())
    if t is None:
        try:
            t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"expected RFC 3339 (2026-11-24T10:00:00Z), a duration back from now (15m, 2h, 7d) or ns: {text!r}"
            ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return _clamp((t - _EPOCH) // dt.timedelta(microseconds=1) * 1000)


def _rfc3339(text: str) -> dt.datetime | None:
    """RFC 3339 date-times Python's parser refuses: a leap second (taken as :59), more than six fractional digits
    (cut), lower-case separators, year 0000 (taken as year 1). None when it is not of that shape."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    zone = m.group(8)
    try:
        if zone in ("Z", "z"):
            tz = dt.UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        return dt.datetime(max(y, 1), mo, d, hh, mi, min(ss, 59), micro, tzinfo=tz)
    except ValueError:
        raise ValueError(f"not a valid date-time: {text!r}") from None


def _clamp(ns: int) -> int:
    return max(-(2**63), min(ns, 2**63 - 1))


# --- SQL ------------------------------------------------------------------------------------------------------


def _like(value: str) -> str:
    """A LIKE pattern (escape character ``\\``) that finds ``value`` literally anywhere."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _pg_escape(value: str) -> str:
    """``value`` as PostgreSQL's ``encode(bytes, 'escape')`` shows its UTF-8 bytes (backslash doubled, NUL and bytes
    of 0x80 and above as ``\\ooo``): how the payload is compared there, so that any bytes — not only valid UTF-8 —
    can be searched and no row can make the query fail."""
    out = []
    for b in value.encode("utf-8", "surrogatepass"):
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0 or b >= 0x80:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return "".join(out)


def _payload_like(engine: Engine, forms: list[str], lower: bool) -> ColumnElement[bool]:
    """The payload contains one of ``forms`` (already ASCII-lowered when ``lower``)."""
    if engine.dialect.name == "postgresql":
        text: ColumnElement[Any] = func.encode(records.c.payload, "escape")
        forms = [_pg_escape(f) for f in forms]
    else:
        text = cast(records.c.payload, String)
    if lower:  # the payload text is ASCII on PostgreSQL (escaped), and SQLite's lower() folds ASCII only
        text = func.lower(text)
    return or_(*(text.like(_like(f), escape="\\") for f in forms))


def _ascii_lower(s: str) -> str:
    return s.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER).decode("utf-8", "surrogatepass")


def _text_forms(text: str) -> list[str]:
    """The needle as it may stand in a JSON text: as is, JSON-escaped, JSON-escaped to ASCII (``\\u00e9``)."""
    lowered = _ascii_lower(text)
    forms = [lowered, orjson.dumps(lowered).decode()[1:-1], json.dumps(lowered)[1:-1]]
    return list(dict.fromkeys(forms))


def _json_string(value: str) -> list[str]:
    """A JSON string as JSON writers put it: raw UTF-8 (orjson, most SDKs) or escaped to ASCII (Python's json)."""
    return list(dict.fromkeys([orjson.dumps(value).decode(), json.dumps(value)]))


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
    # Caller.record_text is json.dumps(...) (ASCII-escaped); ilike so an e-mail matches without regard to case
    if q.principal is not None:
        w.append(records.c.principal.ilike(_like(json.dumps(q.principal)), escape="\\"))
    if q.group is not None:
        w.append(records.c.principal.like(_like(json.dumps(q.group)), escape="\\"))
    if q.tool is not None:
        w.append(records.c.method == "tools/call")
        w.append(records.c.direction == "c2s")
        w.append(records.c.kind == "request")
        w.append(_payload_like(engine, _json_string(q.tool), lower=False))
    if q.text is not None:
        in_payload = _payload_like(engine, _text_forms(q.text), lower=True)
        if not q.text_in_requests:  # what clients sent is stored as sent: no search oracle over its values
            in_payload = and_(records.c.direction != "c2s", in_payload)
        w.append(or_(in_payload, records.c.detail.ilike(_like(q.text), escape="\\")))
    return w


# --- exact decisions in Python ----------------------------------------------------------------------------------


def _needs_exact(q: Query) -> bool:
    if q.principal is not None or q.group is not None or q.tool is not None:
        return True
    # a needle with a backslash, NUL or non-ASCII is compared as PostgreSQL's escaped text: re-checked on the bytes
    return q.text is not None and any(c == "\\" or c == "\x00" or ord(c) > 0x7F for f in _text_forms(q.text) for c in f)


def _exact(row: dict[str, Any], q: Query) -> bool:
    if q.principal is not None or q.group is not None:
        try:
            who = orjson.loads(row["principal"] or "{}")
        except orjson.JSONDecodeError:
            return False
        if not isinstance(who, dict):
            return False
        if q.principal is not None:
            email = who.get("email")
            by_email = isinstance(email, str) and email.lower() == q.principal.lower()
            if not by_email and q.principal not in (who.get("sub"), who.get("client_id")):
                return False
        if q.group is not None and q.group not in (who.get("groups") or []):
            return False
    if q.tool is not None:
        try:
            msg = orjson.loads(row["payload"] or b"{}")
        except orjson.JSONDecodeError:
            return False
        params = msg.get("params") if isinstance(msg, dict) else None
        if not isinstance(params, dict) or params.get("name") != q.tool:
            return False
    if q.text is not None:
        payload = bytes(row["payload"] or b"").translate(_ASCII_LOWER)
        in_payload = any(f.encode("utf-8", "surrogatepass") in payload for f in _text_forms(q.text))
        in_payload = in_payload and (q.text_in_requests or row["direction"] != "c2s")
        if not in_payload and q.text.lower() not in (row["detail"] or "").lower():
            return False
    return True


# --- the search --------------------------------------------------------------------------------------------------


def search(engine: Engine, q: Query) -> tuple[list[dict[str, Any]], int | None]:
    """(matching records as :func:`portcullis.audit.codec.record_json` objects without ``sealed_b64``, newest first;
    the cursor of the next page, or ``None`` when there is none)."""
    limit = max(1, min(q.limit, MAX_LIMIT))
    where = _where(engine, q)
    exact = _needs_exact(q)
    found: list[dict[str, Any]] = []
    cursor = q.cursor
    with engine.connect() as conn:
        while True:
            page = limit - len(found) + 1  # one more than needed: whether another page exists
            if exact:
                page = max(page, MIN_PAGE)
            conds = list(where)
            if cursor is not None:
                conds.append(records.c.seq < cursor)
            stmt = select(*_SHOWN).where(*conds).order_by(records.c.seq.desc()).limit(page)
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
            for row in rows:
                if exact and not _exact(row, q):
                    continue
                if len(found) == limit:
                    return _shown(conn, found, q), int(found[-1]["seq"])
                found.append(row)
            if len(rows) < page:
                return _shown(conn, found, q), None
            cursor = int(rows[-1]["seq"])


def _shown(conn: Connection, rows: list[dict[str, Any]], q: Query) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        doc = _doc(row)
        if q.responses and row["direction"] == "c2s" and row["kind"] == "request":
            resp = _response(conn, row)
            doc["response"] = None if resp is None else _doc(resp)
        out.append(doc)
    return out


def _doc(row: dict[str, Any]) -> dict[str, Any]:
    doc = record_json({**row, "sealed": None})
    del doc["sealed_b64"]
    return doc


def _response(conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
    """The response the gateway recorded for a client request: the same flow (ids count per process, so also the
    chain, server and message id, and the first one after the request)."""
    conds = [
        records.c.seq > req["seq"],
        records.c.flow_id == req["flow_id"],
        records.c.server == req["server"],
        records.c.direction == "s2c",
        records.c.kind.in_(("result", "error")),
    ]
    # the (session_id, seq) index for session-era records, (chain, seq) for the others
    if req["session_id"] is not None:
        conds.append(records.c.session_id == req["session_id"])
    conds.append(records.c.chain == req["chain"] if req["chain"] is not None else records.c.chain.is_(None))
    conds.append(records.c.msg_id == req["msg_id"] if req["msg_id"] is not None else records.c.msg_id.is_(None))
    row = conn.execute(select(*_SHOWN).where(*conds).order_by(records.c.seq).limit(1)).mappings().first()
    return None if row is None else dict(row)
