"""The audit chain of administrative changes made outside the gateway's writer (the CLI's API-key changes, retention
prunes): one record appended in the caller's transaction, so the change and its record commit together.

Appends are serialized: on SQLite the caller's own write earlier in the transaction holds the database's write lock
(make the change first, then call :func:`append`); on PostgreSQL a transaction-scoped advisory lock is taken, so two
processes never both extend the chain from the same head.
"""

from __future__ import annotations

import operator
from typing import Any

from sqlalchemy import func, insert, select

from portcullis.pipeline.record import event_record
from portcullis.store.chain import CHAIN_FIELDS, GENESIS, digest
from portcullis.store.schema import records

CLI_CHAIN = "cli"
_PG_LOCK = 0x706F7274  # "port": the advisory lock id of the admin chain


def append(conn: Any, kind: str, detail: str, chain: str = CLI_CHAIN) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK)))
    from portcullis.store.writer import RECORD_COLUMNS, RECORD_TEXT, fit

    r = event_record("-", None, kind, detail)
    fit(r, RECORD_TEXT)
    r.chain = chain
    head = conn.execute(
        select(records.c.hash)
        .where(records.c.chain == chain, records.c.hash.is_not(None))
        .order_by(records.c.seq.desc())
        .limit(1)
    ).scalar()
    r.prev_hash = bytes(head) if head is not None else GENESIS
    r.hash = digest(r.prev_hash, operator.attrgetter(*CHAIN_FIELDS)(r))
    conn.execute(insert(records).values(**{c: getattr(r, c) for c in RECORD_COLUMNS}))
