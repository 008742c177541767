"""The session document: one recorded session, self-contained and versioned (``portcullis sessions export``), which
``portcullis sessions replay`` reads back.

Version 1::

    {"format": "portcullis.session", "version": 1,
     "exported_at": RFC 3339, "exported_by": "portcullis X.Y",
     "session": {the sessions row, or null},
     "records": [record objects of audit/codec.py, in seq order],
     "checkpoints": [checkpoint objects of audit/codec.py that seal these records' chains]}   (optional)

Older versions stay readable: :func:`load_document` runs the chain of converters (``CONVERTERS[n]`` turns version
``n`` into ``n + 1``) from the document's version up to the current one, and refuses newer or unknown versions by
name. Version 0 is what ``portcullis sessions show --json`` printed before there was an export: ``{"session",
"records"}`` with payloads parsed, ``masked`` parsed, hashes in hex and ``sealed`` a boolean. Its converter
re-encodes each payload compactly; where that reproduces the recorded bytes (the record's hash matches again) the
record is as good as an exported one, otherwise it is kept and marked ``converted`` (its integrity cannot be
checked: the exact bytes, or the sealed original, are gone).

What a document alone can prove: each record's own integrity (its hash over its predecessor's hash and its fields,
:func:`portcullis.store.chain.digest` in ``CHAIN_FIELDS`` order), their ``seq`` order, the link between two records
whose ``seq`` are adjacent in one chain, and that a checkpoint at one of its records seals that record's hash. A
session's records are interleaved with other sessions' in the audit chain, so it cannot prove that none is missing
between them: that is ``portcullis audit verify`` on the store, or on an export of the whole trail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, and_, or_, select

from portcullis import __version__
from portcullis.audit.codec import checkpoint_json, record_columns, record_json, rfc3339
from portcullis.store.chain import CHAIN_FIELDS, digest
from portcullis.store.queries import get_session, session_records
from portcullis.store.schema import checkpoints

FORMAT = "portcullis.session"
VERSION = 1
# what every record of a document must carry for the timeline and the replay to read it
REQUIRED = {"seq": int, "ts_ns": int, "direction": str, "kind": str, "flow_id": int}


class DocumentError(ValueError):
    """Not a session document this version of portcullis can read (the message says why)."""


@dataclass
class Document:
    """A session document read back (converted to the current version) and checked as far as it can be alone."""

    session: dict[str, Any] | None
    records: list[dict[str, Any]]  # the codec form, seq order
    version_read: int  # the version the document was written in
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    exported_at: str | None = None
    exported_by: str | None = None
    problems: list[str] = field(default_factory=list)  # integrity findings (altered records, order, links)
    verified: int = 0  # records whose hash was recomputed and matched
    unverifiable: int = 0  # records without the exact bytes to check (converted from version 0)


# --- writing ---------------------------------------------------------------------------------------------------


def export_session(engine: Engine, session_id: str, limit: int | None = None, sealed: bool = True) -> dict[str, Any]:
    """The current-version document of one session from the store (LookupError if there is none; OverflowError if
    it has more than ``limit`` records). ``sealed=False``: without the sealed originals."""
    s = get_session(engine, session_id)
    recs = session_records(engine, session_id, None if limit is None else limit + 1, sealed)
    if limit is not None and len(recs) > limit:
        raise OverflowError(f"more than {limit} records")
    if s is None and not recs:
        raise LookupError(f"no session {session_id!r}")
    return make_document(s, recs, covering_checkpoints(engine, recs))


def make_document(session: Mapping[str, Any] | None, recs: Sequence[Any], cps: Sequence[Any] = ()) -> dict[str, Any]:
    """A document from a sessions row, its records (rows or :class:`portcullis.flow.Record`) and checkpoints."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": rfc3339(time.time_ns()),
        "exported_by": f"portcullis {__version__}",
        "session": None if session is None else dict(session),
        "records": [record_json(r) for r in recs],
    }
    if cps:
        doc["checkpoints"] = [checkpoint_json(c) for c in cps]
    return doc


