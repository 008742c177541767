"""A session recorded through the gateway, exported, and replayed: as a timeline; against the same server (no
differences, the writing tool skipped); against a changed server (the difference shown at its path); with --force
(the writing tool replayed too); masked values never count as differences."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import running_gateway
from tests.support.procs import running_process
from tests.support.records import load_records

pytestmark = pytest.mark.e2e

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "replay_server.py"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portcullis", *args], capture_output=True, text=True, timeout=120)


async def test_a_recorded_session_replays_against_the_same_and_a_changed_server(tmp_path: Path) -> None:
    with running_process([sys.executable, str(SERVER), "--port", "0"], ready_timeout=30) as server:
        with running_gateway(tmp_path, {"accounts": {"url": server.ready_value}}) as gw:
            async with (
                httpx2.AsyncClient(timeout=20) as hc,
                Client(streamable_http_client(gw.url("accounts"), http_client=hc), mode="legacy") as c,
            ):
                await c.list_tools()
                assert "plan team, active" in (await c.call_tool("lookup", {"account": "acme"})).content[0].text  # type: ignore[union-attr]
                await c.call_tool("profile", {"account": "acme"})  # its e-mail is masked in the record
                await c.call_tool("suspend", {"account": "globex"})
            sid = next(r["session_id"] for r in load_records(gw.store) if r["kind"] == "session_open")
        config = str(gw.config_path)
        doc = tmp_path / "session.json"
        res = await asyncio.to_thread(cli, "sessions", "export", sid, "--config", config, "-o", str(doc))
        assert res.returncode == 0, res.stderr
        exported: dict[str, Any] = json.loads(doc.read_text())
        assert exported["format"] == "portcullis.session" and exported["version"] == 1

        shown = await asyncio.to_thread(cli, "sessions", "replay", "--file", str(doc))
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "client  mcp" in shown.stdout and "tools/call" in shown.stdout and "masked email" in shown.stdout

        same = await asyncio.to_thread(cli, "sessions", "replay", "--file", str(doc), "--against", server.ready_value)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "no differences" in same.stdout and "not read-only; use --force" in same.stdout  # suspend skipped

    with running_process([sys.executable, str(SERVER), "--port", "0", "--changed"], ready_timeout=30) as changed:
        res = await asyncio.to_thread(cli, "sessions", "replay", "--file", str(doc), "--against", changed.ready_value)
        assert res.returncode == 1, res.stdout + res.stderr
        assert 'result.content[0].text: "acme: plan team, active" -> "acme: plan enterprise, suspended"' in res.stdout
        forced = await asyncio.to_thread(
            cli, "sessions", "replay", "--file", str(doc), "--against", changed.ready_value, "--force", "--json"
        )
        report = json.loads(forced.stdout)
        verdicts = {(o["method"], o["target"]): o["verdict"] for o in report["outcomes"]}
        assert verdicts[("tools/call", "suspend")] == "same"  # replayed under --force
        assert verdicts[("tools/call", "profile")] == "same"  # the masked e-mail is not a difference

    down = await asyncio.to_thread(cli, "sessions", "replay", "--file", str(doc), "--against", "http://127.0.0.1:9/mcp")
    assert down.returncode == 2 and "cannot reach" in down.stderr
