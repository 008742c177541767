"""The agent tunnel end to end: a real gateway, real `portcullis agent` processes, the conformance fixture behind
them; clients speak only to the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
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
