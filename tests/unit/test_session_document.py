"""The session document: export and load, the checkpoints that seal it, integrity findings (an altered record, a
broken link, a checkpoint that disagrees, records out of order), the converter from version 0 (what ``sessions show
--json`` printed), refusal of newer and unknown versions; the timeline; the replay's structural comparison."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from portcullis.audit.document import DocumentError, export_session, load_document
from portcullis.audit.replay import compare, diff, header, render, timeline
from portcullis.cli.main import cli
from portcullis.flow import Record
from portcullis.pipeline.record import event_record
from portcullis.store.audit_keys import load_signer
from portcullis.store.writer import SessionOpen, StoreWriter

INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "inspector", "version": "2.1"}}
WHO = '{"sub":"alice","email":"alice@example.com","groups":["eng"],"kind":"user"}'


def rec(ts: int, d: str, kind: str, method: str | None, mid: str | None, flow: int, body: Any, **kw: Any) -> Record:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return Record(ts, "srv", "s1", d, kind, method, mid, flow, payload, principal=WHO, **kw)


def conversation() -> list[Any]:
    """A session: initialize, a call held for approval and released, a denied call, a masked answer, a progress
    notification, and gateway events."""
    call = {"name": "deploy", "arguments": {"env": "prod"}}
    masked = orjson.dumps([{"class": "email", "path": "result.content[0].text", "count": 1}]).decode()
    return [
        SessionOpen("s1", "srv", "session", "2025-11-25", orjson.dumps(INIT["clientInfo"]).decode(), None, None, 1),
        rec(
            10,
            "c2s",
            "request",
            "initialize",
            "0",
            1,
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT},
        ),
        rec(
            11,
            "s2c",
            "result",
            "initialize",
            "0",
            1,
            {"jsonrpc": "2.0", "id": 0, "result": {}},
            outcome="ok",
            latency_us=900,
        ),
        event_record("srv", "s1", "session_open", "protocol 2025-11-25"),
        event_record("srv", "s1", "approval_requested", "apr_1: tools/call deploy by rule prod-needs-ok"),
        rec(
            20,
            "c2s",
            "request",
            "tools/call",
            "1",
            2,
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call},
            detail="released by approval apr_1",
        ),
        rec(
            21,
            "s2c",
            "notification",
            "notifications/progress",
            None,
            2,
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        ),
        rec(
            22,
            "s2c",
            "result",
            "tools/call",
            "1",
            2,
            {"jsonrpc": "2.0", "id": 1, "result": {"content": []}},
            outcome="ok",
            latency_us=2500,
            decision="hold",
            rule="prod-needs-ok",
        ),
        rec(
            30,
            "c2s",
            "request",
            "tools/call",
            "2",
            3,
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "drop"}},
        ),
        rec(
            31,
            "s2c",
            "error",
            "tools/call",
            "2",
            3,
            {"jsonrpc": "2.0", "id": 2, "error": {"code": -32010, "message": "Forbidden by policy"}},
            outcome="denied",
            latency_us=80,
            decision="deny",
            rule="no-drop",
        ),
        rec(
            40,
            "c2s",
            "request",
            "tools/call",
            "3",
            4,
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "whoami"}},
        ),
        rec(
            41,
            "s2c",
            "result",
            "tools/call",
            "3",
            4,
            {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "[email]"}]}},
            outcome="ok",
            latency_us=700,
            decision="allow",
            rule="eng-reads",
            masked=masked,
        ),
    ]


async def recorded(engine: Engine, key: Path | None = None) -> dict[str, Any]:
    signer, kid = load_signer(str(key)) if key is not None else (None, "")
    w = StoreWriter(engine, signer=signer, key_id=kid, checkpoint_every=5, checkpoint_interval=3600)
    w.start(asyncio.get_running_loop())
    try:
        for item in conversation():
            await w.write([item])
        await w.write([event_record("srv", "other", "test", "another session's record")])
    finally:
        w.close()
    return export_session(engine, "s1")


async def test_an_export_reads_back_whole_with_the_checkpoints_that_seal_it(
    engine: Engine, keys: tuple[Path, Path]
) -> None:
    doc = await recorded(engine, keys[0])
    assert doc["format"] == "portcullis.session" and doc["version"] == 1 and doc["exported_by"].startswith("portc")
    loaded = load_document(json.loads(json.dumps(doc)))
    assert loaded.version_read == 1 and loaded.problems == [] and loaded.verified == len(doc["records"]) == 11
    assert loaded.session is not None and loaded.session["id"] == "s1"
    seqs = [r["seq"] for r in doc["records"]]
    cps = [c["seq"] for c in loaded.checkpoints]
    assert cps and cps[-1] >= seqs[-1] and all(s >= seqs[0] for s in cps)  # the last one seals the whole session
    with pytest.raises(LookupError):
        export_session(engine, "nope")


async def test_an_altered_record_a_broken_link_and_a_wrong_checkpoint_are_reported(
    engine: Engine, keys: tuple[Path, Path]
) -> None:
    doc = await recorded(engine, keys[0])
    altered = copy.deepcopy(doc)
    call = altered["records"][4]
    assert '"prod"' in call["payload"]
    call["payload"] = call["payload"].replace('"prod"', '"dev"')
    assert load_document(altered).problems == [f"seq {call['seq']}: altered (its hash does not match its fields)"]

    relinked = copy.deepcopy(doc)
    relinked["records"][5]["prev_hash"] = "00" * 32  # rehashed over a different predecessor: intact, but unlinked
    problems = load_document(relinked).problems
    assert any("does not link to" in p for p in problems), problems

    reordered = copy.deepcopy(doc)
    reordered["records"][2], reordered["records"][3] = reordered["records"][3], reordered["records"][2]
    assert "records out of seq order (or a seq twice)" in load_document(reordered).problems

    forged = copy.deepcopy(doc)
    at = {r["seq"] for r in forged["records"]}
    sealing = [c for c in forged["checkpoints"] if c["seq"] in at]
    if sealing:  # a checkpoint at one of this session's records must seal that record's hash
        sealing[0]["hash"] = "11" * 32
        assert any("checkpoint" in p for p in load_document(forged).problems)


async def test_version_0_is_converted_and_proven_where_its_bytes_come_back(engine: Engine, tmp_path: Path) -> None:
    await recorded(engine)
    shown = CliRunner().invoke(cli, ["sessions", "show", "s1", "--store", str(engine.url), "--json"])
    assert shown.exit_code == 0, shown.output
    v0 = json.loads(shown.output)
    assert "format" not in v0 and isinstance(v0["records"][1]["payload"], dict)  # the released shape
    loaded = load_document(v0)
    assert loaded.version_read == 0 and loaded.problems == []
    assert loaded.verified == 11 and loaded.unverifiable == 0  # compact JSON: the recorded bytes come back
    assert header(loaded).client == INIT["clientInfo"]

    v0["records"][0]["payload"]["params"]["clientInfo"]["name"] = "changed"  # unprovable now, not "altered"
    v0["records"][2]["sealed"] = True  # a sealed original is not in a version 0 document: cannot be proven
    loaded = load_document(v0)
    assert loaded.unverifiable == 2 and loaded.verified == 9 and loaded.problems == []
    assert "INTEGRITY  2 records converted from version 0 cannot be checked" in render(loaded)


def test_newer_unknown_and_foreign_documents_are_refused_by_name() -> None:
    with pytest.raises(DocumentError, match=r"version 2 is newer than this portcullis \(.*\) reads \(up to 1\)"):
        load_document({"format": "portcullis.session", "version": 2, "records": []})
    with pytest.raises(DocumentError, match="unknown session document version '1'"):
        load_document({"format": "portcullis.session", "version": "1", "records": []})
    with pytest.raises(DocumentError, match="not a session document"):
        load_document({"format": "something else", "version": 1})
    with pytest.raises(DocumentError, match="expected a JSON object"):
        load_document([1, 2])
    with pytest.raises(DocumentError, match=r"record 0 \(seq 1\): 'direction' missing"):
        load_document({"format": "portcullis.session", "version": 1, "records": [{"seq": 1, "ts_ns": 1}]})


async def test_the_timeline_pairs_requests_with_answers_decisions_approvals_and_masking(engine: Engine) -> None:
    doc = load_document(await recorded(engine))
    h = header(doc)
    assert (h.session_id, h.era, h.protocol_version) == ("s1", "session", "2025-11-25")
    assert h.client == {"name": "inspector", "version": "2.1"} and h.principal and h.principal["sub"] == "alice"
    entries = timeline(doc)
    calls = [e for e in entries if e.method == "tools/call"]
    assert [(e.target, e.outcome, e.decision, e.rule) for e in calls] == [
        ("deploy", "ok", "hold", "prod-needs-ok"),
        ("drop", "denied", "deny", "no-drop"),
        ("whoami", "ok", "allow", "eng-reads"),
    ]
    assert calls[0].approval == "released by approval apr_1" and calls[0].latency_us == 2500
    assert calls[2].masked == ["email@result.content[0].text"]
    text = render(doc)
    assert "who      alice alice@example.com (user)   groups eng" in text
    assert "client   inspector 2.1" in text
    assert any("approval_requested" in line and "apr_1" in line for line in text)
    assert any(
        "tools/call" in line and "deploy" in line and "2.5 ms" in line and "[hold by prod-needs-ok]" in line
        for line in text
    )
    assert any("denied: error -32010 Forbidden by policy" in line and "[deny by no-drop]" in line for line in text)
    assert "              masked: email@result.content[0].text" in text
    assert any("notifications/progress" in line for line in text)


def test_a_2026_request_names_its_client_in_meta() -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "agent", "version": "7"},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
    r = {
        "type": "record",
        "v": 1,
        "seq": 1,
        "ts_ns": 5,
        "direction": "c2s",
        "kind": "request",
        "flow_id": 1,
        "method": "tools/list",
        "msg_id": "1",
        "payload": json.dumps(body),
        "hash": None,
    }
    doc = load_document({"format": "portcullis.session", "version": 1, "session": None, "records": [r]})
    h = header(doc)
    assert (h.era, h.protocol_version, h.client) == ("stateless", "2026-07-28", {"name": "agent", "version": "7"})


def test_compare_ignores_the_id_meta_and_masked_paths_and_names_every_other_path() -> None:
    old = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "[email]"}],
            "structuredContent": {"rows": [{"n": 1, "tags": ["x"]}], "gone": True},
            "_meta": {"t": 1},
        },
    }
    new = {
        "jsonrpc": "2.0",
        "id": "replayed-7",
        "result": {
            "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "jane@example.com"}, {"type": "x"}],
            "structuredContent": {"rows": [{"n": 2, "tags": ["x", "y"]}], "new": {"k": 1}},
            "_meta": {"t": 2},
        },
    }
    diffs, not_compared = compare(old, new, ["result.content[1].text"])
    assert [str(d) for d in diffs] == [
        "result.content: 2 items, now 3",
        'result.content[0].text: "a" -> "b"',
        "result.structuredContent.rows[0].n: 1 -> 2",
        "result.structuredContent.rows[0].tags: 1 items, now 2",
        "result.structuredContent.gone: removed (was true)",
        'result.structuredContent.new: added {"k":1}',
    ]
    assert not_compared == ["result.content[1].text"]
    assert compare(old, {**old, "id": 99}) == ([], [])
    assert [d.change for d in diff({"a": True}, {"a": 1})] == ["changed"]  # JSON true is not 1
    assert diff({"a": 1}, {"a": 1.0}) == []  # one number type in JSON
    assert [str(d) for d in diff({"result": {}}, {"error": {"code": 1}})] == [
        "result: removed (was {})",
        'error: added {"code":1}',
    ]
