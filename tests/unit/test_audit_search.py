"""Audit search on SQLite and PostgreSQL (the `engine` fixture runs each test on both): every filter, combined
filters, keyset pages, LIKE wildcards taken literally, sealed originals never returned, only masked text found."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from portcullis.audit.search import Query, parse_when, search
from portcullis.cli.main import cli
from portcullis.flow import Record
from portcullis.pipeline.record import event_record
from portcullis.store.db import make_engine, upgrade
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
    await write(engine, rows)


async def write(engine: Engine, rows: list[Record]) -> None:
    """Through the real store writer (chain and all), one record per batch, in order."""
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


async def test_a_principal_is_matched_exactly_by_subject_client_id_or_email(engine: Engine) -> None:
    await fill(engine)
    assert ts(engine, principal="ali") == []  # never a substring
    assert ts(engine, principal="ALICE@Example.com") == [2_000, 1_000]  # the e-mail in any case
    assert ts(engine, principal="Alice") == []  # the subject exactly
    key = json.dumps({"sub": "apikey:ci", "groups": ["ops"], "client_id": "apikey:0a1b2c", "kind": "apikey"})
    accented = json.dumps({"sub": "josé", "email": None, "groups": ["équipe"], "client_id": None, "kind": "user"})
    await write(engine, [call("db", "q", key, 8_000), call("db", "q", accented, 9_000)])
    assert ts(engine, principal="apikey:0a1b2c") == ts(engine, principal="apikey:ci") == [8_000]
    assert ts(engine, principal="josé") == ts(engine, group="équipe") == [9_000]  # stored as \u00e9 by json.dumps


async def test_text_is_found_as_the_json_text_holds_it(engine: Engine) -> None:
    await fill(engine)
    plain = event_record("db", None, "result", None, payload=b'{"text":"Caf\xc3\xa9 said \\"hi\\" at C:\\\\tmp"}')
    escaped = event_record("db", None, "result", None, payload=b'{"text":"na\\u00EFve"}')  # ASCII-escaped by a peer
    broken = event_record("db", None, "result", None, payload=b"not utf-8 \xff\xfe but searchable")
    for i, r in enumerate((plain, escaped, broken)):
        r.ts_ns = 10_000 + i
    await write(engine, [plain, escaped, broken])
    assert ts(engine, text="Café") == ts(engine, text="CAFé") == [10_000]  # ASCII letters in any case
    assert ts(engine, text='said "hi"') == [10_000]  # the JSON-escaped form
    assert ts(engine, text="C:\\tmp") == [10_000]
    assert ts(engine, text="naïve") == [10_001]
    assert ts(engine, text="but SEARCHABLE") == [10_002]  # bytes that are not UTF-8 break nothing
    assert ts(engine, text="\\") == [10_001, 10_000]


async def test_tool_requests_come_with_their_responses(engine: Engine) -> None:
    req = call("db", "query", who("alice", []), 1_000)
    req.flow_id, req.msg_id = 7, "1000"
    other = event_record("db", "s-db", "result", None, payload=b'{"id":1000,"result":"another flow"}')
    resp = event_record("db", "s-db", "result", None, payload=b'{"id":1000,"result":"rows"}', outcome="ok")
    for r, t, flow in ((other, 1_500, 8), (resp, 2_000, 7)):
        r.direction, r.method, r.msg_id, r.flow_id, r.ts_ns = "s2c", "tools/call", "1000", flow, t
    unanswered = call("db", "query", who("alice", []), 3_000)
    unanswered.flow_id, unanswered.msg_id = 9, "3000"
    await write(engine, [req, other, resp, unanswered])
    rows, _ = search(engine, Query(tool="query", responses=True))
    assert [r["ts_ns"] for r in rows] == [3_000, 1_000]
    assert rows[0]["response"] is None and rows[1]["response"]["payload"] == '{"id":1000,"result":"rows"}'
    assert "sealed_b64" not in rows[1]["response"]
    rows, _ = search(engine, Query(tool="query"))
    assert "response" not in rows[0]


def test_query_values_are_checked() -> None:
    with pytest.raises(ValueError, match="decision"):
        Query(decision="maybe")
    with pytest.raises(ValueError, match="text"):
        Query(text="x" * 1001)
    with pytest.raises(ValueError, match="principal"):
        Query(principal="")


def test_times_are_rfc3339_durations_back_from_now_or_ns() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_when("2026-11-24T10:00:00Z") == parse_when("2026-11-24T10:00:00") == 1_795_514_400 * 10**9
    assert parse_when("2026-11-24T11:00:00.5+01:00") == 1_795_514_400 * 10**9 + 500_000_000
    assert parse_when("15m", now) == now - 900 * 10**9
    assert parse_when("2h", now) == now - 7200 * 10**9
    assert parse_when("7d", now) == now - 7 * 86400 * 10**9
    assert parse_when("1795514400000000000") == 1_795_514_400 * 10**9
    assert parse_when(None) is None
    for bad in ("yesterday", "inf", "nan", "-5m", "15 minutes"):
        with pytest.raises(ValueError):
            parse_when(bad)


async def test_the_cli_prints_a_table_or_json_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    upgrade(engine)
    await fill(engine)
    engine.dispose()
    runner = CliRunner()
    r = runner.invoke(cli, ["audit", "search", "--store", url, "--tool", "query", "--principal", "bob"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("TIME") and len(lines) == 3
    assert "tools/call query" in lines[1] and "bob" in lines[1] and "allow:r1" in lines[1]
    r = runner.invoke(cli, ["audit", "search", "--store", url, "--json", "--limit", "2"])
    assert r.exit_code == 0
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["ts_ns"] for d in docs] == [7_000, 6_000] and all("sealed_b64" not in d for d in docs)
    assert f"more: --cursor {docs[-1]['seq']}" in r.stderr
    r = runner.invoke(cli, ["audit", "search", "--store", url, "--since", "yesterday"])
    assert r.exit_code == 2 and "RFC 3339" in r.output
    r = runner.invoke(cli, ["audit", "search", "--store", f"sqlite:///{tmp_path / 'none.db'}"])
    assert r.exit_code == 2 and not (tmp_path / "none.db").exists()  # read-only: no store is created
