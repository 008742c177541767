"""The store holds every message of every session, in order, byte for byte what the client sent and received."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.conformance import fixture_server_argv
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.records import load_records

pytestmark = pytest.mark.e2e

ACCEPT = "application/json, text/event-stream"


@pytest.fixture(scope="module")
def fixture() -> Iterator[ManagedProcess]:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as p:
        yield p


@pytest.fixture(scope="module")
def gateway(fixture: ManagedProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw"), {"fixture": {"url": fixture.ready_value}}) as gw:
        yield gw


class LoggingClient:
    """A raw Streamable HTTP client that keeps every message it sends and receives, as bytes, in order."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.sid: str | None = None
        self.log: list[tuple[str, bytes]] = []

    async def send(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": ACCEPT}
        if self.sid is not None:
            headers |= {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": "2025-11-25"}
        self.log.append(("c2s", raw))
        got: list[dict[str, Any]] = []
        async with self.http.post(self.url, data=raw, headers=headers) as r:
            self.sid = self.sid or r.headers.get("Mcp-Session-Id")
            if r.headers.get("Content-Type", "").startswith("text/event-stream"):
                async for line in r.content:
                    if line.startswith(b"data: ") and line[6:].strip():
                        msg = line[6:].rstrip(b"\r\n")
                        self.log.append(("s2c", msg))
                        got.append(json.loads(msg))
            else:
                data = await r.read()
                if data:
                    self.log.append(("s2c", data))
                    got.append(json.loads(data))
        return got


def req(mid: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": mid, "method": method, "params": params or {}}


async def conversation(http: aiohttp.ClientSession, url: str, n: int) -> LoggingClient:
    c = LoggingClient(http, url)
    await c.send(
        req(
            1,
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": f"logger-{n}", "version": "1"},
            },
        )
    )
    await c.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    await c.send(req(2, "tools/list"))
    await c.send(req(3, "tools/call", {"name": "echo", "arguments": {"text": f"conversation {n}"}}))
    await c.send(
        req(4, "tools/call", {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": f"p{n}"}})
    )
    await c.send(req(5, "resources/read", {"uri": "test://static-text"}))
    await c.send(req(6, "prompts/get", {"name": "test_simple_prompt"}))
    return c


async def test_store_matches_what_clients_sent_and_received(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        clients = await asyncio.gather(*(conversation(http, gateway.url("fixture"), n) for n in range(6)))
    recs = load_records(gateway.store)
    for c in clients:
        assert c.sid is not None
        stored = [
            (r["direction"], bytes(r["payload"])) for r in recs if r["session_id"] == c.sid and r["direction"] != "gw"
        ]
        assert stored == c.log, f"session {c.sid}: the store differs from what the client saw"
        # progress notifications were part of it
        assert sum(1 for d, m in c.log if d == "s2c" and b"notifications/progress" in m) == 3


async def test_a_dropped_stream_resumes_with_last_event_id(gateway: RunningGateway) -> None:
    """Session era: a disconnect is not a cancellation. The client comes back with Last-Event-ID and gets the rest
    of the stream, final response included, from the gateway's buffer."""
    url = gateway.url("fixture")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        c = LoggingClient(http, url)
        await c.send(
            req(
                1,
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "resumer", "version": "1"},
                },
            )
        )
        await c.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert c.sid is not None
        h = {"Mcp-Session-Id": c.sid, "MCP-Protocol-Version": "2025-11-25"}
        call = req(
            2,
            "tools/call",
            {
                "name": "slow_progress",
                "arguments": {"steps": 5, "delay_ms": 100},
                "_meta": {"progressToken": "resume-me"},
            },
        )
        last_id = None
        first: list[dict[str, Any]] = []
        async with http.post(url, json=call, headers={"Content-Type": "application/json", "Accept": ACCEPT, **h}) as r:
            async for line in r.content:
                if line.startswith(b"id: "):
                    last_id = line[4:].strip().decode()
                if line.startswith(b"data: ") and line[6:].strip():
                    first.append(json.loads(line[6:]))
                    break  # one real event, then the connection drops
        assert last_id is not None and first[0]["method"] == "notifications/progress"
        rest: list[dict[str, Any]] = []
        async with http.get(url, headers={"Accept": "text/event-stream", "Last-Event-ID": last_id, **h}) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data: ") and line[6:].strip():
                    rest.append(json.loads(line[6:]))
    progress = [m["params"]["progress"] for m in first + rest if m.get("method") == "notifications/progress"]
    assert progress == [1, 2, 3, 4, 5]
    assert rest[-1]["id"] == 2 and rest[-1]["result"]["content"][0]["text"] == "completed 5 steps"
