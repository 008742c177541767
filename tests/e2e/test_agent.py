"""The agent tunnel end to end: a real gateway, real `portcullis agent` processes, the conformance fixture behind
them; clients speak only to the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.agents import connected, create_token, start_agent
from tests.support.conformance import fixture_server_argv
from tests.support.gateway import RunningGateway, start_gateway, write_config
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def fixture() -> Iterator[ManagedProcess]:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as proc:
        yield proc


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    config, store = write_config(tmp_path, {"fx": {"via": "agent", "era": "session"}, "other": {"via": "agent"}})
    gw = start_gateway(config, store)
    try:
        yield gw
    finally:
        gw.proc.stop(timeout=10)


class Client:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.h = {"Content-Type": "application/json", "Accept": ACCEPT}
        self.n = 0

    async def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.http.post(self.url, json=body, headers=self.h) as r:
            raw = final_message(await r.read(), r.headers.get("Content-Type", ""))
            if "Mcp-Session-Id" in r.headers:
                self.h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
            return r.status, json.loads(raw) if raw else None

    async def open(self) -> None:
        status, body = await self.post(initialize())
        assert status == 200 and "result" in body, body
        assert (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}))[0] == 202

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        self.n += 1
        return (
            await self.post(
                {"jsonrpc": "2.0", "id": self.n, "method": "tools/call", "params": {"name": tool, "arguments": args}}
            )
        )[1]


async def test_calls_reach_the_server_only_through_the_agent(
    gateway: RunningGateway, fixture: ManagedProcess, tmp_path: Path
) -> None:
    token = create_token(gateway.config_path, "edge-1", ["fx"])
    agent = start_agent(tmp_path, gateway.base, {"fx": {"url": fixture.ready_value}}, token)
    try:
        await eventually(lambda: connected(gateway.store, "edge-1"), 20, "the agent to connect")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            c = Client(http, gateway.url("fx"))
            try:
                await c.open()
            except AssertionError:
                print(agent.output())
                raise
            body = await c.call("echo", {"text": "through the tunnel"})
            assert body["result"]["content"][0]["text"].endswith("through the tunnel"), body
            streamed = await c.call("slow_progress", {"steps": 3, "delay_ms": 10})
            assert "result" in streamed, streamed
            async with http.get(f"{gateway.base}/metrics") as r:
                metrics = await r.text()
        assert 'portcullis_agent_connections{agent="edge-1"} 1.0' in metrics
        assert 'portcullis_agent_streams_total{agent="edge-1"}' in metrics
        listing = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "portcullis", "agents", "list", "--config", str(gateway.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0 and "edge-1" in listing.stdout and "connected" in listing.stdout, listing
    finally:
        agent.stop(timeout=10)
    kinds = [r["kind"] for r in load_records(gateway.store)]
    assert "agent_connected" in kinds and "agent_token_created" in kinds


async def test_forged_revoked_and_overreaching_tokens_are_refused(
    gateway: RunningGateway, fixture: ManagedProcess, tmp_path: Path
) -> None:
    forged = "pca_0123456789ab_" + "x" * 43
    a = start_agent(tmp_path, gateway.base, {"fx": {"url": fixture.ready_value}}, forged)
    try:
        await eventually(lambda: any(r["kind"] == "agent_refused" for r in load_records(gateway.store)), 20, "refusal")
        assert not connected(gateway.store)
    finally:
        a.stop(timeout=10)

    only_other = create_token(gateway.config_path, "edge-2", ["other"])  # may not announce fx
    (tmp_path / "b").mkdir()
    b = start_agent(tmp_path / "b", gateway.base, {"fx": {"url": fixture.ready_value}}, only_other)
    try:
        await eventually(
            lambda: any("may not serve ['fx']" in (r["detail"] or "") for r in load_records(gateway.store)),
            20,
            "refusal",
        )
        assert not connected(gateway.store)
    finally:
        b.stop(timeout=10)


async def test_a_dying_agent_fails_calls_fast_and_a_new_one_is_used_without_a_gateway_restart(
    gateway: RunningGateway, fixture: ManagedProcess, tmp_path: Path
) -> None:
    token = create_token(gateway.config_path, "edge-1", ["fx"])
    servers = {"fx": {"url": fixture.ready_value}}
    agent = start_agent(tmp_path, gateway.base, servers, token)
    await eventually(lambda: connected(gateway.store, "edge-1"), 20, "the agent to connect")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        c = Client(http, gateway.url("fx"))
        await c.open()
        call = asyncio.ensure_future(c.call("slow_compute", {"seconds": 20}))
        await eventually(
            lambda: any(r["method"] == "tools/call" and r["direction"] == "c2s" for r in load_records(gateway.store)),
            20,
            "the call to be under way",
        )
        t0 = time.monotonic()
        os.kill(agent.pid, signal.SIGKILL)
        body = await asyncio.wait_for(call, 10)
        took = time.monotonic() - t0
        assert body["error"]["code"] == -32001 and "Tunnel" in body["error"]["message"], body
        assert took < 5, took
        agent.stop(timeout=5)

        again = start_agent(tmp_path, gateway.base, servers, token)  # the same gateway, never restarted
        try:
            await eventually(lambda: connected(gateway.store, "edge-1"), 20, "the new agent to connect")
            body = await c.call("echo", {"text": "still here"})  # the same session, the same upstream behind
            assert "result" in body, body
        finally:
            again.stop(timeout=10)


async def test_two_agents_share_new_sessions_and_fail_over(
    gateway: RunningGateway, fixture: ManagedProcess, tmp_path: Path
) -> None:
    servers = {"fx": {"url": fixture.ready_value}}
    agents = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        agents.append(
            start_agent(tmp_path / name, gateway.base, servers, create_token(gateway.config_path, name, ["fx"]))
        )
    try:
        await eventually(lambda: len(connected(gateway.store)) == 2, 20, "both agents to connect")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            clients = [Client(http, gateway.url("fx")) for _ in range(6)]
            for c in clients:
                await c.open()
                assert "result" in await c.call("echo", {"text": "x"})
            os.kill(agents[0].pid, signal.SIGKILL)  # a fails: everyone goes on through b
            await eventually(lambda: len(connected(gateway.store)) == 1, 20, "the gateway to notice")
            for c in clients:
                assert "result" in await c.call("echo", {"text": "after the failover"})
        agents[1].stop(timeout=10)
        await eventually(lambda: not connected(gateway.store), 20, "b to disconnect")
    finally:
        for a in agents:
            a.stop(timeout=5)
    rows = {r["name"]: r for r in _all_connections(gateway.store)}
    assert rows["a"]["streams"] > 0 and rows["b"]["streams"] > 0  # both carried new sessions


def _all_connections(store: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from portcullis.store.db import make_engine
    from portcullis.store.schema import agent_connections

    engine = make_engine(store)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(agent_connections)).mappings()]
    finally:
        engine.dispose()


async def test_a_revoked_token_is_refused_at_the_next_connect(
    gateway: RunningGateway, fixture: ManagedProcess, tmp_path: Path
) -> None:
    token = create_token(gateway.config_path, "edge-r", ["fx"])
    agent = start_agent(tmp_path, gateway.base, {"fx": {"url": fixture.ready_value}}, token)
    await eventually(lambda: connected(gateway.store, "edge-r"), 20, "the agent to connect")
    tid = token.split("_")[1]
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "portcullis", "agents", "revoke", tid, "--config", str(gateway.config_path)],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    os.kill(agent.pid, signal.SIGKILL)
    agent.stop(timeout=5)
    (tmp_path / "again").mkdir()
    again = start_agent(tmp_path / "again", gateway.base, {"fx": {"url": fixture.ready_value}}, token)
    try:
        await eventually(
            lambda: sum(r["kind"] == "agent_refused" for r in load_records(gateway.store)) >= 1, 20, "the refusal"
        )
        assert not connected(gateway.store, "edge-r")
    finally:
        again.stop(timeout=5)


SESSIONS = 64
BOUND_S = 5.0  # every streaming call of the 64 finishes within this, whatever the slow stream does


async def test_64_streaming_sessions_over_one_agent_and_a_slow_stream_holds_up_nobody(
    gateway: RunningGateway, fixture: ManagedProcess, tmp_path: Path
) -> None:
    """64 sessions each stream progress notifications through one agent connection at once, while another session
    streams slowly (3 s between events) and a third pulls a 4 MB result: each of the 64 finishes within
    BOUND_S (alone, a call takes ~0.1 s: 5 steps 20 ms apart)."""
    token = create_token(gateway.config_path, "edge-64", ["fx"])
    agent = start_agent(tmp_path, gateway.base, {"fx": {"url": fixture.ready_value}}, token)
    try:
        await eventually(lambda: connected(gateway.store, "edge-64"), 20, "the agent to connect")
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=0)
        ) as http:
            slow, big = Client(http, gateway.url("fx")), Client(http, gateway.url("fx"))
            await slow.open()
            await big.open()
            held_up = asyncio.ensure_future(slow.call("slow_progress", {"steps": 3, "delay_ms": 3000}))
            bulk = asyncio.ensure_future(big.call("big_text", {"size": 4_000_000}))
            clients = [Client(http, gateway.url("fx")) for _ in range(SESSIONS)]
            await asyncio.gather(*(c.open() for c in clients))

            async def streamed(i: int, c: Client) -> float:
                t0 = time.monotonic()
                c.n += 1
                req = {
                    "jsonrpc": "2.0",
                    "id": c.n,
                    "method": "tools/call",
                    "params": {
                        "name": "slow_progress",
                        "arguments": {"steps": 5, "delay_ms": 20},
                        "_meta": {"progressToken": f"p{i}"},
                    },
                }
                async with http.post(c.url, json=req, headers=c.h) as r:
                    raw = await r.read()
                events = [ln for ln in raw.split(b"\n") if ln.startswith(b"data: ") and ln[6:].strip()]
                assert len(events) == 6 and b"completed 5 steps" in events[-1], raw[-300:]  # 5 progress + result
                return time.monotonic() - t0

            took = await asyncio.gather(*(streamed(i, c) for i, c in enumerate(clients)))
            assert max(took) < BOUND_S, sorted(took)[-5:]
            assert not held_up.done()  # the slow stream was still going all along
            assert "result" in await asyncio.wait_for(held_up, 20)
            assert len((await asyncio.wait_for(bulk, 30))["result"]["content"][0]["text"]) == 4_000_000
    finally:
        agent.stop(timeout=10)


async def test_a_stdio_server_started_by_the_agent_per_session(tmp_path: Path) -> None:
    """A stdio server the agent starts itself, one process per session, with an environment of the agent's; the
    gateway only knows `via: agent, transport: stdio`."""
    config, store = write_config(tmp_path, {"demo": {"via": "agent", "transport": "stdio"}})
    gw = start_gateway(config, store)
    try:
        token = create_token(config, "edge-stdio", ["demo"])
        servers = {"demo": {"command": [sys.executable, "-m", "portcullis.demo.server"], "env": {"DEMO_X": "1"}}}
        agent = start_agent(tmp_path, gw.base, servers, token)
        try:
            await eventually(lambda: connected(store, "edge-stdio"), 20, "the agent to connect")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                first, second = Client(http, gw.url("demo")), Client(http, gw.url("demo"))
                await first.open()
                await second.open()
                assert first.h["Mcp-Session-Id"] != second.h["Mcp-Session-Id"]
                for c in (first, second):
                    body = await c.call("echo", {"text": "from a child of the agent"})
                    assert body["result"]["content"][0]["text"] == "from a child of the agent", body
                async with http.delete(first.url, headers=first.h) as r:
                    assert r.status in (200, 204)
                body = await second.call("echo", {"text": "the other session lives on"})
                assert "result" in body, body
        finally:
            agent.stop(timeout=10)
    finally:
        gw.proc.stop(timeout=10)


async def test_agents_come_back_by_themselves_after_a_gateway_restart(fixture: ManagedProcess, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config, store = write_config(tmp_path, {"fx": {"via": "agent", "era": "session"}})
    cfg = json.loads(config.read_text())
    config.write_text(json.dumps({**cfg, "listen": f"127.0.0.1:{port}"}))
    gw = start_gateway(config, store)
    token = create_token(config, "edge-restart", ["fx"])
    agent = start_agent(tmp_path, gw.base, {"fx": {"url": fixture.ready_value}}, token)
    try:
        await eventually(lambda: connected(store, "edge-restart"), 20, "the agent to connect")
        gw.proc.stop(timeout=15)  # the gateway goes away (clean shutdown: the agent's connection is closed)
        gw = start_gateway(config, store)  # and comes back on the same address
        await eventually(lambda: connected(store, "edge-restart"), 20, "the agent to reconnect by itself")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            c = Client(http, gw.url("fx"))
            await c.open()
            assert "result" in await c.call("echo", {"text": "after the restart"})
    finally:
        agent.stop(timeout=10)
        gw.proc.stop(timeout=10)
    reconnects = [r for r in load_records(store) if r["kind"] == "agent_connected"]
    assert len(reconnects) == 2
