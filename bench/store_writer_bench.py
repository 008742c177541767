"""Micro-benchmark of the store writer (group commit), old and new implementations in the same run.

    .venv/bin/python bench/store_writer_bench.py [--sizes 1,2,16,256] [--seconds 1.5] [--repeats 3]
                                                 [--variants legacy,core-conn,driver-sql,dbapi,new] [--profile]

For each batch size B, B client coroutines on a uvloop loop each write one record at a time and await its commit
(``await writer.write([record])``), closed loop, for ``--seconds`` after a warm-up: B clients waiting on the writer
is what B concurrent calls produce in the gateway (durability ``commit``), so B=1 is the gateway at concurrency 1.
Each cell gets a fresh copy of an empty migrated SQLite store (WAL, synchronous=NORMAL: the engine from
``portcullis.store.db.make_engine``), so every variant writes into the same state.

Reported per variant and B (median over repeats; variants interleaved within each repeat so machine noise hits them
alike): records/s, the achieved records per transaction, CPU µs per record of the whole process and split into the
writer thread and the event-loop thread (``/proc/self/task/TID/schedstat``), and p50 latency of a write.

Variants (each one idea added to the previous, so each can be measured on its own):

- ``legacy``: the writer as committed in ``--legacy-ref`` (default b34dc37): ``engine.begin()`` and a Core
  ``insert(records)`` with a list of dicts per batch, one queue put (thread wake-up) per submit.
- ``core-conn``: the same Core insert with dicts, on one long-lived SQLAlchemy Connection.
- ``driver-sql``: long-lived Connection, ``exec_driver_sql`` of the INSERT compiled once, tuples per record.
- ``dbapi``: the current writer's DBAPI path (one long-lived DBAPI connection and cursor, ``cursor.executemany`` of
  the compiled INSERT, ``commit``), but one queue put per submit like the legacy writer.
- ``nochain``: the current writer with the audit chain's hashing switched off (the cost of the chain, A/B).
- ``new``: the current writer as it is (``dbapi`` + the hand-over of everything submitted in one loop pass as one
  queue put, + the audit chain).

``--profile`` also runs cProfile inside the writer thread of ``legacy`` and ``new`` at B=1 and prints the top
functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from sqlalchemy import Engine, insert  # noqa: E402

from portcullis.flow import Record  # noqa: E402
from portcullis.store import writer as current  # noqa: E402
from portcullis.store.db import ensure_schema, make_engine  # noqa: E402
from portcullis.store.schema import records  # noqa: E402

PAYLOAD = (
    b'{"jsonrpc":"2.0","id":17,"result":{"content":[{"type":"text","text":"hello portcullis"}],'
    b'"structuredContent":{"text":"hello portcullis"},"isError":false}}'
)


def load_legacy(ref: str) -> types.ModuleType:
    src = subprocess.run(
        ["git", "show", f"{ref}:portcullis/store/writer.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader("legacy_store_writer", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    exec(compile(src, f"{ref}:portcullis/store/writer.py", "exec"), mod.__dict__)
    # the gateway builds items from the current module's classes, which the legacy code tells apart by isinstance
    mod.SessionOpen = current.SessionOpen
    mod.SessionEnd = current.SessionEnd
    return mod


# --- intermediate variants (each adds one idea) ------------------------------------------------------------------
class DbapiOnePutPerSubmit(current.StoreWriter):
    """The current DBAPI write path, with the legacy submit: one queue put (thread wake-up) per submit."""

    def submit(self, items: list[Any], wait: bool = True) -> asyncio.Future[None] | None:
        fut = None
        if wait:
            assert self._loop is not None
            fut = self._loop.create_future()
        self._q.put([(items, fut)])
        return fut


class CoreOnLongConnection(DbapiOnePutPerSubmit):
    """Core insert(records) with dicts per batch, on one long-lived SQLAlchemy Connection."""

    _sa: Any = None

    def _write(self, recs: list[Any], opens: list[Any], ends: list[Any]) -> None:
        assert not opens and not ends
        if self._sa is None:
            self._sa = self._engine.connect()
        with self._sa.begin():
            self._sa.execute(
                insert(records),
                [
                    {
                        "ts_ns": it.ts_ns,
                        "server": it.server,
                        "session_id": it.session_id,
                        "direction": it.direction,
                        "kind": it.kind,
                        "method": it.method,
                        "msg_id": it.msg_id,
                        "flow_id": it.flow_id,
                        "outcome": it.outcome,
                        "latency_us": it.latency_us,
                        "detail": it.detail,
                        "principal": it.principal,
                        "payload": it.payload,
                    }
                    for it in recs
                ],
            )

    def _disconnect(self, invalidate: bool = False) -> None:
        if self._sa is not None:
            self._sa.close()
            self._sa = None


class DriverSqlOnLongConnection(CoreOnLongConnection):
    """exec_driver_sql of the INSERT compiled once, tuples per record, on one long-lived SQLAlchemy Connection."""

    def _write(self, recs: list[Any], opens: list[Any], ends: list[Any]) -> None:
        assert not opens and not ends
        if self._sa is None:
            self._sa = self._engine.connect()
        s = self._record_sql
        with self._sa.begin():
            self._sa.exec_driver_sql(s.sql, [s.params(r) for r in recs])


class NoChain(current.StoreWriter):
    """The current writer without the audit chain hash (every record gets the same constant): its cost, A/B."""

    def _write(self, recs: list[Any], opens: list[Any], ends: list[Any]) -> None:
        saved = current.digest
        current.digest = lambda prev, values: prev  # type: ignore[assignment]
        try:
            super()._write(recs, opens, ends)
        finally:
            current.digest = saved  # type: ignore[assignment]


def variants(legacy_ref: str) -> dict[str, type]:
    out: dict[str, type] = {}
    try:
        out["legacy"] = load_legacy(legacy_ref).StoreWriter
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"legacy writer unavailable ({exc}); skipped", file=sys.stderr)
    out["core-conn"] = CoreOnLongConnection
    out["driver-sql"] = DriverSqlOnLongConnection
    out["dbapi"] = DbapiOnePutPerSubmit
    out["nochain"] = NoChain
    out["new"] = current.StoreWriter
    return out


# --- measuring --------------------------------------------------------------------------------------------------
def thread_cpu_ns(tid: int) -> int:
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def record(i: int) -> Record:
    return Record(
        ts_ns=time.time_ns(),
        server="fast",
        session_id="k3J9x0S2mQ8vYbq1Zr4uWc7tLd5nHa6E",
        direction="s2c",
        kind="result",
        method="tools/call",
        msg_id=str(i),
        flow_id=i,
        payload=PAYLOAD,
        outcome="ok",
        latency_us=512,
    )


def make_store(template: Path, dest: Path) -> Engine:
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(template) + suffix)
        if src.exists():
            shutil.copyfile(src, str(dest) + suffix)
    return make_engine(f"sqlite:///{dest}")


def profiled(cls: type, sink: dict[str, Any]) -> type:
    class Profiled(cls):  # type: ignore[misc, valid-type]
        def _run(self) -> None:
            prof = cProfile.Profile()
            prof.enable()
            try:
                super()._run()
            finally:
                prof.disable()
                sink["profile"] = prof

    return Profiled


async def cell(cls: type, engine: Engine, clients: int, seconds: float, warmup: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    w = cls(engine)
    w.start(loop)
    counter = 0
    lat: list[int] = []
    measuring = False
    deadline = 0.0

    async def client() -> None:
        nonlocal counter
        while True:
            if measuring and time.monotonic() >= deadline:
                return
            counter += 1
            r = record(counter)
            t0 = time.perf_counter_ns()
            await w.write([r])
            if measuring:
                lat.append(time.perf_counter_ns() - t0)

    # warm-up: the connection, the statement caches, the first pages
    counter_goal = max(warmup, 4 * clients)
    while counter < counter_goal:
        await asyncio.gather(*(w.write([record(counter + k)]) for k in range(clients)))
        counter += clients
    assert w._thread is not None
    wtid = w._thread.native_id
    mtid = threading.get_native_id()
    b0, n0 = w.batches, w.written
    cw0, cm0, cp0 = thread_cpu_ns(wtid), thread_cpu_ns(mtid), time.process_time_ns()
    t0 = time.monotonic()
    deadline = t0 + seconds
    measuring = True
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.monotonic() - t0
    cw1, cm1, cp1 = thread_cpu_ns(wtid), thread_cpu_ns(mtid), time.process_time_ns()
    n, b = w.written - n0, w.batches - b0
    w.close()
    engine.dispose()
    lat.sort()
    return {
        "records": n,
        "records_s": n / wall,
        "per_txn": n / b if b else None,
        "cpu_us_per_record": (cp1 - cp0) / 1e3 / n,
        "writer_us_per_record": (cw1 - cw0) / 1e3 / n,
        "loop_us_per_record": (cm1 - cm0) / 1e3 / n,
        "p50_us": lat[len(lat) // 2] / 1e3 if lat else None,
        "failures": w.failures,
    }


def med(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,2,16,256", help="batch sizes = concurrent waiting clients")
    ap.add_argument("--seconds", type=float, default=1.5, help="measured time per cell")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=300, help="records written before each measured window")
    ap.add_argument("--variants", default="legacy,core-conn,driver-sql,dbapi,new")
    ap.add_argument("--legacy-ref", default="b34dc37", help="git ref of the legacy writer")
    ap.add_argument("--profile", action="store_true", help="cProfile the writer thread of legacy and new at B=1")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last allowed one)")
    args = ap.parse_args(argv)
    avail = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else avail[-1]
    os.sched_setaffinity(0, {cpu})  # both threads on one core, as the gateway runs in bench/run.py
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    allv = variants(args.legacy_ref)
    names = [v for v in args.variants.split(",") if v in allv]

    tmp = Path(tempfile.mkdtemp(prefix="portcullis-wbench-"))
    try:
        template = tmp / "template.db"
        e = make_engine(f"sqlite:///{template}")
        ensure_schema(e, auto_create=True)
        with e.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        e.dispose()
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        k = 0
        for rep in range(args.repeats):
            for size in sizes:
                for name in names:
                    k += 1
                    engine = make_store(template, tmp / f"s{k}.db")
                    res = uvloop.run(cell(allv[name], engine, size, args.seconds, args.warmup))
                    results.setdefault((name, size), []).append(res)
                    for suffix in ("", "-wal", "-shm"):
                        Path(str(tmp / f"s{k}.db") + suffix).unlink(missing_ok=True)
                    print(
                        f"rep {rep} B={size:<4} {name:<11} {res['records_s']:9.0f} rec/s  "
                        f"{res['cpu_us_per_record']:7.1f} µs/rec (writer {res['writer_us_per_record']:.1f}, "
                        f"loop {res['loop_us_per_record']:.1f})  {res['per_txn']:.1f} rec/txn",
                        file=sys.stderr,
                        flush=True,
                    )
        print(
            f"\nstore writer micro-benchmark: SQLite WAL synchronous=NORMAL, both threads pinned to CPU {cpu}, "
            f"{args.seconds} s per cell, {args.repeats} repeats, medians; B clients each awaiting the commit of "
            "their one record, closed loop.\n"
        )
        print(
            "| B | variant | records/s | records/txn | CPU µs/record | writer thread | loop thread | p50 µs "
            "| CPU vs legacy |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for size in sizes:
            base = med([r["cpu_us_per_record"] for r in results.get(("legacy", size), [])])
            for name in names:
                rs = results[(name, size)]
                cpu_us = med([r["cpu_us_per_record"] for r in rs])
                ratio = f"x{cpu_us / base:.2f}" if base else "-"
                print(
                    f"| {size} | {name} | {med([r['records_s'] for r in rs]):.0f}"
                    f" | {med([r['per_txn'] for r in rs]):.1f}"
                    f" | {cpu_us:.1f} | {med([r['writer_us_per_record'] for r in rs]):.1f}"
                    f" | {med([r['loop_us_per_record'] for r in rs]):.1f} | {med([r['p50_us'] for r in rs]):.0f}"
                    f" | {ratio} |"
                )
        if args.profile:
            for name in ("legacy", "new"):
                if name not in allv:
                    continue
                sink: dict[str, Any] = {}
                k += 1
                engine = make_store(template, tmp / f"p{k}.db")
                uvloop.run(cell(profiled(allv[name], sink), engine, 1, args.seconds, args.warmup))
                buf = io.StringIO()
                st = pstats.Stats(sink["profile"], stream=buf)
                st.sort_stats("tottime").print_stats(18)
                print(f"\ncProfile of the {name} writer thread, B=1 (own time; cProfile inflates Python calls):")
                lines = buf.getvalue().splitlines()
                start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
                print("\n".join(line for line in lines[start:] if line.strip()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
