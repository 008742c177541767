"""Rug pulls and tool poisoning through a real gateway: a tool whose definition changes after first sight is hidden
and its calls refused until an admin accepts the new definition; a tool whose description hides instructions is
never trusted, not even on first sight; both are recorded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.e2e

FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"


@pytest.fixture
def faulty() -> Iterator[ManagedProcess]:
    with running_process([sys.executable, str(FAULTY), "--port", "0"], ready_timeout=30) as proc:
        yield proc


@pytest.fixture
def gateway(faulty: ManagedProcess, tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path, {"up": {"url": faulty.ready_value}}, definitions={"refresh": 0.3}) as gw:
        yield gw


class Session:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url, self.n = http, url, 0
        self.h = {"Content-Type": "application/json", "Accept": ACCEPT}

    async def rpc(self, method: str, params: dict[str, Any]) -> Any:
        self.n += 1
        body = {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}
        async with self.http.post(self.url, json=body, headers=self.h) as r:
            if "Mcp-Session-Id" in r.headers:
                self.h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
            return json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))

    async def tools(self) -> dict[str, Any]:
        return {t["name"]: t for t in (await self.rpc("tools/list", {}))["result"]["tools"]}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portcullis", *args], capture_output=True, text=True, timeout=60)


async def test_a_rug_pull_is_quarantined_until_accepted_and_a_poisoned_tool_is_never_trusted(
    gateway: RunningGateway, faulty: ManagedProcess
) -> None:
    base = faulty.ready_value.removesuffix("/mcp")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        s = Session(http, gateway.url("up"))
        init = initialize()
        await s.rpc(init["method"], init["params"])
        assert "ok" in await s.tools()  # first sight: trusted
        assert "result" in await s.rpc("tools/call", {"name": "ok", "arguments": {}})

        async with http.post(f"{base}/rugpull"):
            pass
        async with http.post(f"{base}/poison"):
            pass
        listed = await s.tools()
        assert "ok" not in listed and "helper" not in listed and "garbage" in listed  # the rest is untouched
        refused = await s.rpc("tools/call", {"name": "ok", "arguments": {}})
        assert (
            refused["error"]["code"] == -32012
            and "portcullis definitions accept up tool ok" in refused["error"]["message"]
        )
        refused = await s.rpc("tools/call", {"name": "helper", "arguments": {}})
        assert refused["error"]["code"] == -32012 and "hidden-tags" in refused["error"]["message"]

        kinds = {r["kind"]: r["detail"] for r in load_records(gateway.store) if r["kind"].startswith("definition_")}
        assert "definition_changed" in kinds and "definition_suspicious" in kinds
        assert (
            "exfiltrate-secrets" in kinds["definition_suspicious"]
            and "hide-from-user" in kinds["definition_suspicious"]
        )

        async def stored() -> bool:  # the gateway wrote what it saw
            out = await asyncio.to_thread(cli, "definitions", "list", "--config", str(gateway.config_path), "--changed")
            return "CHANGED" in out.stdout and "suspicious" in out.stdout

        await eventually_async(stored, 10, "the sightings in the store")
        accepted = await asyncio.to_thread(
            cli, "definitions", "accept", "up", "tool", "ok", "--config", str(gateway.config_path), "--by", "admin-ann"
        )
        assert accepted.returncode == 0, accepted.stderr

        async def back() -> bool:
            return "ok" in await s.tools()

        await eventually_async(back, 10, "the accepted definition to be taken up")
        assert "result" in await s.rpc("tools/call", {"name": "ok", "arguments": {}})
        assert "helper" not in await s.tools()  # still quarantined: nobody accepted it
    trail = [r for r in load_records(gateway.store) if r["kind"] == "definition_accepted"]
    assert trail and "admin-ann" in trail[0]["detail"]
