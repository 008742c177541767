"""The session document: export, load, integrity, the converter from version 0, refusal of newer versions, and the
replay's structural diff."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import Engine

from portcullis.audit.document import DocumentError, export_session, load_document
from portcullis.audit.replay import diff
from portcullis.pipeline.record import event_record
from portcullis.store.writer import SessionOpen, StoreWriter


async def recorded(engine: Engine) -> dict[str, Any]:
    w = StoreWriter(engine)
    w.start(asyncio.get_running_loop())
    try:
        await w.write([SessionOpen("s1", "srv", "session", "2025-11-25", None, None, None, 1)])
        for i in range(3):
            await w.write([event_record("srv", "s1", "test", f"r{i}", payload=b'{"i": %d}' % i)])
    finally:
        w.close()
    return export_session(engine, "s1")


async def test_round_trip_and_a_changed_record_is_caught(engine: Engine) -> None:
    doc = await recorded(engine)
    loaded = load_document(json.loads(json.dumps(doc)))
    assert loaded.version_read == 1 and not loaded.problems and len(loaded.records) == 3
    doc["records"][1]["payload"] = '{"i": 99}'
    assert load_document(doc).problems == [
        f"seq {doc['records'][1]['seq']} altered (its hash does not match its fields)"
    ]


async def test_version_0_is_converted_and_newer_versions_are_refused(engine: Engine) -> None:
    doc = await recorded(engine)
    v0 = {
        "session": doc["session"],
        "records": [{**r, "payload": json.loads(r["payload"]), "sealed": False} for r in doc["records"]],
    }
    loaded = load_document(v0)
    assert loaded.version_read == 0 and loaded.unverifiable == 3 and loaded.records[0]["payload"] == '{"i":0}'
    with pytest.raises(DocumentError, match="version 2 is newer than this portcullis reads"):
        load_document({**doc, "version": 2})
    with pytest.raises(DocumentError, match="not a session document"):
        load_document({"format": "something else", "version": 1})


def test_diff_reports_paths_and_ignores_meta_and_masked_paths() -> None:
    old = {"result": {"content": [{"text": "a"}, {"text": "[email]"}], "_meta": {"t": 1}, "gone": 1}}
    new = {"result": {"content": [{"text": "b"}, {"text": "jane@example.com"}, {"text": "c"}], "_meta": {"t": 2}}}
    assert diff(old, new, frozenset({"result.content[1].text"})) == [
        "result.content: 2 items, now 3",
        'result.content[0].text: "a" -> "b"',
        "result.gone: removed",
    ]
