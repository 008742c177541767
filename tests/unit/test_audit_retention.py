"""Retention and verifying copies, on a real SQLite store written by the real store writer.

Pruning by age or size cuts each chain at a signed checkpoint and records the prune, so the trail still verifies
(also half-way through a prune, and after the writer goes on); removing a chain's head any other way is caught.
An exported JSON-lines copy verifies on its own, from wherever it begins, and tampering with it is located.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, delete, func, insert, select

from portcullis.audit.codec import checkpoint_json, record_json
from portcullis.pipeline.record import event_record
from portcullis.store import retention
from portcullis.store.audit_keys import load_signer, load_verifier
from portcullis.store.schema import checkpoints, records, sessions
from portcullis.store.verify import verify, verify_files
from portcullis.store.writer import SessionEnd, SessionOpen, StoreWriter


async def write(engine: Engine, key: Path, n: int, every: int = 10, session: str = "s1", size: int = 10) -> None:
    signer, kid = load_signer(str(key))
    w = StoreWriter(engine, signer=signer, key_id=kid, checkpoint_every=every, checkpoint_interval=3600)
    w.start(asyncio.get_running_loop())
    try:
        await w.write([SessionOpen(session, "srv", "session", "2025-06-18", None, None, None, time.time_ns())])
        for i in range(n):
            body = orjson.dumps({"i": i, "pad": "x" * size})
            await w.write([event_record("srv", session, "test", f"record {i}", payload=body)])
        await w.write([SessionEnd(session, time.time_ns(), "closed")])
    finally:
        w.close()


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(records)).scalar_one())


def cps(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(checkpoints).order_by(checkpoints.c.id)).mappings()]


async def test_prune_by_age_cuts_at_a_checkpoint_and_the_trail_still_verifies(
    engine: Engine, keys: tuple[Path, Path]
) -> None:
    pub = load_verifier(str(keys[1]))
    await write(engine, keys[0], 30, session="old")
    middle = time.time_ns()
    await write(engine, keys[0], 30, session="new")
    last_old_cp = max(int(c["seq"]) for c in cps(engine) if int(c["ts_ns"]) <= middle)  # type: ignore[call-overload]

    result = retention.prune(engine, before_ns=middle)
    assert [(c.chain, c.through_seq) for c in result.cuts] == [("gateway", last_old_cp)]
    with engine.connect() as conn:
        first = conn.execute(select(func.min(records.c.seq)).where(records.c.chain == "gateway")).scalar_one()
        left = {r[0] for r in conn.execute(select(sessions.c.id))}
    assert first == last_old_cp + 1
    assert left == {"new"}  # the old session ended and has no records left
    assert result.records == last_old_cp  # every gateway record up to the cut (nothing else was there)
    v = verify(engine, pub)
    assert v.ok, v.problems
    assert v.pruned == {"gateway": last_old_cp}
    assert len(cps(engine)) == v.checkpoints  # checkpoints are kept

    await write(engine, keys[0], 5, session="later")  # the writer continues from the chain's head
    assert verify(engine, pub).ok


async def test_prune_never_takes_a_chains_newest_record_or_an_unsealed_tail(
    engine: Engine, keys: tuple[Path, Path]
) -> None:
    await write(engine, keys[0], 25, every=10)  # checkpoints at 10, 20 and the last (25) at shutdown
    result = retention.prune(engine, before_ns=time.time_ns())
    with engine.connect() as conn:
        head = conn.execute(select(func.max(records.c.seq))).scalar_one()
    assert result.cuts and result.cuts[0].through_seq < head
    assert count(engine) >= 1
    assert verify(engine, load_verifier(str(keys[1]))).ok


async def test_prune_by_size_keeps_the_newest_within_the_bound(engine: Engine, keys: tuple[Path, Path]) -> None:
    await write(engine, keys[0], 100, every=10, size=1000)  # ~1 KB per record
    result = retention.prune(engine, max_bytes=30_000)
    with engine.connect() as conn:
        kept = conn.execute(select(func.sum(func.length(records.c.payload)))).scalar_one()
    assert result.cuts
    assert 20_000 <= kept <= 30_000  # cut at the oldest checkpoint after which it fits: within one checkpoint's span
    assert verify(engine, load_verifier(str(keys[1]))).ok


async def test_a_head_removed_without_a_recorded_prune_is_caught(engine: Engine, keys: tuple[Path, Path]) -> None:
    pub = load_verifier(str(keys[1]))
    await write(engine, keys[0], 30)
    at = int(cps(engine)[1]["seq"])  # type: ignore[call-overload]
    with engine.begin() as conn:  # exactly what a prune deletes, but nobody recorded a prune
        conn.execute(delete(records).where(records.c.seq <= at))
    assert verify(engine, pub).problems == [
        f"chain gateway starts at seq {at + 1}, after the checkpoint at seq {at}, but no prune is recorded: "
        "its head was removed"
    ]
    with engine.begin() as conn:  # and a cut that is not at a checkpoint
        conn.execute(delete(records).where(records.c.seq <= at + 2))
    assert verify(engine, pub).problems == [
        f"chain gateway starts at seq {at + 3}, linked to no signed checkpoint: its head was removed"
    ]


async def test_a_prune_stopped_half_way_still_verifies(engine: Engine, keys: tuple[Path, Path]) -> None:
    pub = load_verifier(str(keys[1]))
    await write(engine, keys[0], 50)
    cut = retention.plan(engine, before_ns=time.time_ns())[0]
    earlier = max(int(c["seq"]) for c in cps(engine) if int(c["seq"]) < cut.through_seq)  # type: ignore[call-overload]
    from portcullis.store import admin_chain

    with engine.begin() as conn:  # what prune() does first: the intent, on the admin chain
        conn.execute(delete(records).where(records.c.seq < 0))
        detail = {"chain": "gateway", "through_seq": cut.through_seq, "checkpoint": cut.checkpoint}
        admin_chain.append(conn, "audit_pruned", orjson.dumps(detail).decode())
    with engine.begin() as conn:  # then only the first batch went before the process died
        conn.execute(delete(records).where(records.c.chain == "gateway", records.c.seq <= earlier))
    v = verify(engine, pub)
    assert v.ok and v.pruned == {"gateway": earlier}, v.problems


def export(engine: Engine, path: Path, lines: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    """The trail as the jsonl export writes it: records and checkpoints in commit order."""
    if lines is None:
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(records).order_by(records.c.seq)).mappings()]
        marks = {int(c["seq"]): c for c in cps(engine)}  # type: ignore[call-overload]
        lines = []
        for r in rows:
            lines.append(record_json(r))
            if r["seq"] in marks:
                lines.append(checkpoint_json(marks[r["seq"]]))
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return lines


async def test_an_exported_copy_verifies_on_its_own_and_tampering_is_located(
    engine: Engine, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    pub = load_verifier(str(keys[1]))
    await write(engine, keys[0], 30)
    f = tmp_path / "audit.jsonl"
    lines = export(engine, f)
    v = verify_files([f], pub)
    assert v.ok and v.records == 30 and v.checkpoints == 3 and v.unsealed == 0, v.problems

    # rotated files read oldest first are one copy
    half = len(lines) // 2
    export(engine, tmp_path / "audit.jsonl.1", lines[:half])
    export(engine, f, lines[half:])
    assert verify_files([tmp_path / "audit.jsonl.1", f], pub).ok
    # a copy that begins inside the chain (old files rotated away) verifies from its first record
    assert verify_files([f], pub).ok

    recs = [x for x in lines if x["type"] == "record"]
    altered = [dict(x) for x in lines]
    i = altered.index(recs[7])
    altered[i] = {**recs[7], "payload": '{"i": 999}'}
    export(engine, f, altered)
    assert verify_files([f], pub).problems[0] == f"seq {recs[7]['seq']} altered (its hash does not match its fields)"

    export(engine, f, [x for x in lines if x is not recs[9]])
    assert verify_files([f], pub).problems[0].startswith(f"chain gateway broken between seq {recs[8]['seq']} and")

    swapped = list(lines)
    a, b = swapped.index(recs[3]), swapped.index(recs[4])
    swapped[a], swapped[b] = swapped[b], swapped[a]
    export(engine, f, swapped)
    assert not verify_files([f], pub).ok

    export(engine, f, lines[:-3])  # the tail cut off: the final checkpoint's record is gone with it
    export(engine, tmp_path / "cps.jsonl", [x for x in lines if x["type"] == "checkpoint"])
    assert any("tail truncated" in p for p in verify_files([f, tmp_path / "cps.jsonl"], pub).problems)

    f.write_bytes(b'{"type": "record", "v": 99}\n')
    with pytest.raises(ValueError, match=r"audit.jsonl:1: not an audit export line \(unsupported record format"):
        verify_files([f], pub)


def cli_run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "portcullis", "audit", *args], capture_output=True, timeout=60)


async def test_prune_and_verify_through_the_cli(engine: Engine, keys: tuple[Path, Path], tmp_path: Path) -> None:
    await write(engine, keys[0], 30)
    store = str(engine.url)
    dry = cli_run(["prune", "--store", store, "--older-than", "0.001s", "--dry-run"])
    assert dry.returncode == 0 and b"would prune chain gateway through seq" in dry.stdout, dry.stderr
    n = count(engine)
    run = cli_run(["prune", "--store", store, "--older-than", "0.001s"])
    assert run.returncode == 0 and b"pruned" in run.stdout, run.stderr
    assert count(engine) < n
    ok = cli_run(["verify", "--store", store, "--public-key", str(keys[1])])
    assert ok.returncode == 0 and b"chain gateway pruned through seq" in ok.stdout, ok.stdout + ok.stderr
    bad = cli_run(["prune", "--store", store, "--older-than", "soon"])
    assert bad.returncode == 2 and b"expected a duration such as 90d" in bad.stderr

    with engine.begin() as conn:  # an inserted record in the copy's place: the file verify fails with exit 1
        conn.execute(insert(records).values(ts_ns=1, server="x", direction="gw", kind="forged", flow_id=0))
    export(engine, tmp_path / "a.jsonl")
    res = cli_run(["verify", "--file", str(tmp_path / "a.jsonl"), "--public-key", str(keys[1])])
    assert res.returncode == 1
