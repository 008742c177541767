"""SIGTERM during load: the calls in flight finish, new ones are refused, held calls are answered with their
approval request at once, and the process exits within the drain bound; every answered call has its record."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.conformance import fixture_server_argv
from tests.support.gateway import start_gateway, write_config
from tests.support.procs import running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

POLICY = """\
version: 1
default: allow
rules:
  - id: echo-held
    hold: {tools: [echo], approvers: [sre]}
"""
DRAIN = 8.0


async def call(http: aiohttp.ClientSession, url: str, h: dict[str, str], msg_id: int, name: str, args: Any) -> Any:
    req = {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": {"name": name, "arguments": args}}
    async with http.post(url, json=req, headers=h) as r:
        return r.status, json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))


async def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture:
        config, store = write_config(
            tmp_path,
            {"fx": {"url": fixture.ready_value}},
            limits={"drain_timeout": DRAIN},
            policy={"file": str(tmp_path / "policy.yaml")},
            approvals={"wait": 120, "poll_interval": 0.5},
        )
        gw = start_gateway(config, store)
        url = gw.url("fx")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                h = {"Content-Type": "application/json", "Accept": ACCEPT}
                async with http.post(url, json=initialize(), headers=h) as r:
                    await r.read()
                    h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
                note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                async with http.post(url, json=note, headers=h) as r:
                    assert r.status == 202
                slow = [
                    asyncio.ensure_future(call(http, url, h, i, "slow_compute", {"seconds": 2})) for i in range(1, 5)
                ]
                held = asyncio.ensure_future(call(http, url, h, 9, "echo", {"text": "needs an approval"}))

                def started() -> bool:  # the gateway has every call: the slow ones' request records are in the
                    recs = load_records(store)  # store, and the held one's approval request
                    calls = [r for r in recs if r["direction"] == "c2s" and r["method"] == "tools/call"]
                    asked = any(r["kind"] == "approval_requested" for r in recs)
                    return len(calls) == 4 and asked

                await eventually(started, 20, "the gateway to have all five calls")
                t0 = time.monotonic()
                os.kill(gw.proc.pid, signal.SIGTERM)

                status, body = await asyncio.wait_for(held, 5)  # at once, not after approvals.wait (120 s)
                assert status == 200 and body["error"]["code"] == -32011, body  # held: its approval request
                assert body["error"]["data"]["approval"].startswith("apr_"), body

                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as fresh:
                    try:  # nothing new gets in: the listener is closed, or (a moment earlier) a 503
                        status, body = await call(fresh, url, h, 20, "slow_compute", {"seconds": 0})
                    except aiohttp.ClientConnectionError:
                        pass
                    else:
                        assert status == 503 and "draining" in body["error"]["message"], body

                results = await asyncio.gather(*slow)
                assert all(s == 200 and "result" in b for s, b in results), results
            code = await asyncio.to_thread(gw.proc.popen.wait, DRAIN + 10)
            took = time.monotonic() - t0
        finally:
            gw.proc.stop(timeout=10)
    assert code == 0, gw.proc.output()
    assert took < DRAIN + 5, took
    answered = [r for r in load_records(store) if r["direction"] == "s2c" and r["method"] == "tools/call"]
    assert len(answered) == 5  # every answered call, including the held one, is in the trail
