"""Verify the audit trail: the hash chain over every record, and the signed checkpoints.

Problems are named at the first record where they show:

- ``removed, inserted or re-ordered before seq N``: N's predecessor hash is not the hash of the record before it;
- ``seq N altered``: N's own hash does not match its fields;
- ``checkpoint at seq N``: its signature does not verify, its record is gone, or its hash is not the chain's there;
- ``tail truncated``: the newest checkpoint seals a record beyond the last one left.

Records after the newest checkpoint are chained but not yet sealed; the result says how many.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, func, select

from portcullis.store.chain import CHAIN_FIELDS, GENESIS, checkpoint_message, digest
from portcullis.store.schema import checkpoints, records


@dataclass(slots=True)
class Verdict:
    records: int = 0
    unchained: int = 0  # records written before the chain existed (no hash)
    checkpoints: int = 0
    unsealed: int = 0  # records after the newest verified checkpoint
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(engine: Engine) -> Iterator[Any]:
    cols = [records.c.seq, records.c.prev_hash, records.c.hash, *(records.c[f] for f in CHAIN_FIELDS)]
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=2000).execute(select(*cols).order_by(records.c.seq))
        yield from result


def verify(engine: Engine, public_key: Ed25519PublicKey | None = None, max_problems: int = 20) -> Verdict:
    v = Verdict()
    hashes: dict[int, bytes] = {}
    with engine.connect() as conn:
        cps = list(conn.execute(select(checkpoints).order_by(checkpoints.c.seq)).mappings())
    wanted = {int(c["seq"]) for c in cps}
    prev = GENESIS
    last_seq = 0
    for row in _rows(engine):
        v.records += 1
        seq, prev_hash, own = int(row[0]), row[1], row[2]
        last_seq = seq
        if own is None:
            v.unchained += 1
            continue
        prev_hash, own = bytes(prev_hash) if prev_hash is not None else b"", bytes(own)
        if prev_hash != prev:
            v.problems.append(f"record removed, inserted or re-ordered before seq {seq}")
        elif digest(prev_hash, row[3:]) != own:
            v.problems.append(f"seq {seq} altered (its hash does not match its fields)")
        prev = own
        if seq in wanted:
            hashes[seq] = own
        if len(v.problems) >= max_problems:
            return v
    newest_ok = 0
    for c in cps:
        seq = int(c["seq"])
        v.checkpoints += 1
        if public_key is not None:
            try:
                public_key.verify(bytes(c["signature"]), checkpoint_message(seq, bytes(c["hash"]), int(c["ts_ns"])))
            except InvalidSignature:
                v.problems.append(f"checkpoint at seq {seq}: the signature does not verify")
                continue
        if seq > last_seq:
            v.problems.append(
                f"tail truncated: the checkpoint at seq {seq} seals records beyond the last one, {last_seq}"
            )
        elif seq not in hashes:
            v.problems.append(f"checkpoint at seq {seq}: that record is missing")
        elif hashes[seq] != bytes(c["hash"]):
            v.problems.append(f"checkpoint at seq {seq}: the chain there does not match what was signed")
        else:
            newest_ok = max(newest_ok, seq)
    if newest_ok:
        with engine.connect() as conn:
            v.unsealed = int(conn.execute(select(func.count()).where(records.c.seq > newest_ok)).scalar_one())
    else:
        v.unsealed = v.records - v.unchained
    return v