def covering_checkpoints(engine: Engine, recs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per chain, the checkpoints that seal these records: from the first record's seq up to and including the
    first checkpoint at or after the last record (the one that seals the whole session)."""
    spans: dict[str, tuple[int, int]] = {}
    for r in recs:
        if r.get("chain") is None or r.get("seq") is None:
            continue
        lo, hi = spans.get(r["chain"], (r["seq"], r["seq"]))
        spans[r["chain"]] = (min(lo, r["seq"]), max(hi, r["seq"]))
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for chain, (lo, hi) in sorted(spans.items()):
            q = select(checkpoints).where(and_(checkpoints.c.chain == chain, checkpoints.c.seq >= lo))
            last = conn.execute(q.where(checkpoints.c.seq >= hi).order_by(checkpoints.c.seq).limit(1)).first()
            upto = or_(checkpoints.c.seq < hi, checkpoints.c.id == (last.id if last is not None else -1))
            out += [dict(c._mapping) for c in conn.execute(q.where(upto).order_by(checkpoints.c.seq))]
    return out


# --- reading ---------------------------------------------------------------------------------------------------


def _record_hash(r: Mapping[str, Any]) -> tuple[bytes | None, bytes | None]:
    """(the hash recomputed from the record's fields, the hash it carries)."""
    c = record_columns(r)
    return digest(c["prev_hash"] or b"", [c[f] for f in CHAIN_FIELDS]), c["hash"]


def _from_0(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (``sessions show --json``: ``{"session", "records"}``, no "format") -> version 1."""
    records = []
    for r in doc.get("records") or []:
        if not isinstance(r, dict):
            raise DocumentError("version 0: a record is not a JSON object")
        out = {k: r.get(k) for k in ("seq", "ts_ns", "chain", "server", "session_id", "direction", "kind", "method")}
        for k in ("msg_id", "flow_id", "outcome", "latency_us", "detail", "principal", "decision", "rule"):
            out[k] = r.get(k)
        masked = r.get("masked")
        out |= {
            "type": "record",
            "v": 1,
            "ts": rfc3339(int(r.get("ts_ns") or 0)),
            "policy_version": r.get("policy_version"),
            "masked": masked if isinstance(masked, str) or masked is None else orjson.dumps(masked).decode(),
            "sealed_b64": None,
            "prev_hash": r.get("prev_hash"),
            "hash": r.get("hash"),
        }
        # `show` printed a JSON payload parsed (else as text): find the encoding that reproduces the recorded bytes
        payload = r.get("payload")
        candidates: list[str | None] = [None] if payload is None else [orjson.dumps(payload).decode()]
        if isinstance(payload, str):
            candidates.insert(0, payload)
        out["payload"] = candidates[0]
        proven = False
        if r.get("sealed") is not True and out["hash"] is not None:  # a sealed original is gone: never provable
            for text in candidates:
                try:
                    got, want = _record_hash({**out, "payload": text})
                except (ValueError, TypeError):
                    break
                if got == want:
                    out["payload"], proven = text, True
                    break
        if not proven:
            out["converted"] = True
        records.append(out)
    return {"format": FORMAT, "version": 1, "session": doc.get("session"), "records": records}


CONVERTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_0}


def _version(data: dict[str, Any]) -> int:
    if "format" not in data and "version" not in data and isinstance(data.get("records"), list):
        return 0  # the `sessions show --json` shape
    if data.get("format") != FORMAT:
        raise DocumentError(f"not a session document (format {data.get('format')!r}, expected {FORMAT!r})")
    v = data.get("version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise DocumentError(f"unknown session document version {v!r}")
    if v > VERSION:
        raise DocumentError(
            f"session document version {v} is newer than this portcullis ({__version__}) reads (up to {VERSION}):"
            " upgrade portcullis to read it"
        )
    return v


def load_document(data: Any) -> Document:
    """Read a document of any known version (converted to the current one) and check it as far as it can be alone.

    Raises DocumentError for what cannot be read; integrity findings go to ``Document.problems``."""
    if not isinstance(data, dict):
        raise DocumentError("not a session document (expected a JSON object)")
    read = version = _version(data)
    while version < VERSION:
        convert = CONVERTERS.get(version)
        if convert is None:
            raise DocumentError(f"no converter from session document version {version}")
        data = convert(data)
        if data.get("version") != version + 1:
            raise DocumentError(f"the converter from version {version} did not produce version {version + 1}")
        version += 1
    session = data.get("session")
    recs = data.get("records")
    cps = data.get("checkpoints") or []
    if session is not None and not isinstance(session, dict):
        raise DocumentError("'session' is not a JSON object")
    if not isinstance(recs, list) or not isinstance(cps, list):
        raise DocumentError("'records' and 'checkpoints' must be lists")
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise DocumentError(f"record {i} is not a JSON object")
        for k, t in REQUIRED.items():
            if not isinstance(r.get(k), t):
                raise DocumentError(f"record {i} (seq {r.get('seq')!r}): {k!r} missing or not {t.__name__}")
    doc = Document(session, recs, read, cps, exported_at=data.get("exported_at"), exported_by=data.get("exported_by"))
    _check(doc)
    return doc


def _check(doc: Document) -> None:
    hashes: dict[int, tuple[str | None, str | None, str | None]] = {}  # seq -> (chain, prev_hash, hash)
    sid = (doc.session or {}).get("id")
    for r in doc.records:
        seq = r["seq"]
        if sid is not None and r.get("session_id") != sid:
            doc.problems.append(f"seq {seq}: belongs to session {r.get('session_id')!r}, not {sid!r}")
        hashes[seq] = (r.get("chain"), r.get("prev_hash"), r.get("hash"))
        if r.get("converted") or r.get("hash") is None:
            doc.unverifiable += 1
            continue
        try:
            got, want = _record_hash(r)
        except (ValueError, TypeError) as exc:
            doc.problems.append(f"seq {seq}: unreadable ({exc})")
            continue
        if got != want:
            doc.problems.append(f"seq {seq}: altered (its hash does not match its fields)")
        else:
            doc.verified += 1
    seqs = [r["seq"] for r in doc.records]
    if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
        doc.problems.append("records out of seq order (or a seq twice)")
    for seq, (chain, prev, _) in hashes.items():
        before = hashes.get(seq - 1)
        if before is not None and before[0] == chain and prev != before[2]:
            doc.problems.append(f"seq {seq}: does not link to seq {seq - 1} (a record between them was changed)")
    for c in doc.checkpoints:
        cseq = c.get("seq") if isinstance(c, dict) else None
        at = hashes.get(cseq) if isinstance(cseq, int) else None
        if at is not None and at[0] == c.get("chain") and at[2] != c.get("hash"):
            doc.problems.append(f"seq {c['seq']}: its hash differs from the one checkpoint {c.get('counter')} sealed")
