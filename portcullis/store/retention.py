"""Retention: prune old records by age or by size, always up to a signed checkpoint, so the chain stays verifiable.

For each chain, the prune point is its newest checkpoint that is old enough (``max_age``) or that leaves the store
under ``max_bytes`` of payloads; a chain's newest record is never pruned (its writer continues from it), and a chain
without checkpoints is kept whole. The prune is recorded first (an ``audit_pruned`` record on the admin chain:
which chain, through which checkpointed seq, that checkpoint's hash), then records go oldest first in batches, each
batch ending at a checkpoint: at every moment the trail starts right after a signed checkpoint that a recorded prune
covers, which is what ``portcullis audit verify`` accepts. Checkpoints themselves are kept (they are small, and they
are the evidence of what was there). Sessions whose records are all gone, and that have ended, go too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, and_, delete, exists, func, select

from portcullis.store import admin_chain
from portcullis.store.schema import checkpoints, records, sessions
from portcullis.store.verify import PRUNED_KIND

BATCH = 5000  # records deleted per transaction, at most (short write locks on SQLite)


@dataclass(slots=True)
class Cut:
    chain: str
    through_seq: int  # the checkpointed record the chain is pruned through (inclusive)
    checkpoint: int  # that checkpoint's counter
    hash: bytes  # and the chain hash it signed


@dataclass(slots=True)
class PruneResult:
    cuts: list[Cut] = field(default_factory=list)
    records: int = 0
    sessions: int = 0

    def summary(self) -> str:
        if not self.cuts:
            return "nothing to prune"
        chains = ", ".join(f"{c.chain} through seq {c.through_seq} (checkpoint #{c.checkpoint})" for c in self.cuts)
        return f"pruned {self.records} records and {self.sessions} sessions: {chains}"


def _stored_bytes(conn: Any, after_seq: int = 0) -> int:
    size = func.coalesce(func.length(records.c.payload), 0) + func.coalesce(func.length(records.c.sealed), 0)
    return int(conn.execute(select(func.coalesce(func.sum(size), 0)).where(records.c.seq > after_seq)).scalar_one())


def plan(engine: Engine, *, before_ns: int | None = None, max_bytes: int | None = None) -> list[Cut]:
    """Where each chain would be cut (nothing is changed)."""
    with engine.connect() as conn:
        cps = [dict(c) for c in conn.execute(select(checkpoints).order_by(checkpoints.c.seq)).mappings()]
        spans = conn.execute(
            select(records.c.chain, func.min(records.c.seq), func.max(records.c.seq))
            .where(records.c.hash.is_not(None))
            .group_by(records.c.chain)
        ).all()
        firsts = {chain: int(lo) for chain, lo, _hi in spans}
        heads = {chain: int(hi) for chain, _lo, hi in spans}
        limit_seq: int | None = None  # the newest seq that may go (all chains), from the size bound
        if max_bytes is not None and _stored_bytes(conn) > max_bytes:
            seqs = sorted({int(c["seq"]) for c in cps})
            lo, hi = 0, len(seqs) - 1
            found: int | None = None
            while lo <= hi:  # the oldest checkpoint after which the store fits: bytes after it only shrink
                mid = (lo + hi) // 2
                if _stored_bytes(conn, seqs[mid]) <= max_bytes:
                    found, hi = seqs[mid], mid - 1
                else:
                    lo = mid + 1
            limit_seq = found if found is not None else (seqs[-1] if seqs else None)
    cuts: dict[str, Cut] = {}
    for c in cps:
        chain, seq = c["chain"] or "-", int(c["seq"])
        if chain not in heads or seq >= heads[chain] or seq < firsts.get(chain, 0):
            continue  # never the chain's newest record; nothing left before an earlier prune point
        old_enough = before_ns is not None and int(c["ts_ns"]) <= before_ns
        too_big = limit_seq is not None and seq <= limit_seq
        if not (old_enough or too_big):
            continue
        if chain not in cuts or seq > cuts[chain].through_seq:
            cuts[chain] = Cut(chain, seq, int(c["counter"] or 0), bytes(c["hash"]))
    return [cut for cut in cuts.values() if cut.through_seq >= firsts.get(cut.chain, 0)]


def prune(engine: Engine, *, before_ns: int | None = None, max_bytes: int | None = None) -> PruneResult:
    result = PruneResult(plan(engine, before_ns=before_ns, max_bytes=max_bytes))
    if not result.cuts:
        return result
    with engine.begin() as conn:
        for cut in result.cuts:  # the intent first: a prune interrupted half-way still verifies
            # SQLite: a write first, so this transaction holds the write lock before the chain's head is read
            conn.execute(delete(records).where(records.c.seq < 0))
            detail = {
                "chain": cut.chain,
                "through_seq": cut.through_seq,
                "checkpoint": cut.checkpoint,
                "hash": cut.hash.hex(),
                "before_ns": before_ns,
                "max_bytes": max_bytes,
            }
            admin_chain.append(conn, PRUNED_KIND, orjson.dumps(detail).decode())
    for cut in result.cuts:
        with engine.connect() as conn:
            stops = [
                int(s)
                for (s,) in conn.execute(
                    select(checkpoints.c.seq)
                    .where(checkpoints.c.chain == cut.chain, checkpoints.c.seq <= cut.through_seq)
                    .order_by(checkpoints.c.seq)
                )
            ]
        done = 0
        for stop in stops:  # batches end at checkpoints; one that would be too large is split no further
            if stop - done < BATCH and stop != stops[-1]:
                continue
            with engine.begin() as conn:
                n = conn.execute(delete(records).where(records.c.chain == cut.chain, records.c.seq <= stop)).rowcount
            result.records += int(n or 0)
            done = stop
    with engine.begin() as conn:
        oldest = min(cut.through_seq for cut in result.cuts)
        result.records += int(
            conn.execute(delete(records).where(records.c.hash.is_(None), records.c.seq <= oldest)).rowcount or 0
        )
        gone = and_(
            sessions.c.ended_ns.is_not(None),
            ~exists().where(records.c.session_id == sessions.c.id),
        )
        result.sessions = int(conn.execute(delete(sessions).where(gone)).rowcount or 0)
    return result


def cutoff(max_age: float | None, now_ns: int | None = None) -> int | None:
    if max_age is None:
        return None
    return (time.time_ns() if now_ns is None else now_ns) - int(max_age * 1e9)
