"""Verify the audit trail: each writer's hash chain over its records, and its run of signed checkpoints.

The trail is read from the store (:func:`verify`) or from exported JSON-lines files (:func:`verify_files`, the
``jsonl`` export: one :mod:`portcullis.audit.codec` object per line, rotated files read oldest first). Problems are
named where they show:

- ``chain C broken between seq M and N``: N's predecessor hash is not the hash of C's record before it (a record
  removed, inserted or re-ordered there);
- ``seq N altered``: N's own hash does not match its fields;
- ``seq N has no chain hash``: a record added after the chain began, outside the writers;
- ``checkpoint C#k``: its signature does not verify, one before it is missing (the counters and links of a chain's
  checkpoints must run 1, 2, 3 … unbroken), its record is gone, or the chain there is not what was signed;
- ``tail truncated``: a checkpoint seals a record beyond the chain's last one;
- ``chain C starts at seq N``: its first records are gone, and not by a recorded retention prune. A pruned chain
  (``portcullis audit prune``) starts right after a signed checkpoint whose hash its first record links to, and an
  ``audit_pruned`` record in the trail says so; anything else is a removed head. An exported copy may begin
  anywhere (the export started later, old files rotated away): it is checked from its first record on.

Records after a chain's newest checkpoint are chained but not yet sealed; the verdict says how many. Cutting the
newest checkpoints together with the tail is only caught against a copy of the checkpoints kept elsewhere (an
export is such a copy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select

from portcullis.store.chain import CHAIN_FIELDS, GENESIS, SESSION_CHAINED, checkpoint_message, digest, link
from portcullis.store.schema import checkpoints, records, sessions


@dataclass(slots=True)
class Verdict:
    records: int = 0
    unchained: int = 0  # records written before the chain existed (no hash, before any hashed record)
    checkpoints: int = 0
    unsealed: int = 0  # records after their chain's newest verified checkpoint
    chains: int = 0
    pruned: dict[str, int] = field(default_factory=dict)  # chain -> the checkpointed seq it was pruned through
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(engine: Engine) -> Iterator[Any]:
    cols = [records.c.seq, records.c.prev_hash, records.c.hash, *(records.c[f] for f in CHAIN_FIELDS)]
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=2000).execute(select(*cols).order_by(records.c.seq))
        yield from result


PRUNED_KIND = "audit_pruned"  # detail: JSON {"chain", "through_seq", "checkpoint", "hash", "records"}


def verify(engine: Engine, public_key: Ed25519PublicKey | None = None, max_problems: int = 20) -> Verdict:
    """The store's whole trail: every chain, every checkpoint, and the sessions table against its chained copies."""
    with engine.connect() as conn:
        cps = [dict(c) for c in conn.execute(select(checkpoints).order_by(checkpoints.c.id)).mappings()]
    v = verify_rows(_rows(engine), cps, public_key, max_problems)
    if len(v.problems) < max_problems:
        _check_sessions(engine, v)
    return v


def verify_files(
    paths: Sequence[str | Path], public_key: Ed25519PublicKey | None = None, max_problems: int = 20
) -> Verdict:
    """Exported JSON-lines files (oldest first: give ``audit.jsonl.3 audit.jsonl.2 audit.jsonl.1 audit.jsonl``).

    Raises ValueError (with file and line) for a line that is not an export object."""
    from portcullis.audit.codec import checkpoint_columns, record_columns

    rows: list[tuple[Any, ...]] = []
    cps: list[dict[str, Any]] = []
    for path in paths:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                    if obj.get("type") == "checkpoint":
                        cps.append(checkpoint_columns(obj))
                    else:
                        c = record_columns(obj)
                        rows.append((c["seq"], c["prev_hash"], c["hash"], *(c[f] for f in CHAIN_FIELDS)))
                except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise ValueError(f"{path}:{n}: not an audit export line ({exc})") from None
    return verify_rows(rows, cps, public_key, max_problems, partial=True)


