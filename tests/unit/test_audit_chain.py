"""The audit chain on a real SQLite store, written by the real store writer: an untouched trail verifies; deleting,
editing, re-ordering and inserting a record, truncating the tail and forging a checkpoint are each caught and
located (also through the CLI's exit status)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select, update

from portcullis.pipeline.record import event_record
from portcullis.store.audit_keys import keygen, load_signer, load_verifier
from portcullis.store.schema import checkpoints, records
from portcullis.store.verify import verify
from portcullis.store.writer import StoreWriter
from tests.support.waiting import eventually


async def write(engine: Engine, key: Path, n: int, every: int = 10) -> None:
    signer, kid = load_signer(str(key))
    w = StoreWriter(engine, signer=signer, key_id=kid, checkpoint_every=every, checkpoint_interval=3600)
    w.start(asyncio.get_running_loop())
    try:
        for i in range(n):
            await w.write([event_record("srv", "s1", "test", f"record {i}", payload=f'{{"i": {i}}}'.encode())])
    finally:
        w.close()


def seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(records.c.seq).order_by(records.c.seq))]


async def test_an_untouched_trail_verifies_across_writer_restarts(engine: Engine, keys: tuple[Path, Path]) -> None:
    await write(engine, keys[0], 25)
    await write(engine, keys[0], 7)  # a new writer continues the chain from the store
    v = verify(engine, load_verifier(str(keys[1])))
    assert v.ok, v.problems
    assert (v.records, v.checkpoints, v.unsealed) == (32, 4, 0)  # every 10, and at each clean shutdown


async def test_every_kind_of_tampering_is_caught_and_located(engine: Engine, keys: tuple[Path, Path]) -> None:
    await write(engine, keys[0], 30)
    pub = load_verifier(str(keys[1]))
    s = seqs(engine)

    def problems() -> list[str]:
        return verify(engine, pub).problems

    with engine.begin() as conn:  # edit a payload
        conn.execute(update(records).where(records.c.seq == s[5]).values(payload=b'{"i": 999}'))
    assert problems()[0] == f"seq {s[5]} altered (its hash does not match its fields)"
    with engine.begin() as conn:
        conn.execute(update(records).where(records.c.seq == s[5]).values(payload=b'{"i": 5}'))
    assert problems() == []

    with engine.connect() as conn:
        row = dict(conn.execute(select(records).where(records.c.seq == s[12])).mappings().one())
    with engine.begin() as conn:  # delete one
        conn.execute(delete(records).where(records.c.seq == s[12]))
    assert problems()[0].startswith(f"chain gateway broken between seq {s[11]} and {s[13]}")
    with engine.begin() as conn:  # put it back, then swap two records' contents (a re-ordering)
        conn.execute(insert(records).values(**row))
        a = dict(conn.execute(select(records).where(records.c.seq == s[20])).mappings().one())
        b = dict(conn.execute(select(records).where(records.c.seq == s[21])).mappings().one())
        conn.execute(update(records).where(records.c.seq == s[20]).values(**{**b, "seq": s[20]}))
        conn.execute(update(records).where(records.c.seq == s[21]).values(**{**a, "seq": s[21]}))
    assert problems()[0].startswith(f"chain gateway broken between seq {s[19]} and {s[20]}")
    with engine.begin() as conn:
        conn.execute(update(records).where(records.c.seq == s[20]).values(**a))
        conn.execute(update(records).where(records.c.seq == s[21]).values(**b))
    assert problems() == []

    with engine.begin() as conn:  # insert a forged record in the middle (a free seq between two)
        forged = {**row, "seq": None, "detail": "forged"}
        del forged["seq"]
        conn.execute(update(records).where(records.c.seq > s[25]).values(seq=records.c.seq + 1000))
        conn.execute(insert(records).values(seq=s[25] + 1, **{k: v for k, v in forged.items()}))
    assert problems()[0].startswith(f"chain gateway broken between seq {s[25]} and {s[25] + 1}")


async def test_a_cut_off_tail_and_a_forged_checkpoint_are_caught(
    engine: Engine, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    await write(engine, keys[0], 30, every=10)
    pub = load_verifier(str(keys[1]))
    s = seqs(engine)
    with engine.begin() as conn:  # drop the last 15 records, a sealed part of the tail among them
        conn.execute(delete(records).where(records.c.seq > s[14]))
    assert any("tail truncated" in p for p in verify(engine, pub).problems)

    other_priv, _ = keygen()
    (tmp_path / "other.key").write_bytes(other_priv)
    signer, _kid = load_signer(str(tmp_path / "other.key"))
    with engine.begin() as conn:  # a checkpoint signed with someone else's key
        cp = dict(conn.execute(select(checkpoints).order_by(checkpoints.c.seq)).mappings().first() or {})
        conn.execute(update(checkpoints).where(checkpoints.c.id == cp["id"]).values(signature=signer.sign(b"x")))
    assert f"checkpoint gateway#1 (seq {cp['seq']}): the signature does not verify" in verify(engine, pub).problems


async def test_the_cli_exit_status(engine: Engine, keys: tuple[Path, Path], tmp_path: Path) -> None:
    await write(engine, keys[0], 12)
    store = str(engine.url)

    def run() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "portcullis", "audit", "verify", "--store", store, "--public-key", str(keys[1])]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    ok = await asyncio.to_thread(run)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 12 records, 2 checkpoints (signatures checked)"), ok
    with engine.begin() as conn:
        conn.execute(update(records).where(records.c.seq == seqs(engine)[3]).values(detail="edited"))
    bad = await asyncio.to_thread(run)
    assert bad.returncode == 1 and "altered" in bad.stdout


async def test_review_findings_stay_fixed(engine: Engine, keys: tuple[Path, Path]) -> None:
    """API-key changes from the CLI chain on their own (no false alarm, deletion caught); a record added without a
    hash is caught; a deleted middle checkpoint is caught; an idle writer seals its tail on time."""
    from portcullis.store import apikeys

    pub = load_verifier(str(keys[1]))
    await write(engine, keys[0], 12, every=5)
    key, _token = apikeys.create(engine, "bot", "alice", ["eng"], None)
    await write(engine, keys[0], 6, every=5)  # the gateway's writer goes on after the CLI wrote in between
    v = verify(engine, pub)
    assert v.ok and v.chains == 2, v.problems

    with engine.begin() as conn:  # the CLI's record of the key, deleted
        cli = conn.execute(select(records.c.seq).where(records.c.chain == "cli")).scalar_one()
    apikeys.revoke(engine, key.id)
    with engine.begin() as conn:
        conn.execute(delete(records).where(records.c.seq == cli))
    assert any(p.startswith("chain cli starts at seq") for p in verify(engine, pub).problems)  # its head removed

    with engine.begin() as conn:
        row = dict(conn.execute(select(records).order_by(records.c.seq.desc()).limit(1)).mappings().one())
        del row["seq"]
        conn.execute(insert(records).values(**{**row, "hash": None, "prev_hash": None, "detail": "added"}))
    assert any("has no chain hash" in p for p in verify(engine, pub).problems)


async def test_a_missing_checkpoint_is_caught_and_an_idle_tail_is_sealed(
    engine: Engine, keys: tuple[Path, Path]
) -> None:
    pub = load_verifier(str(keys[1]))
    await write(engine, keys[0], 30, every=10)
    with engine.begin() as conn:
        mid = conn.execute(select(checkpoints.c.id).order_by(checkpoints.c.id).limit(1).offset(1)).scalar_one()
        conn.execute(delete(checkpoints).where(checkpoints.c.id == mid))
    assert any("the checkpoint before it is missing" in p for p in verify(engine, pub).problems)

    signer, kid = load_signer(str(keys[0]))
    w = StoreWriter(engine, signer=signer, key_id=kid, checkpoint_every=1000, checkpoint_interval=0.2, chain_id="idle")
    w.start(asyncio.get_running_loop())
    try:
        await w.write([event_record("srv", "s2", "test", "one")])

        def sealed() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(checkpoints.c.id).where(checkpoints.c.chain == "idle")).first() is not None

        await eventually(sealed, within=5, what="the idle writer's checkpoint")
    finally:
        w.close()
