"""A session recorded through the gateway, exported, and replayed: as a timeline; against the same server (no
differences, the writing tool skipped, the call the policy denied never sent); against a changed server (the
difference shown at its path, exit 1); with --force (the writing tool replayed too); masked values never count as
differences. The 2026-07-28 era replays statelessly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from portcullis.audit.document import load_document, make_document
from portcullis.audit.replay import replay_against
from tests.support.gateway import running_gateway
from tests.support.procs import async_running_process
from tests.support.records import load_records

pytestmark = pytest.mark.e2e

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "replay_server.py"
POLICY = """\
version: 1
default: allow
rules:
  - id: initech-stays
    deny: {tools: [suspend], when: 'arguments.account == "initech"'}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portcullis", *args], capture_output=True, text=True, timeout=120)


async def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, "sessions", "replay", *args)


def lines_with(text: str, *parts: str) -> list[str]:
    return [line for line in text.splitlines() if all(p in line for p in parts)]


async def record_a_session(tmp_path: Path, server_url: str) -> tuple[str, str]:
    """A session of the SDK client through the gateway (e-mails pseudonymised, one call denied): (id, config)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = {"file": str(tmp_path / "policy.yaml")}
    masking = {"modes": {"email": "pseudonym"}}
    with running_gateway(tmp_path, {"accounts": {"url": server_url}}, policy=policy, masking=masking) as gw:
        async with (
            httpx2.AsyncClient(timeout=20) as hc,
            Client(streamable_http_client(gw.url("accounts"), http_client=hc), mode="legacy") as c,
        ):
            await c.list_tools()
            looked = await c.call_tool("lookup", {"account": "acme"})
            assert "plan team, active" in looked.content[0].text  # type: ignore[union-attr]
            profile = await c.call_tool("profile", {"account": "acme"})
            assert "jane.doe" not in str(profile.structured_content)  # masked on the way to the client
            await c.read_resource("replay://plans")
            await c.call_tool("suspend", {"account": "globex"})  # a write
            with pytest.raises(MCPError, match="initech-stays"):
                await c.call_tool("suspend", {"account": "initech"})  # denied by the policy
        recs = load_records(gw.store)
    sid = next(r["session_id"] for r in recs if r["kind"] == "session_open")
    masked = [r for r in recs if r["session_id"] == sid and r["masked"]]
    assert masked and "email" in masked[0]["masked"], "the profile answer must be recorded masked"
    return sid, str(gw.config_path)


async def test_a_recorded_session_replays_against_the_same_and_a_changed_server(tmp_path: Path) -> None:
    async with async_running_process([sys.executable, str(SERVER), "--port", "0"], ready_timeout=30) as server:
        sid, config = await record_a_session(tmp_path, server.ready_value)
        doc = tmp_path / "session.json"
        res = await asyncio.to_thread(cli, "sessions", "export", sid, "--config", config, "-o", str(doc))
        assert res.returncode == 0, res.stderr
        exported: dict[str, Any] = json.loads(doc.read_text())
        assert exported["format"] == "portcullis.session" and exported["version"] == 1
        assert exported["session"]["id"] == sid and exported["records"][0]["hash"]

        # the timeline, from the file and from the store alike
        shown = await replay("--file", str(doc))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert lines_with(shown.stdout, "client", "mcp") and lines_with(shown.stdout, "who", "anonymous")
        assert lines_with(shown.stdout, "tools/call", "lookup", "ms", "ok", "[allow: the policy's default]")
        assert lines_with(shown.stdout, "tools/call", "suspend", "denied: error", "[deny by initech-stays]")
        assert lines_with(shown.stdout, "masked:", "email@result.structuredContent.contact")
        from_store = await replay(sid, "--config", config)
        assert from_store.returncode == 0 and from_store.stdout == shown.stdout

        same = await replay("--file", str(doc), "--against", server.ready_value)
        assert same.returncode == 0, same.stdout + same.stderr
        out = same.stdout
        assert "no differences" in out
        assert lines_with(out, "suspend", "SKIPPED", "not read-only; use --force")  # globex: a write
        assert lines_with(out, "suspend", "SKIPPED", "not replayed: denied by rule initech-stays at the time")
        assert lines_with(out, "lookup", "SAME") and lines_with(out, "resources/read", "replay://plans", "SAME")
        assert lines_with(out, "initialize", "SAME") and lines_with(out, "profile", "SAME")
        assert lines_with(out, "masked, not compared", "result.structuredContent.contact")

    async with async_running_process([sys.executable, str(SERVER), "--port", "0", "--changed"]) as changed:
        res = await replay("--file", str(doc), "--against", changed.ready_value)
        assert res.returncode == 1, res.stdout + res.stderr
        assert 'result.content[0].text: "acme: plan team, active" -> "acme: plan enterprise, suspended"' in res.stdout
        assert lines_with(res.stdout, "profile", "SAME")  # its e-mail changed too, but it is masked in the record
        forced = await replay("--file", str(doc), "--against", changed.ready_value, "--force", "--json")
        assert forced.returncode == 1, forced.stdout + forced.stderr
        report = json.loads(forced.stdout)
        verdicts = {(o["method"], o["target"], o["why"][:12]): o["verdict"] for o in report["results"]}
        assert verdicts[("tools/call", "suspend", "")] == "same"  # globex: replayed under --force
        assert verdicts[("tools/call", "suspend", "not replayed")] == "skipped"  # denied at the time: never
        lookup = next(o for o in report["results"] if o["target"] == "lookup")
        assert [d["path"] for d in lookup["diffs"]] == ["result.content[0].text"]

    down = await replay("--file", str(doc), "--against", changed.ready_value)
    assert down.returncode == 2 and "cannot reach" in down.stderr


async def test_unreadable_documents_exit_2(tmp_path: Path) -> None:
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": "portcullis.session", "version": 9, "records": []}))
    res = await replay("--file", str(newer))
    assert res.returncode == 2 and "version 9 is newer than this portcullis" in res.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert (await replay("--file", str(garbage))).returncode == 2


async def test_a_2026_era_recording_replays_statelessly(tmp_path: Path) -> None:
    async with async_running_process([sys.executable, str(SERVER), "--port", "0"], ready_timeout=30) as server:
        with running_gateway(tmp_path, {"accounts": {"url": server.ready_value}}) as gw:
            async with (
                httpx2.AsyncClient(timeout=20) as hc,
                Client(streamable_http_client(gw.url("accounts"), http_client=hc), mode="2026-07-28") as c,
            ):
                await c.list_tools()
                await c.call_tool("lookup", {"account": "acme"})
                await c.call_tool("suspend", {"account": "globex"})
            recs = [r for r in load_records(gw.store) if r["direction"] in ("c2s", "s2c")]
        # a stateless client has no session: the document is made from its records directly
        doc = load_document(json.loads(json.dumps(make_document(None, recs))))
        assert not doc.problems
        report = await replay_against(doc, server.ready_value)
        assert report.era == "stateless" and report.exit_code == 0, report.lines()
        verdicts = {(r.method, r.target): r.verdict for r in report.results}
        assert verdicts[("tools/call", "lookup")] == "same"
        assert verdicts[("tools/call", "suspend")] == "skipped"
