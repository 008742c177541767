"""Audit search on SQLite and PostgreSQL (the `engine` fixture runs each test on both): every filter, combined
filters, keyset pages, LIKE wildcards taken literally, sealed originals never returned, only masked text found."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import Engine

from portcullis.audit.search import Query, search
from portcullis.pipeline.record import event_record
from portcullis.store.writer import StoreWriter


def who(sub: str, groups: list[str], email: str | None = None) -> str:
    return json.dumps({"sub": sub, "email": email, "groups": groups, "client_id": None, "iss": "i", "kind": "user"})


def call(server: str, tool: str, principal: str, ts: int, decision: str = "allow", text: str = "x") -> Any:
    args = {"text": text}
    payload = json.dumps(
        {"jsonrpc": "2.0", "id": ts, "method": "tools/call", "params": {"name": tool, "arguments": args}}
    )
    r = event_record(server, f"s-{server}", "request", None, payload=payload.encode(), principal=principal)
    r.direction, r.method, r.ts_ns, r.decision, r.rule = "c2s", "tools/call", ts, decision, "r1"
    return r


async def fill(engine: Engine) -> None:
    alice, bob = who("alice", ["eng", "oncall"], "alice@example.com"), who("bob", ["sre"])
    eng_as_sub = who("eng", [])  # a subject that looks like a group name: not a member of "eng"
    rows = [
        call("db", "query", alice, 1_000, text="select 1"),
        call("db", "drop_table", alice, 2_000, decision="hold"),
        call("crm", "query", bob, 3_000, decision="deny"),
        call("crm", "lookup", eng_as_sub, 4_000, text="100% sure_thing"),
        call("db", "query", bob, 5_000, text="customer [email] wrote"),
    ]
    sealed = event_record("db", "s-db", "result", None, payload=b'{"result": "[email]"}')
    sealed.sealed, sealed.masked, sealed.ts_ns = (
        b"SEALED-ORIGINAL alice.secret@example.com",
        '[{"class":"email"}]',
        6_000,
    )
    rows.append(sealed)
    rows.append(event_record("db", None, "session_open", "opened for the demo"))
    rows[-1].ts_ns = 7_000
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        for r in rows:
            await w.write([r])
    finally:
        w.close()


def ts(engine: Engine, **kw: Any) -> list[int]:
    rows, _ = search(engine, Query(**kw))
    return [r["ts_ns"] for r in rows]


async def test_each_filter_and_their_combinations(engine: Engine) -> None:
    await fill(engine)
    assert ts(engine) == [7_000, 6_000, 5_000, 4_000, 3_000, 2_000, 1_000]  # newest first
    assert ts(engine, principal="alice") == [2_000, 1_000]
    assert ts(engine, principal="alice@example.com") == [2_000, 1_000]
    assert ts(engine, group="eng") == [2_000, 1_000]  # not the subject named "eng"
    assert ts(engine, group="sre") == [5_000, 3_000]
    assert ts(engine, server="crm") == [4_000, 3_000]
    assert ts(engine, tool="query") == [5_000, 3_000, 1_000]
    assert ts(engine, tool="query", server="db", principal="bob") == [5_000]
    assert ts(engine, decision="hold") == [2_000]
    assert ts(engine, kind="session_open") == [7_000]
    assert ts(engine, since_ns=2_000, until_ns=5_000) == [4_000, 3_000, 2_000]
    assert ts(engine, text="SELECT 1") == [1_000]  # case-insensitive
    assert ts(engine, text="for the DEMO") == [7_000]  # the detail too


async def test_wildcards_are_literal_and_only_masked_text_is_found(engine: Engine) -> None:
    await fill(engine)
    assert ts(engine, text="100% sure_") == [4_000]
    assert ts(engine, text="0%_s") == []  # '%' and '_' are not wildcards
    assert ts(engine, text="[email]") == [6_000, 5_000]
    assert ts(engine, text="alice.secret") == []  # the original is sealed: never searched
    rows, _ = search(engine, Query(kind="result"))
    assert "sealed_b64" not in rows[0] and "SEALED" not in json.dumps(rows)


async def test_pages_follow_the_cursor(engine: Engine) -> None:
    await fill(engine)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        rows, cursor = search(engine, Query(limit=2, cursor=cursor))
        seen += [r["ts_ns"] for r in rows]
        pages += 1
        if cursor is None:
            break
    assert seen == [7_000, 6_000, 5_000, 4_000, 3_000, 2_000, 1_000] and pages == 4
    rows, cursor = search(engine, Query(group="eng", limit=1))  # pages also when Python decides part of it
    rows2, cursor2 = search(engine, Query(group="eng", limit=1, cursor=cursor))
    assert [r["ts_ns"] for r in rows + rows2] == [2_000, 1_000] and cursor2 is None
