from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.dialects import postgresql, sqlite

from portcullis.errors import StoreError
from portcullis.flow import Record
from portcullis.pipeline.record import event_record
from portcullis.store.db import SchemaError, current_revision, ensure_schema, head_revision, make_engine, upgrade
from portcullis.store.queries import all_records, get_session
from portcullis.store.schema import records, sessions
from portcullis.store.writer import (
    RECORD_COLUMNS,
    SESSION_COLUMNS,
    SessionEnd,
    SessionOpen,
    StoreWriter,
    compile_statements,
)


async def test_group_commit_resolves_every_waiter_in_order(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        await asyncio.gather(*(w.write([event_record("s", f"sess{i}", "k", f"d{i}")]) for i in range(500)))
    finally:
        w.close()
    rows = all_records(engine)
    assert [r["detail"] for r in rows] == [f"d{i}" for i in range(500)]
    assert w.batches < 500  # batched, not one transaction per record


async def test_a_failed_write_is_refused_and_the_writer_recovers(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        with engine.begin() as c:
            c.execute(text("ALTER TABLE records RENAME TO records_away"))
        with pytest.raises(StoreError):
            await w.write([event_record("s", None, "k", "lost")])
        assert not w.healthy
        with engine.begin() as c:
            c.execute(text("ALTER TABLE records_away RENAME TO records"))
        await w.write([event_record("s", None, "k", "kept")])
        assert w.healthy
    finally:
        w.close()
    assert [r["detail"] for r in all_records(engine)] == ["kept"]


def test_schema_checks(store_url: str) -> None:
    e = make_engine(store_url)
    try:
        with pytest.raises(SchemaError, match="portcullis db upgrade"):
            ensure_schema(e, auto_create=False)
        upgrade(e)
        assert current_revision(e) == head_revision()
        ensure_schema(e, auto_create=False)
        with e.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
        with pytest.raises(SchemaError, match="newer than this Portcullis"):
            ensure_schema(e, auto_create=False)
    finally:
        e.dispose()


# --- the fast path: one DBAPI connection, statements compiled once, one hand-over per loop pass ---------------


def _rec(detail: str, payload: bytes | None = None) -> Record:
    return event_record("s", "sess", "k", detail, payload)


async def test_fifo_across_waited_and_unwaited_submits_and_passes(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    expected: list[str] = []
    try:
        futs = []
        for p in range(20):  # twenty passes of the loop, each mixing unwaited and waited items
            for i in range(7):
                d = f"p{p}-{i}"
                expected.append(d)
                fut = w.submit([_rec(d)], wait=i % 3 == 0)
                if fut is not None:
                    futs.append(fut)
            await asyncio.sleep(0)
        await asyncio.gather(*futs)
    finally:
        w.close()
    assert [r["detail"] for r in all_records(engine)] == expected
    assert w.written == len(expected)


async def test_one_pass_of_the_loop_is_one_batch(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        for i in range(50):
            w.submit([_rec(f"bg{i}")], wait=False)
        await asyncio.gather(*(w.write([_rec(f"w{i}")]) for i in range(50)))
        assert (w.batches, w.written) == (1, 100)
    finally:
        w.close()


async def test_a_pass_larger_than_max_batch_is_split_in_order(engine: Engine) -> None:
    w = StoreWriter(engine, max_batch=10)
    w.start(asyncio.get_running_loop())
    try:
        await asyncio.gather(*(w.write([_rec(f"d{i}")]) for i in range(35)))
        assert (w.batches, w.written) == (4, 35)
    finally:
        w.close()
    assert [r["detail"] for r in all_records(engine)] == [f"d{i}" for i in range(35)]


async def test_a_waiter_resolves_only_once_its_batch_is_committed(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        fut = w.submit([_rec("first", b"\x00\xffbytes")])
        assert fut is not None and not fut.done()
        await asyncio.sleep(0)
        await fut
        # another connection sees the row: it is committed, not just written into the writer's transaction
        with engine.connect() as c:
            rows = c.execute(text("SELECT detail, payload FROM records")).all()
        assert [(r[0], bytes(r[1])) for r in rows] == [("first", b"\x00\xffbytes")]
    finally:
        w.close()


async def test_a_failed_batch_fails_all_its_waiters_keeps_nothing_and_recovers(engine: Engine) -> None:
    failures: list[BaseException] = []
    w = StoreWriter(engine, on_failure=failures.append)
    w.start(asyncio.get_running_loop())
    try:
        await w.write([_rec("warm")])  # the writer's connection exists before the store breaks
        with engine.begin() as c:
            c.execute(text("ALTER TABLE records RENAME TO records_away"))
        opened = SessionOpen("S9", "s", "session", None, None, None, None, 1)
        futs = [w.submit([opened])] + [w.submit([_rec(f"lost{i}")]) for i in range(5)]
        results = await asyncio.gather(*(f for f in futs if f is not None), return_exceptions=True)
        assert len(results) == 6 and all(isinstance(r, StoreError) for r in results)
        assert not w.healthy and w.failures == 1 and len(failures) == 1
        with engine.begin() as c:
            c.execute(text("ALTER TABLE records_away RENAME TO records"))
            # the session opened in the failed batch was rolled back with it
            assert c.execute(text("SELECT count(*) FROM sessions")).scalar() == 0
        await w.write([_rec("kept")])
        assert w.healthy
    finally:
        w.close()
    assert [r["detail"] for r in all_records(engine)] == ["warm", "kept"]


async def test_sessions_open_and_end_once(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        await w.write(
            [SessionOpen("S1", "srv", "session", "2025-11-25", '{"name":"c"}', "alice", "up-1", 10), _rec("r")]
        )
        await w.write([SessionEnd("S1", 20, "client ended the session")])
        await w.write([SessionEnd("S1", 30, "again")])  # an ended session stays ended as it was
        await w.write(
            [SessionOpen("S2", "srv", "2026", None, None, None, None, 40), SessionEnd("S2", 50, "same batch")]
        )
    finally:
        w.close()
    s1, s2 = get_session(engine, "S1"), get_session(engine, "S2")
    assert s1 is not None and s2 is not None
    assert (s1["principal"], s1["upstream_session"], s1["ended_ns"], s1["end_reason"]) == (
        "alice",
        "up-1",
        20,
        "client ended the session",
    )
    assert (s2["ended_ns"], s2["end_reason"]) == (50, "same batch")


async def test_close_writes_what_was_submitted_in_the_current_pass(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    w.submit([_rec("a")], wait=False)
    w.submit([_rec("b")], wait=False)
    w.close()  # no loop pass in between: the hand-over has not run yet
    assert [r["detail"] for r in all_records(engine)] == ["a", "b"]


async def test_submit_from_another_thread_goes_straight_to_the_writer(engine: Engine) -> None:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        t = threading.Thread(target=lambda: w.submit([_rec("from a thread")], wait=False))
        t.start()
        t.join()
        await w.write([_rec("after")])
    finally:
        w.close()
    assert [r["detail"] for r in all_records(engine)] == ["from a thread", "after"]


def test_every_column_of_the_schema_is_written() -> None:
    # a column the writer leaves out (no field of that name on Record / SessionOpen) would be silently NULL
    assert set(RECORD_COLUMNS) == {c.name for c in records.columns} - {"seq"}
    assert set(SESSION_COLUMNS) == {c.name for c in sessions.columns} - {"ended_ns", "end_reason"}


def test_statements_are_compiled_per_dialect() -> None:
    rec = Record(1, "srv", "S", "c2s", "request", "tools/call", "7", 9, b"{}", "ok", 5, "d", "p")
    ins, opened, end = compile_statements(sqlite.dialect())
    assert ins.sql.startswith("INSERT INTO records (") and ins.sql.count("?") == len(RECORD_COLUMNS)
    assert ins.params(rec) == (
        1,
        "srv",
        "S",
        "c2s",
        "request",
        "tools/call",
        "7",
        9,
        "ok",
        5,
        "d",
        "p",
        b"{}",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )
    assert end.params(SessionEnd("S", 3, "why")) == (3, "why", "S")  # SET ended_ns, end_reason WHERE id
    pins, popen, pend = compile_statements(postgresql.psycopg.dialect())
    assert "RETURNING" not in pins.sql and "%(ts_ns)s" in pins.sql
    assert pins.params(rec) == {c: getattr(rec, c) for c in RECORD_COLUMNS}
    assert pend.params(SessionEnd("S", 3, "why")) == {"b_id": "S", "b_ended_ns": 3, "b_reason": "why"}
    assert "RETURNING" not in popen.sql and "RETURNING" not in opened.sql


async def test_one_writer_per_chain_across_processes_on_postgresql() -> None:
    """Two replicas configured with the same chain would fork it: the second is refused (fail closed) until the
    first lets go; replicas with chains of their own write side by side and the trail verifies as one."""
    from portcullis.store.verify import verify
    from tests.support.postgres import pg_schema

    with pg_schema() as url:
        engines = [make_engine(url), make_engine(url)]  # two engines: two processes' worth of connections
        upgrade(engines[0])
        a = StoreWriter(engines[0], chain_id="gateway-a")
        twin = StoreWriter(engines[1], chain_id="gateway-a")
        b = StoreWriter(engines[1], chain_id="gateway-b")
        for w in (a, twin, b):
            w.start(asyncio.get_running_loop())
        try:
            await a.write([event_record("s", None, "k", "from a")])
            with pytest.raises(StoreError):
                await twin.write([event_record("s", None, "k", "from the twin")])
            await b.write([event_record("s", None, "k", "from b")])
            a.close()
            await twin.write([event_record("s", None, "k", "the twin, once a let go")])
        finally:
            for w in (a, twin, b):
                w.close()
        try:
            v = verify(engines[0])
            assert v.ok and v.chains == 2 and v.records == 3, v.problems
            assert [r["detail"] for r in all_records(engines[0])] == ["from a", "from b", "the twin, once a let go"]
        finally:
            for e in engines:
                e.dispose()


async def test_odd_client_text_never_fails_a_batch(engine: Engine) -> None:
    """An id longer than its column, a NUL in a method name (PostgreSQL text cannot hold it): the batch — and the
    other callers' records in it — commits; the values are cut or replaced before they are hashed, so the chain
    verifies; the message itself stays whole in the payload."""
    from portcullis.store.verify import verify

    odd = event_record("s", None, "k", "odd")
    odd.msg_id, odd.method, odd.principal = "7" * 1000, "tools/\x00call", "p" * 5000
    odd.payload = b'{"id": "' + b"7" * 1000 + b'"}'
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        await asyncio.gather(w.write([odd]), w.write([event_record("s", None, "k", "neighbour")]))
    finally:
        w.close()
    rows = all_records(engine)
    assert [r["detail"] for r in rows] == ["odd", "neighbour"]
    assert rows[0]["msg_id"] == "7" * 199 + "…" and rows[0]["method"] == "tools/\ufffdcall"
    assert len(rows[0]["principal"]) == 400 and bytes(rows[0]["payload"]).count(b"7") == 1000
    assert verify(engine).ok


async def test_a_commit_listener_hears_each_batch_after_commit_with_the_stores_numbers(engine: Engine) -> None:
    from portcullis.store.writer import Fanout

    class Ear:
        def __init__(self, needs_seq: bool) -> None:
            self.needs_seq = needs_seq
            self.heard: list[tuple[str | None, int | None]] = []

        def committed(self, records: Any) -> None:
            self.heard += [(r.detail, r.seq) for r in records]

        def checkpointed(self, checkpoint: Any) -> None:
            pass

    numbered, plain = Ear(True), Ear(False)
    w = StoreWriter(engine, listener=Fanout([numbered, plain]))
    w.start(asyncio.get_running_loop())
    try:
        await asyncio.gather(*(w.write([event_record("s", None, "k", f"d{i}")]) for i in range(50)))
    finally:
        w.close()
    stored = [(r["detail"], r["seq"]) for r in all_records(engine)]
    assert numbered.heard == stored
    assert [d for d, _ in plain.heard] == [d for d, _ in stored]
