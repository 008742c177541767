from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from portcullis.errors import StoreError
from portcullis.pipeline.record import event_record
from portcullis.store.db import SchemaError, current_revision, ensure_schema, head_revision, make_engine, upgrade
from portcullis.store.queries import all_records
from portcullis.store.writer import StoreWriter


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    ensure_schema(e, auto_create=True)
    return e


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


def test_schema_checks(tmp_path: Path) -> None:
    e = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    with pytest.raises(SchemaError, match="portcullis db upgrade"):
        ensure_schema(e, auto_create=False)
    upgrade(e)
    assert current_revision(e) == head_revision()
    ensure_schema(e, auto_create=False)
    with e.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
    with pytest.raises(SchemaError, match="newer than this Portcullis"):
        ensure_schema(e, auto_create=False)
