"""Audit search through the admin API with real principals from the OpenID provider: an auditor finds records by
tool, principal, group and text; others are refused; every admin call — also the refused and unauthenticated ones —
is itself in the trail (committed before its answer), and no token is. Only what a record shows is searchable: a
secret the mask stage replaced is found nowhere, although its sealed original is in the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from portcullis.masking.seal import keygen
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.masking import PLANTED, leaky_server_argv, leaky_server_env
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records

pytestmark = [pytest.mark.e2e, pytest.mark.node]


@pytest.fixture(scope="module")
def leaky() -> Iterator[ManagedProcess]:
    with running_process(leaky_server_argv(), env=leaky_server_env(), ready_timeout=30) as p:
        yield p


@pytest.fixture
def gateway(
    op: OidcProvider, fixture: ManagedProcess, leaky: ManagedProcess, tmp_path: Path
) -> Iterator[RunningGateway]:
    _, public = keygen()
    (tmp_path / "forensic.pub").write_bytes(public)
    with running_gateway(
        tmp_path,
        {"fx": {"url": fixture.ready_value}, "leaky": {"url": leaky.ready_value}},
        auth={"mode": "oidc", "issuers": [{"issuer": op.issuer}]},
        admin={"auditor_groups": ["auditors"]},
        masking={"forensic": {"public_key_file": str(tmp_path / "forensic.pub")}},
    ) as gw:
        yield gw


async def call_tools(
    http: aiohttp.ClientSession, url: str, token: str, calls: list[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One session on ``url``: initialize, then each tools/call; the answers."""
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    async with http.post(url, json=initialize(), headers=h) as r:
        await r.read()
        h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
    out = []
    for i, (tool, args) in enumerate(calls):
        req = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": tool, "arguments": args}}
        async with http.post(url, json=req, headers=h) as r:
            out.append(json.loads(final_message(await r.read(), r.headers.get("Content-Type", ""))))
    return out


def admin_access(gateway: RunningGateway) -> list[dict[str, Any]]:
    return [r for r in load_records(gateway.store) if r["kind"] == "admin_access"]


