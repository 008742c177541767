"""Engines and migrations, with per-dialect set-up kept in one place (SQLite and PostgreSQL in lockstep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect

from portcullis.errors import PortcullisError

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaError(PortcullisError):
    """The database schema is missing or not one this version knows."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(engine: Engine, *, auto_create: bool) -> None:
    """Refuse to run on a schema this version does not know.

    An empty database is created when ``auto_create`` (the embedded SQLite default); otherwise the operator runs
    ``portcullis db upgrade``.
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        if auto_create and not inspect(engine).get_table_names():
            upgrade(engine)
            return
        raise SchemaError(
            f"the store at {engine.url.render_as_string(hide_password=True)} has no Portcullis schema; "
            "run: portcullis db upgrade --config FILE"
        )
    script = ScriptDirectory.from_config(_alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"the store's schema revision {current!r} is newer than this Portcullis knows (head {head!r}); "
            "upgrade Portcullis"
        )
    raise SchemaError(
        f"the store's schema revision {current!r} is behind this Portcullis (head {head!r}); "
        "run: portcullis db upgrade --config FILE"
    )