def verify_rows(
    rows: Iterable[Sequence[Any]],
    cps: list[dict[str, Any]],
    public_key: Ed25519PublicKey | None = None,
    max_problems: int = 20,
    partial: bool = False,
) -> Verdict:
    """The core: ``rows`` are ``(seq, prev_hash, hash, *CHAIN_FIELDS)`` in commit order; ``cps`` the checkpoints
    in the order they were written. ``partial``: a copy that may begin inside a chain (an export)."""
    v = Verdict()
    wanted = {(c["chain"], int(c["seq"])) for c in cps}
    hashes: dict[tuple[str, int], bytes] = {}
    heads: dict[str, tuple[int, bytes]] = {}  # chain -> (seq, hash) of its last record so far
    firsts: dict[str, tuple[int, bytes]] = {}  # chain -> (seq, prev_hash) of its first record here
    counts: dict[str, list[int]] = {}  # chain -> seqs (for the unsealed count)
    prunes: list[dict[str, Any]] = []
    chain_at = CHAIN_FIELDS.index("chain") + 3
    kind_at = CHAIN_FIELDS.index("kind") + 3
    detail_at = CHAIN_FIELDS.index("detail") + 3
    started = False
    for row in rows:
        v.records += 1
        seq, prev_hash, own = int(row[0]), row[1], row[2]
        if own is None:
            if started:
                v.problems.append(f"seq {seq} has no chain hash (added outside the gateway's writers?)")
            else:
                v.unchained += 1
            continue
        started = True
        chain = row[chain_at] or "-"
        prev_hash, own = bytes(prev_hash) if prev_hash is not None else b"", bytes(own)
        if chain not in heads:
            firsts[chain] = (seq, prev_hash)
            prev = prev_hash if prev_hash != GENESIS else GENESIS  # judged at the end (a prune, or a copy)
            last_seq = 0
        else:
            last_seq, prev = heads[chain]
        if prev_hash != prev:
            v.problems.append(
                f"chain {chain} broken between seq {last_seq} and {seq} (removed, inserted or re-ordered)"
            )
        elif digest(prev_hash, row[3:]) != own:
            v.problems.append(f"seq {seq} altered (its hash does not match its fields)")
        elif row[kind_at] == PRUNED_KIND:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                detail = orjson.loads(row[detail_at] or "")
                if isinstance(detail, dict):
                    prunes.append(detail)
        heads[chain] = (seq, own)
        counts.setdefault(chain, []).append(seq)
        if (chain, seq) in wanted:
            hashes[(chain, seq)] = own
        if len(v.problems) >= max_problems:
            return v
    v.chains = len(heads)
    newest: dict[str, int] = {}
    sealed_at: dict[tuple[str, bytes], int] = {}  # (chain, hash) -> seq of a checkpoint that verified
    runs: dict[str, tuple[int, bytes]] = {}  # chain -> (counter, link) of its last checkpoint seen
    for c in cps:
        chain, seq, counter = c["chain"] or "-", int(c["seq"]), int(c["counter"] or 0)
        name = f"checkpoint {chain}#{counter} (seq {seq})"
        v.checkpoints += 1
        prev_counter, prev_link = runs.get(chain, (0, GENESIS))
        first_here = chain not in runs
        runs[chain] = (counter, link(bytes(c["signature"])))
        if public_key is not None:
            msg = checkpoint_message(
                chain, counter, bytes(c["prev_link"] or b""), seq, bytes(c["hash"]), int(c["ts_ns"])
            )
            try:
                public_key.verify(bytes(c["signature"]), msg)
            except InvalidSignature:
                v.problems.append(f"{name}: the signature does not verify")
                continue
        if (counter != prev_counter + 1 or bytes(c["prev_link"] or b"") != prev_link) and not (partial and first_here):
            v.problems.append(f"{name}: the checkpoint before it is missing or was replaced")
        sealed_at[(chain, bytes(c["hash"]))] = seq
        last = heads.get(chain, (0, GENESIS))[0]
        first = firsts.get(chain, (0, b""))[0]
        if seq > last:
            v.problems.append(f"tail truncated: {name} seals records beyond the chain's last, seq {last}")
        elif seq < first:
            continue  # before this chain's first record here: pruned, or before the copy began
        elif (chain, seq) not in hashes:
            v.problems.append(f"{name}: that record is missing")
        elif hashes[(chain, seq)] != bytes(c["hash"]):
            v.problems.append(f"{name}: the chain there does not match what was signed")
        else:
            newest[chain] = max(newest.get(chain, 0), seq)
    for chain, (seq, prev_hash) in firsts.items():
        if prev_hash == GENESIS or partial:
            continue
        at = sealed_at.get((chain, prev_hash))
        recorded = at is not None and any(  # a prune goes oldest first, a checkpoint at a time: it may stop half-way
            p.get("chain") == chain and isinstance(p.get("through_seq"), int) and p["through_seq"] >= at for p in prunes
        )
        if at is None or at >= seq:
            v.problems.append(
                f"chain {chain} starts at seq {seq}, linked to no signed checkpoint: its head was removed"
            )
        elif not recorded:
            v.problems.append(
                f"chain {chain} starts at seq {seq}, after the checkpoint at seq {at}, but no prune is recorded: "
                "its head was removed"
            )
        else:
            v.pruned[chain] = at
    v.unsealed = sum(sum(1 for s in seqs if s > newest.get(chain, 0)) for chain, seqs in counts.items())
    return v


def _check_sessions(engine: Engine, v: Verdict) -> None:
    """The sessions table against the copies of its rows in the chained ``session_open`` records."""
    with engine.connect() as conn:
        opened = {
            r.session_id: r.payload
            for r in conn.execute(
                select(records.c.session_id, records.c.payload).where(
                    records.c.kind == "session_open", records.c.hash.is_not(None)
                )
            )
        }
        for row in conn.execute(select(sessions)).mappings():
            copy = opened.get(row["id"])
            if copy is None:
                continue  # opened before sessions were chained
            try:
                chained = orjson.loads(copy)
            except orjson.JSONDecodeError:
                continue  # an older open record (no copy of the row)
            if any(chained.get(k) != row[k] for k in SESSION_CHAINED):
                v.problems.append(f"session {row['id']}: the sessions table differs from its chained open record")
