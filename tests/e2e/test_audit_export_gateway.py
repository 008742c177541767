"""A real gateway streaming its trail to a local OTLP receiver, a local webhook and JSON-lines files, through the
receivers' failure and recovery: every record the store has arrives at each, in commit order, with the signed
checkpoints, and the JSON-lines copy verifies on its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.audit import key_files
from tests.support.conformance import fixture_server_argv
from tests.support.gateway import start_gateway, write_config
from tests.support.procs import running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.receivers import receiver
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


async def calls(http: aiohttp.ClientSession, url: str, n: int, tag: str) -> None:
    h = {"Content-Type": "application/json", "Accept": ACCEPT}
    async with http.post(url, json=initialize(), headers=h) as r:
        await r.read()
        h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
    for i in range(n):
        req = {
            "jsonrpc": "2.0",
            "id": i + 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"{tag} {i}"}},
        }
        async with http.post(url, json=req, headers=h) as r:
            assert "result" in json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))


def in_order(got: list[dict[str, Any]], chain: str) -> list[int]:
    """Record seqs of one chain, first arrival of each (at-least-once: a retried batch may repeat)."""
    seen: dict[int, None] = {}
    for g in got:
        if g.get("type") == "record" and g["chain"] == chain:
            seen.setdefault(g["seq"], None)
    return list(seen)


def metric(text: str, name: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))


async def test_the_trail_reaches_every_export_through_failure_and_recovery(tmp_path: Path) -> None:
    key, pub = key_files(tmp_path)
    jsonl = tmp_path / "export" / "audit.jsonl"
    jsonl.parent.mkdir()
    with (
        receiver("otlp") as otlp,
        receiver("webhook") as hook,
        running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture,
    ):
        config, store = write_config(
            tmp_path,
            {"fx": {"url": fixture.ready_value}},
            recording={
                "signing_key_file": str(key),
                "checkpoint_every": 10,
                "export": [
                    {"type": "jsonl", "path": str(jsonl), "max_bytes": 20000, "keep": 50},
                    {"type": "otlp", "endpoint": otlp.url, "retry_max": 0.2, "batch": 16},
                    {"type": "webhook", "url": hook.url, "retry_max": 0.2, "batch": 16},
                ],
            },
        )
        gw = start_gateway(config, store)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                await calls(http, gw.url("fx"), 10, "before")

                def caught_up() -> bool:
                    n = len([r for r in load_records(store) if r["chain"] == "gateway"])
                    return len(in_order(otlp.got, "gateway")) == n and len(in_order(hook.got, "gateway")) == n

                await eventually(caught_up, 20, "both receivers to have every record")
                otlp.stop()  # the collector goes away ...
                hook.fail_with = 503  # ... and the webhook fails
                await calls(http, gw.url("fx"), 10, "during")
                async with http.get(f"{gw.base}/metrics") as r:
                    metrics = await r.text()
                for sink in ("otlp-1", "webhook-2"):  # held back, not lost: waiting in the sinks' buffers
                    assert float(metric(metrics, f'portcullis_audit_export_pending{{sink="{sink}"}}')) > 0
                otlp.start()
                hook.fail_with = None
                await eventually(caught_up, 30, "delivery after recovery")
        finally:
            gw.proc.stop(timeout=15)

    stored = [r for r in load_records(store) if r["chain"] == "gateway"]
    seqs = [r["seq"] for r in stored]
    hashes = {r["seq"]: bytes(r["hash"]).hex() for r in stored}
    for got in (otlp.got, hook.got):
        assert in_order(got, "gateway") == seqs  # nothing lost, commit order
        arrived = [g for g in got if g.get("type") == "record" and g["chain"] == "gateway"]
        assert all(g["hash"] == hashes[g["seq"]] for g in arrived)  # the very records the store has
        assert len(arrived) - len(seqs) <= 16  # at least once: at most a re-sent batch (the receiver kept it, the
        # answer was lost as it went down), never a re-sent trail
        assert any(g["type"] == "checkpoint" for g in got)
    files = [*sorted(jsonl.parent.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:])), jsonl]
    assert len(files) > 1  # it rotated
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert [x["seq"] for x in lines if x["type"] == "record" and x["chain"] == "gateway"] == seqs  # once, in order
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "portcullis", "audit", "verify", "--public-key", str(pub)]
        + [arg for f in files for arg in ("--file", str(f))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(stored)} records" in res.stdout
