"""Audit search through the admin API with real principals from the OpenID provider: an auditor finds records by
tool, principal and text; others are refused; every admin call — also the refused and unauthenticated ones — is
itself in the trail, and no token is."""

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
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.node]


@pytest.fixture
def gateway(op: OidcProvider, fixture: ManagedProcess, tmp_path: Path) -> Iterator[RunningGateway]:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    with running_gateway(
        tmp_path, {"fx": {"url": fixture.ready_value}}, auth=auth, admin={"auditor_groups": ["auditors"]}
    ) as gw:
        yield gw


async def test_auditors_search_others_are_refused_and_every_admin_call_is_recorded(
    gateway: RunningGateway, op: OidcProvider
) -> None:
    alice = await asyncio.to_thread(op.user_token, "alice", gateway.url("fx"))
    carol = await asyncio.to_thread(op.user_token, "carol", gateway.base)  # auditors
    bob = await asyncio.to_thread(op.user_token, "bob", gateway.base)  # eng: not an auditor
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {alice}"}
        async with http.post(gateway.url("fx"), json=initialize(), headers=h) as r:
            await r.read()
            h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
        for text in ("first needle-7f3a", "second"):
            req = {
                "jsonrpc": "2.0",
                "id": text,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": text}},
            }
            async with http.post(gateway.url("fx"), json=req, headers=h) as r:
                assert "result" in json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))

        async def get(token: str | None, **params: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(f"{gateway.base}/admin/audit/records", params=params, headers=headers) as r:
                return r.status, await r.json()

        status, body = await get(carol, tool="echo", principal="alice")
        assert status == 200 and len(body["records"]) == 2 and body["next_cursor"] is None
        assert all(json.loads(r["principal"])["sub"] == "alice" for r in body["records"])
        status, body = await get(carol, text="NEEDLE-7F3A", since="10m")
        assert status == 200 and {r["direction"] for r in body["records"]} == {"c2s", "s2c"}  # request and result
        assert (await get(carol, limit="1", server="fx"))[1]["next_cursor"] is not None
        assert (await get(carol, nonsense="1"))[0] == 400
        assert (await get(carol, since="yesterday-ish"))[0] == 400
        assert (await get(bob, tool="echo"))[0] == 403
        assert (await get(None, tool="echo"))[0] == 401
        async with http.get(f"{gateway.base}/admin/audit/exports", headers={"Authorization": f"Bearer {carol}"}) as r:
            assert r.status == 200 and (await r.json()) == {"exports": []}

    def recorded() -> list[str]:
        return [r["detail"] for r in load_records(gateway.store) if r["kind"] == "admin_access"]

    access = await eventually(lambda: len(recorded()) == 8 and recorded(), 10, "eight admin_access records")
    assert any("-> 401 by unauthenticated" in d for d in access) and any("-> 403" in d for d in access)
    assert any("GET /admin/audit/records?principal,tool -> 200" in d and '"sub":"carol"' in d for d in access)
    everything = json.dumps([{k: str(v) for k, v in r.items()} for r in load_records(gateway.store)])
    for token in (alice, carol, bob):
        assert token not in everything and token.split(".")[2] not in everything
