"""Rate limits and concurrency caps through a real gateway with real principals: over the limit a request gets
HTTP 429 with Retry-After and a JSON-RPC error naming the limit, recorded; another principal is not affected;
after Retry-After the caller is served again; a second call in flight beyond the concurrency cap is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records
from tests.support.waiting import eventually, eventually_async

pytestmark = [pytest.mark.e2e, pytest.mark.node]

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture
def gateway(op: OidcProvider, fixture: ManagedProcess, tmp_path: Path) -> Iterator[RunningGateway]:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    rate = {"principal": {"per_second": 1, "burst": 3, "concurrent": 1}}
    with running_gateway(tmp_path, {"fx": {"url": fixture.ready_value}}, auth=auth, limits={"rate": rate}) as gw:
        yield gw


async def call(http: aiohttp.ClientSession, gw: RunningGateway, token: str, tool: str, args: dict[str, Any]) -> Any:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": META},
    }
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    h |= {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
    async with http.post(gw.url("fx"), json=body, headers=h) as r:
        return (
            r.status,
            r.headers.get("Retry-After"),
            json.loads(final_message(await r.read(), r.headers.get("Content-Type", ""))),
        )


async def test_limits_refuse_with_429_and_let_through_again(gateway: RunningGateway, op: OidcProvider) -> None:
    alice = await asyncio.to_thread(op.user_token, "alice", gateway.url("fx"))
    bob = await asyncio.to_thread(op.user_token, "bob", gateway.url("fx"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for _ in range(3):  # the burst
            status, _, body = await call(http, gateway, alice, "echo", {"text": "hi"})
            assert status == 200 and "result" in body, body
        status, retry, body = await call(http, gateway, alice, "echo", {"text": "one too many"})
        assert status == 429 and retry is not None and int(retry) >= 1
        assert body["error"]["code"] == -32013 and body["error"]["data"]["limit"].startswith("principal rate")
        status, _, body = await call(http, gateway, bob, "echo", {"text": "bob is someone else"})
        assert status == 200 and "result" in body

        async def served_again() -> bool:
            return (await call(http, gateway, alice, "echo", {"text": "later"}))[0] == 200

        await eventually_async(served_again, 10, "alice to be served after Retry-After")

        slow = asyncio.ensure_future(call(http, gateway, bob, "slow_compute", {"seconds": 2}))
        await eventually(
            lambda: any(b"slow_compute" in (r["payload"] or b"") for r in load_records(gateway.store)), 10, "in flight"
        )
        status, _, body = await call(http, gateway, bob, "echo", {"text": "while the other runs"})
        assert status == 429 and "concurrency" in body["error"]["message"]
        assert (await slow)[0] == 200
    refusals = [r for r in load_records(gateway.store) if r["kind"] == "rejected" and "429" in (r["detail"] or "")]
    assert len(refusals) >= 2


@pytest.fixture
def capped(op: OidcProvider, fixture: ManagedProcess, tmp_path: Path) -> Iterator[RunningGateway]:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    limits = {"sessions_per_principal": 2}
    with running_gateway(tmp_path, {"fx": {"url": fixture.ready_value}}, auth=auth, limits=limits) as gw:
        yield gw


async def test_sessions_per_principal_are_capped(capped: RunningGateway, op: OidcProvider) -> None:
    gateway = capped
    alice = await asyncio.to_thread(op.user_token, "alice", gateway.url("fx"))
    bob = await asyncio.to_thread(op.user_token, "bob", gateway.url("fx"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def initialize_as(token: str) -> tuple[int, dict[str, str], Any]:
            h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {token}"}
            async with http.post(gateway.url("fx"), json=initialize(), headers=h) as r:
                body = json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))
                return r.status, dict(r.headers), body

        opened = []
        for _ in range(2):
            status, headers, _ = await initialize_as(alice)
            assert status == 200
            opened.append(headers["Mcp-Session-Id"])
        status, headers, body = await initialize_as(alice)  # a third one
        assert (
            status == 429 and "sessions per principal (2 open)" in body["error"]["message"] and headers["Retry-After"]
        )
        assert (await initialize_as(bob))[0] == 200  # someone else is not affected
        h = {"Authorization": f"Bearer {alice}", "Mcp-Session-Id": opened[0], "MCP-Protocol-Version": "2025-11-25"}
        async with http.delete(gateway.url("fx"), headers=h) as r:
            assert r.status in (200, 204)
        assert (await initialize_as(alice))[0] == 200  # one ended: room for another
