"""The store's side of definition pinning (:mod:`portcullis.pipeline.pin`): sightings written, pins read, and an
admin's acceptance of a changed definition (recorded on the admin chain)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Engine, and_, insert, select, update

from portcullis.pipeline.pin import Sighting
from portcullis.store import admin_chain
from portcullis.store.schema import definitions


def load_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(definitions)).mappings()]


def save(engine: Engine, seen: Sequence[Sighting]) -> None:
    """A first sighting creates the pin (accepted = seen, unless suspicious); later ones update ``seen``."""
    with engine.begin() as conn:
        for s in seen:
            key = and_(definitions.c.server == s.server, definitions.c.kind == s.kind, definitions.c.name == s.name)
            row = conn.execute(select(definitions.c.accepted_digest).where(key)).first()
            findings = orjson.dumps(list(s.findings)).decode() if s.findings else None
            if row is None:
                conn.execute(
                    insert(definitions).values(
                        server=s.server,
                        kind=s.kind,
                        name=s.name,
                        accepted_digest="" if s.findings else s.digest,
                        accepted="" if s.findings else s.definition,
                        seen_digest=s.digest,
                        seen=s.definition,
                        first_seen_ns=s.ts_ns,
                        changed_ns=s.ts_ns if s.findings else None,
                        findings=findings,
                    )
                )
                continue
            changed = row[0] != s.digest or bool(s.findings)
            conn.execute(
                update(definitions)
                .where(key)
                .values(
                    seen_digest=s.digest,
                    seen=s.definition,
                    findings=findings,
                    changed_ns=s.ts_ns if changed else None,
                )
            )


def accept(engine: Engine, server: str, kind: str, name: str, by: str, expect: str | None = None) -> dict[str, Any]:
    """Trust what the server announces now. ``expect``: only if that is still the digest (the one reviewed).
    Raises LookupError (unknown) or ValueError (the definition moved on since it was reviewed)."""
    with engine.begin() as conn:
        key = and_(definitions.c.server == server, definitions.c.kind == kind, definitions.c.name == name)
        conn.execute(update(definitions).where(key).values(server=definitions.c.server))  # the write lock first
        row = conn.execute(select(definitions).where(key)).mappings().first()
        if row is None:
            raise LookupError(f"no {kind} {name!r} seen on {server!r}")
        if expect is not None and row["seen_digest"] != expect:
            raise ValueError(f"the definition changed again (now {row['seen_digest'][:16]}): review it once more")
        now = time.time_ns()
        conn.execute(
            update(definitions)
            .where(key)
            .values(
                accepted_digest=row["seen_digest"],
                accepted=row["seen"],
                changed_ns=None,
                findings=None,
                accepted_by=by,
                accepted_ns=now,
            )
        )
        admin_chain.append(
            conn,
            "definition_accepted",
            f"{server} {kind} {name!r}: {row['seen_digest'][:16]} accepted by {by} (was {row['accepted_digest'][:16]})",
        )
        return {**row, "accepted_digest": row["seen_digest"]}