async def test_auditors_search_others_are_refused_and_every_admin_call_is_recorded(
    gateway: RunningGateway, op: OidcProvider
) -> None:
    alice = await asyncio.to_thread(op.user_token, "alice", gateway.url("fx"))
    carol = await asyncio.to_thread(op.user_token, "carol", gateway.base)  # auditors
    bob = await asyncio.to_thread(op.user_token, "bob", gateway.base)  # eng: not an auditor
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        answers = await call_tools(
            http, gateway.url("fx"), alice, [("echo", {"text": "first needle-7f3a"}), ("echo", {"text": "second"})]
        )
        assert all("result" in a for a in answers)

        async def get(token: str | None, **params: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(f"{gateway.base}/admin/api/audit/records", params=params, headers=headers) as r:
                return r.status, await r.json()

        status, body = await get(carol, tool="echo", principal="alice")
        assert status == 200 and len(body["records"]) == 2 and body["next_cursor"] is None
        assert all(json.loads(r["principal"])["sub"] == "alice" for r in body["records"])
        assert all(r["method"] == "tools/call" and r["direction"] == "c2s" for r in body["records"])
        status, body = await get(carol, tool="echo", principal="ALICE@example.test", group="oncall", responses="1")
        assert status == 200 and [r["response"]["kind"] for r in body["records"]] == ["result", "result"]
        assert "second" in body["records"][0]["response"]["payload"]
        status, body = await get(carol, text="NEEDLE-7F3A", since="10m")
        # the result (what the server sent, masked as recorded); not the request: what clients send is stored as
        # sent, and text over it is an admin's search (no oracle for auditors)
        assert status == 200 and {r["direction"] for r in body["records"]} == {"s2c"}
        assert (await get(carol, tool="echo", group="auditors"))[1]["records"] == []  # alice is not in auditors
        first = await get(carol, limit="1", server="fx")
        assert first[0] == 200 and len(first[1]["records"]) == 1 and first[1]["next_cursor"] is not None
        assert (await get(carol, nonsense="1"))[0] == 400
        assert (await get(carol, **{carol: ""}))[0] == 400  # a token pasted into the URL: refused, not recorded
        assert (await get(carol, since="yesterday-ish"))[0] == 400
        assert (await get(carol, decision="maybe"))[0] == 400
        assert (await get(bob, tool="echo"))[0] == 403
        assert (await get(None, tool="echo"))[0] == 401
        assert (await get("not-a-jwt", tool="echo"))[0] == 401
        async with http.get(
            f"{gateway.base}/admin/api/audit/exports", headers={"Authorization": f"Bearer {carol}"}
        ) as r:
            assert r.status == 200 and (await r.json()) == {"exports": []}
        async with http.get(f"{gateway.base}/admin/api/audit/exports", headers={"Authorization": f"Bearer {bob}"}) as r:
            assert r.status == 403

        # committed before each answer was sent: all there now, no waiting
        access = admin_access(gateway)
        assert len(access) == 14
        details = [r["detail"] for r in access]
        assert details[0].startswith("GET /admin/api/audit/records?principal,tool -> 200 by ")
        assert json.loads(access[0]["principal"])["sub"] == "carol"
        assert details[5].startswith("GET /admin/api/audit/records?+1 unknown -> 400")  # nonsense=1
        assert details[6].startswith("GET /admin/api/audit/records?+1 unknown -> 400")  # the pasted token
        assert "-> 403" in details[9] and json.loads(access[9]["principal"])["sub"] == "bob"
        no_credentials = "invalid_request: no bearer token or console session"
        assert details[10] == f"GET /admin/api/audit/records?tool -> 401 by unauthenticated: {no_credentials}"
        assert details[11].startswith("GET /admin/api/audit/records?tool -> 401 by unauthenticated: invalid_token")
        assert access[10]["principal"] is None
        assert details[12].startswith("GET /admin/api/audit/exports -> 200")

        # and they are searchable like any record: who read the trail?
        status, body = await get(carol, kind="admin_access", principal="bob")
        assert status == 200 and [r["detail"] for r in body["records"]] == [details[13], details[9]]

    everything = json.dumps([{k: str(v) for k, v in r.items()} for r in load_records(gateway.store)])
    for token in (alice, carol, bob):
        assert token not in everything and token.split(".")[2] not in everything
    assert "not-a-jwt" not in everything
    assert "needle-7f3a" not in " ".join(r["detail"] for r in admin_access(gateway))  # query values are not kept


async def test_only_what_a_record_shows_is_searchable(gateway: RunningGateway, op: OidcProvider) -> None:
    alice = await asyncio.to_thread(op.user_token, "alice", gateway.url("leaky"))
    carol = await asyncio.to_thread(op.user_token, "carol", gateway.base)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        [answer] = await call_tools(http, gateway.url("leaky"), alice, [("customers", {})])
        assert PLANTED["email"] not in json.dumps(answer) and "[REDACTED:email]" in json.dumps(answer)

        async def found(**params: str) -> list[dict[str, Any]]:
            h = {"Authorization": f"Bearer {carol}"}
            async with http.get(f"{gateway.base}/admin/api/audit/records", params=params, headers=h) as r:
                assert r.status == 200
                return list((await r.json())["records"])

        assert await found(text=PLANTED["email"]) == []  # the original was masked: it is only in the sealed copy
        assert await found(text=PLANTED["card"]) == []
        hits = await found(text="[redacted:email]", server="leaky")
        assert [(r["direction"], r["kind"]) for r in hits] == [("s2c", "result")]
        [call] = await found(tool="customers", responses="true")
        assert "[REDACTED:email]" in call["response"]["payload"]
        assert "sealed_b64" not in call and "sealed_b64" not in call["response"]

    stored = [r for r in load_records(gateway.store) if r["seq"] == hits[0]["seq"]]
    assert stored[0]["sealed"]  # the sealed original is in the store, and was neither searched nor shown
