"""The session document: one recorded session, self-contained and versioned (``portcullis sessions export``), which
``portcullis sessions replay`` reads back.

Version 1::

    {"format": "portcullis.session", "version": 1, "exported_at": RFC 3339, "exported_by": "portcullis X.Y",
     "session": {the sessions row}, "records": [record objects of audit/codec.py, in seq order]}

Older versions stay readable: :func:`load_document` runs the chain of converters from the document's version up to
the current one. Version 0 is what ``portcullis sessions show --json`` printed before there was an export (payloads
parsed, hashes in hex, ``sealed`` a boolean); converted records cannot prove their integrity (the exact payload
bytes are gone), and say so.

A session's records are interleaved with other sessions' in the audit chain, so a document alone proves each
record's own integrity (its hash over its fields and predecessor's hash) and their order, not that none is missing
between them: that is ``portcullis audit verify`` on the store or on an export of the whole trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine

from portcullis import __version__
from portcullis.audit.codec import record_columns, record_json, rfc3339
from portcullis.store.chain import CHAIN_FIELDS, digest
from portcullis.store.queries import get_session, session_records

FORMAT = "portcullis.session"
VERSION = 1


class DocumentError(ValueError):
    """Not a session document this version can read (says why)."""


@dataclass
class Document:
    session: dict[str, Any] | None
    records: list[dict[str, Any]]  # codec form
    version_read: int
    problems: list[str] = field(default_factory=list)  # records whose hash does not match their fields
    unverifiable: int = 0  # records without the exact bytes to check (converted from an older version)


def export_session(engine: Engine, session_id: str) -> dict[str, Any]:
    s = get_session(engine, session_id)
    recs = session_records(engine, session_id)
    if s is None and not recs:
        raise LookupError(f"no session {session_id!r}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": rfc3339(int(dt.datetime.now(dt.UTC).timestamp() * 1e9)),
        "exported_by": f"portcullis {__version__}",
        "session": s,
        "records": [record_json(r) for r in recs],
    }


def _from_0(doc: dict[str, Any]) -> dict[str, Any]:
    """``sessions show --json`` (no "format") -> version 1."""
    records = []
    for r in doc.get("records") or []:
        payload = r.get("payload")
        text = payload if isinstance(payload, str) or payload is None else orjson.dumps(payload).decode()
        masked = r.get("masked")
        out = {k: r.get(k) for k in ("seq", "ts_ns", "chain", "server", "session_id", "direction", "kind", "method")}
        for k in ("msg_id", "flow_id", "outcome", "latency_us", "detail", "principal", "decision", "rule"):
            out[k] = r.get(k)
        out |= {
            "type": "record",
            "v": 1,
            "ts": rfc3339(int(r.get("ts_ns") or 0)),
            "policy_version": r.get("policy_version"),
            "masked": masked if isinstance(masked, str) or masked is None else orjson.dumps(masked).decode(),
            "payload": text,
            "sealed_b64": None,
            "prev_hash": r.get("prev_hash"),
            "hash": r.get("hash"),
            "converted": True,
        }
        records.append(out)
    return {"format": FORMAT, "version": 1, "session": doc.get("session"), "records": records}


CONVERTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_0}


def load_document(data: Any) -> Document:
    if not isinstance(data, dict):
        raise DocumentError("expected a JSON object")
    if "format" not in data and "records" in data and "version" not in data:
        version = 0  # the `sessions show --json` shape
    else:
        if data.get("format") != FORMAT:
            raise DocumentError(f"not a session document (format {data.get('format')!r}, expected {FORMAT!r})")
        given = data.get("version")
        if not isinstance(given, int) or given < 0:
            raise DocumentError(f"bad version {given!r}")
        version = given
        if version > VERSION:
            raise DocumentError(f"version {version} is newer than this portcullis reads (up to {VERSION}): upgrade")
    read = version
    while version < VERSION:
        data = CONVERTERS[version](data)
        version = data["version"]
    doc = Document(data.get("session"), list(data.get("records") or []), read)
    for r in doc.records:
        if r.get("converted") or r.get("hash") is None:
            doc.unverifiable += 1
            continue
        try:
            c = record_columns(r)
        except (ValueError, KeyError, TypeError) as exc:
            doc.problems.append(f"seq {r.get('seq')}: unreadable ({exc})")
            continue
        if digest(c["prev_hash"] or b"", [c[f] for f in CHAIN_FIELDS]) != c["hash"]:
            doc.problems.append(f"seq {r.get('seq')} altered (its hash does not match its fields)")
    seqs = [int(r["seq"]) for r in doc.records if isinstance(r.get("seq"), int)]
    if seqs != sorted(seqs):
        doc.problems.append("records out of order")
    return doc
