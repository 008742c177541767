"""Kill -9 of the gateway while 8 clients are calling: every response a client received has its record."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update

from portcullis.store.db import make_engine
from portcullis.store.schema import sessions
from portcullis.store.verify import verify
from tests.support.conformance import fixture_server_argv
from tests.support.gateway import start_gateway, write_config
from tests.support.procs import running_process
from tests.support.raw import ACCEPT, final_message
from tests.support.records import load_records

pytestmark = pytest.mark.e2e

CLIENTS = 8


async def client(url: str, n: int, got: list[tuple[str, bytes]], stop: asyncio.Event) -> None:
    base = {"Content-Type": "application/json", "Accept": ACCEPT}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": f"c{n}", "version": "1"},
            },
        }
        async with http.post(url, json=init, headers=base) as r:
            sid = r.headers["Mcp-Session-Id"]
            await r.read()
        h = {**base, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h) as r:
            assert r.status == 202
        i = 0
        while not stop.is_set():
            i += 1
            req = {
                "jsonrpc": "2.0",
                "id": i,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": f"client {n} call {i}"}},
            }
            try:
                async with http.post(url, json=req, headers=h) as r:
                    raw = await r.read()
                    ctype = r.headers.get("Content-Type", "")
            except (TimeoutError, aiohttp.ClientError):
                return  # the gateway died under us
            if r.status != 200:
                return
            try:
                msg = final_message(raw, ctype)
                json.loads(msg)
            except (IndexError, ValueError):
                return  # a response cut by the kill is no received response
            got.append((sid, msg))


async def test_kill_9_loses_no_received_response(tmp_path: Path) -> None:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture:
        config, store = write_config(tmp_path, {"fixture": {"url": fixture.ready_value}})
        gw = start_gateway(config, store)
        got: list[tuple[str, bytes]] = []
        stop = asyncio.Event()
        try:
            tasks = [asyncio.ensure_future(client(gw.url("fixture"), n, got, stop)) for n in range(CLIENTS)]
            # let the traffic run until a good number of responses arrived (bounded), then kill -9 mid-flight
            for _ in range(400):
                if len(got) >= 200:
                    break
                await asyncio.sleep(0.025)
            os.kill(gw.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            stop.set()
            gw.proc.stop(timeout=5)
        assert len(got) >= 50, f"too little traffic before the kill: {len(got)}"

        # the gateway starts again on the same store
        gw2 = start_gateway(config, store)
        gw2.proc.stop(timeout=10)

    recs = load_records(store)
    recorded: set[tuple[Any, bytes]] = {
        (r["session_id"], bytes(r["payload"])) for r in recs if r["direction"] == "s2c" and r["payload"] is not None
    }
    missing = [(sid, m[:80]) for sid, m in got if (sid, m) not in recorded]
    assert not missing, f"{len(missing)} of {len(got)} received responses have no record: {missing[:5]}"
    # and the audit chain over everything that was written, across the kill and the restart, verifies
    engine = make_engine(store)
    try:
        verdict = verify(engine)
        assert verdict.ok and verdict.records == len(recs) and verdict.unchained == 0, verdict.problems
        # the sessions table is checked against the copies of its rows in the chained open records
        with engine.begin() as conn:
            sid = conn.execute(select(sessions.c.id).limit(1)).scalar_one()
            conn.execute(update(sessions).where(sessions.c.id == sid).values(client_info='{"name": "forged"}'))
        assert f"session {sid}: the sessions table differs from its chained open record" in verify(engine).problems
    finally:
        engine.dispose()
